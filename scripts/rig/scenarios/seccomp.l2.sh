#!/bin/sh
# Scenario seccomp (L2 side): use every device vfio-vmm gave us, so each of
# its threads does its work under its filter: the edu (edu-probe: MMIO, INTx,
# DMA), the disk (a write read back past the page cache), the rng, the NIC
# (pings to L1), then serve vsock port 1024 and wait for vmm.shutdown.
. /rig/lib.sh
edu=$(find_pci 0x1234 0x11e8)
[ -n "$edu" ] || fail "no edu device on L2's PCI bus"
for m in uio_pci_generic virtio_pci virtio_blk virtio_rng virtio_net vmw_vsock_virtio_transport; do
    modprobe $m || fail "cannot load $m"
done
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id
wait_until 50 test -d "/sys/bus/pci/devices/$edu/uio" || fail "uio_pci_generic did not take $edu"
edu-probe "$edu" "/dev/$(ls "/sys/bus/pci/devices/$edu/uio")" 20 > /tmp/edu.txt 2>&1 || fail "edu-probe: $(tail -n1 /tmp/edu.txt)"
echo "RIG-L2: edu-probe: $(tail -n1 /tmp/edu.txt)"
wait_until 50 test -e /dev/vda || fail "no /dev/vda"
token=seccomp-$(cut -c1-8 /proc/sys/kernel/random/uuid)
echo "$token" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2> /dev/null || fail "cannot write /dev/vda"
echo 3 > /proc/sys/vm/drop_caches
[ "$(dd if=/dev/vda bs=512 count=1 2> /dev/null | head -n1)" = "$token" ] || fail "/dev/vda did not read back what was written"
echo "RIG-L2: disk read back $token"
dd if=/dev/hwrng of=/tmp/rng bs=64 count=4 2> /dev/null || fail "cannot read /dev/hwrng"
echo "RIG-L2: rng gave $(wc -c < /tmp/rng) bytes"
eth0_up virtio_net
ping -c 20 -A -q -W 5 "$(arg rig.peer)" > /tmp/ping.txt 2>&1 || fail "L2 -> L1 ping: $(tail -n2 /tmp/ping.txt)"
socat VSOCK-LISTEN:1024 SYSTEM:"echo seccomp-ok" &
sleep 0.5
echo "RIG-L2: seccomp guest ready"
sleep 600
