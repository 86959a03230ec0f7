#!/bin/sh
# Scenario api (L2 side): the edu passed through (edu-probe as in edu.l2.sh),
# the read-only disk and the rng are there; then serve vsock port 1024
# ("api-ok TOKEN edu-ok") and wait for L1's vmm.shutdown.
. /rig/lib.sh
edu=""
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1234:0x11e8 ] && edu=${d##*/}
done
[ -n "$edu" ] || fail "no edu device on L2's PCI bus"
for m in uio_pci_generic virtio_pci virtio_blk virtio_rng virtio_net vmw_vsock_virtio_transport; do
    modprobe $m || fail "cannot load $m"
done
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id
wait_until 50 test -d "/sys/bus/pci/devices/$edu/uio" || fail "uio_pci_generic did not take $edu"
edu-probe "$edu" "/dev/$(ls "/sys/bus/pci/devices/$edu/uio")" 20 > /tmp/edu.txt 2>&1 || fail "edu-probe: $(tail -n1 /tmp/edu.txt)"
echo "RIG-L2: edu-probe: $(tail -n1 /tmp/edu.txt)"
wait_until 50 test -e /sys/block/vda/ro || fail "no /dev/vda"
[ "$(cat /sys/block/vda/ro)" = 1 ] || fail "/dev/vda is not read-only"
grep -q virtio_rng /sys/class/misc/hw_random/rng_current || fail "no virtio_rng"
wait_until 50 test -e /sys/class/net/eth0 || fail "no eth0 (vm.add-net)"
socat VSOCK-LISTEN:1024 SYSTEM:"echo api-ok $(arg rig.token) edu-ok" &
sleep 0.5
echo "RIG-L2: api guest ready"
sleep 600
