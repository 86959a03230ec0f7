#!/bin/sh
# Scenario hotplug-disk: a virtio-blk added to a running L2 with
# vm.add-disk and removed with vm.remove-device (the guest ejects it). L2
# reads L1's pattern and writes its own (hotplug-disk.l2.sh); L1 finds L2's
# write in the image, and the image is no longer locked once removed (a
# second vm.add-disk of it works on the same VM). Then a guest that cannot
# eject (acpiphp.disable=1): vm.remove-device answers 409 after 10 s, the
# disk stays listed, and the VM still shuts down cleanly.
. /rig/lib.sh
# shellcheck source=scripts/rig/scenarios/api-common.sh
. /rig/scenarios/api-common.sh
S=$RIG_TMP/api.sock
img=$RIG_TMP/hot.img
{ printf 'rig-hotplug-disk'; head -c 1048560 /dev/zero; } > "$img"
api_run 250
wait_for "RIG-L2: hotplug-disk guest ready" 120
api_add hotplug-disk add-disk "path=$img,id=disk0"
wait_for "RIG-L2: vda written and read back" 90
remote remove-device disk0 || fail "vm.remove-device failed"
wait_for "RIG-L2: vda removed" 30
dd if="$img" bs=512 skip=8 count=1 2> /dev/null | grep -q "written-by-l2" || fail "L2's write is not in the image"
remote info > /dev/null && grep -q '"disk0"' "$RIG_TMP/answer" && fail "vm.info still lists disk0"
remote add-disk "path=$img,id=disk1" || fail "the image stayed locked after its removal"
api_end

# A guest without ACPI PCI hotplug never ejects.
api_run 120 "acpiphp.disable=1 rig.noeject=1"
wait_for "RIG-L2: hotplug-disk guest without acpiphp ready" 120
remote add-disk "path=$img,id=disk0" || fail "vm.add-disk (no acpiphp) failed"
rig_cs; t0=$RIG_CS
remote remove-device disk0 && fail "vm.remove-device succeeded on a guest that cannot eject"
rig_cs
grep -q "error 409: the guest did not eject" "$RIG_TMP/answer" || fail "no 409 for a guest that does not eject"
rig_say "no eject: vm.remove-device answered 409 after $(rig_secs $((RIG_CS - t0))) s"
remote info > /dev/null || fail "vm.info failed"
grep -q '"disk0"' "$RIG_TMP/answer" || fail "vm.info lost disk0 although it was not ejected"
api_end
rig_say "hotplug-disk: a disk added to a running L2, written, removed, its image free again; a guest that cannot eject gets 409 and keeps the disk"
