#!/bin/sh
# Scenario hotplug-disk (L2 side): boots with no disk; /dev/vda appears
# (vm.add-device's sibling vm.add-disk), holds L1's pattern, takes a write
# that L2 reads back; it goes (vm.remove-device: the guest ejects). Then
# waits for L1's vmm.shutdown. With rig.noeject=1 (a kernel booted with
# acpiphp.disable=1: no ACPI PCI hotplug) it only says it is ready.
. /rig/lib.sh
for m in virtio_pci virtio_blk; do modprobe $m || fail "cannot load $m"; done
if [ "$(arg rig.noeject)" = 1 ]; then
    echo "RIG-L2: hotplug-disk guest without acpiphp ready"
    while :; do sleep 1; done
fi
[ ! -e /sys/block/vda ] || fail "/dev/vda exists before vm.add-disk"
echo "RIG-L2: hotplug-disk guest ready"
wait_until 900 test -b /dev/vda || fail "no /dev/vda after vm.add-disk"
echo "RIG-L2: vda is $(cat /sys/block/vda/size) sectors"
head -c 16 /dev/vda | grep -q "rig-hotplug-disk" || fail "vda does not hold L1's pattern"
echo "written-by-l2" | dd of=/dev/vda bs=512 seek=8 conv=fsync 2> /dev/null || fail "cannot write vda"
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda bs=512 skip=8 count=1 2> /dev/null | grep -q "written-by-l2" || fail "vda does not read back L2's write"
echo "RIG-L2: vda written and read back"
wait_until 900 test ! -e /sys/block/vda || fail "vda still there after vm.remove-device"
echo "RIG-L2: vda removed"
while :; do sleep 1; done
