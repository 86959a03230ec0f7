#!/bin/sh
# Scenario virtio-net (L2 side): bring up the virtio-net NIC, ping L1 1000
# times while L1 pings us, and show that its MSI-X vectors counted.
. /rig/lib.sh
{ modprobe virtio_pci && modprobe virtio_net; } || fail "cannot load virtio_pci/virtio_net"
eth0_up virtio_net
ping_both_ways
grep virtio /proc/interrupts | sed 's/^/RIG-L2: irq /'
in=$(irq_count virtio0-input)
grep virtio0-input /proc/interrupts | grep -q MSI || fail "virtio0-input is not an MSI-X vector"
[ "$in" -gt 0 ] || fail "the input queue's vector never fired"
echo "RIG-L2: virtio-net checks passed (input vector fired $in times)"
