#!/bin/sh
# Scenario hotplug-disk: a virtio-blk added to a running L2 with
# vm.add-disk and removed with vm.remove-device (the guest ejects it). L2
# reads L1's pattern and writes its own (hotplug-disk.l2.sh); L1 finds L2's
# write in the image, and the image is no longer locked once removed (a
# second vm.add-disk of it works on the same VM). Then a guest that cannot
# eject (acpiphp.disable=1): vm.remove-device answers 409 after 10 s, the
# disk stays listed, and the VM still shuts down cleanly.
. /rig/lib.sh
S=$RIG_TMP/api.sock
out=$RIG_TMP/vfio-vmm.out
img=$RIG_TMP/hot.img
{ printf 'rig-hotplug-disk'; head -c 1048560 /dev/zero; } > "$img"
RUST_LOG=info timeout -s KILL 250 vfio-vmm run --api-socket "$S" --kernel "$RIG_L2_KERNEL" \
    --initramfs "$RIG_L2_INITRD" --cpus 2 --memory 256M \
    --cmdline "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}" > "$out" 2>&1 &
pid=$!
show() { sed 's/^/[vfio-vmm] /' "$out"; }
fail() { show; rig_fail "$*"; }
wait_for() { # wait_for TEXT SECONDS: until vfio-vmm's output (L2's console) has TEXT
    _i=0
    until grep -qF -- "$1" "$out"; do
        ! grep -q "RIG-L2: FAIL" "$out" || fail "L2: $(grep -m1 "RIG-L2: FAIL" "$out")"
        kill -0 $pid 2> /dev/null || fail "vfio-vmm ended while waiting for '$1'"
        [ $_i -lt $(($2 * 10)) ] || fail "no '$1' after $2 s"
        sleep 0.1; _i=$((_i + 1))
    done
}
remote() { # remote COMMAND...: vfio-vmm remote; the answer in $RIG_TMP/answer
    vfio-vmm remote --api-socket "$S" "$@" > "$RIG_TMP/answer" 2>&1
    _rc=$?
    rig_say "remote $*: status $_rc, $(tr -d '\n' < "$RIG_TMP/answer" | tr -s ' ' | cut -c1-200)"
    return $_rc
}
i=0
until remote ping > /dev/null 2>&1; do
    [ $i -lt 100 ] || fail "vfio-vmm never answered vmm.ping"
    sleep 0.1; i=$((i + 1))
done
wait_for "RIG-L2: hotplug-disk guest ready" 120
rig_cs; t0=$RIG_CS
remote add-disk "path=$img,id=disk0" || fail "vm.add-disk failed"
rig_cs
rig_out "hotplug-disk: vm.add-disk answered in $(rig_secs $((RIG_CS - t0))) s"
grep -q '"bdf": *"0000:00:..\.0"' "$RIG_TMP/answer" || fail "the answer has no bdf"
wait_for "RIG-L2: vda written and read back" 90
remote remove-device disk0 || fail "vm.remove-device failed"
wait_for "RIG-L2: vda removed" 30
dd if="$img" bs=512 skip=8 count=1 2> /dev/null | grep -q "written-by-l2" || fail "L2's write is not in the image"
remote info > /dev/null && grep -q '"disk0"' "$RIG_TMP/answer" && fail "vm.info still lists disk0"
remote add-disk "path=$img,id=disk1" || fail "the image stayed locked after its removal"
remote shutdown-vmm || fail "vmm.shutdown failed"
wait $pid
rc=$?
show
[ $rc = 0 ] || rig_fail "vfio-vmm exited $rc"
! grep -q "panicked" "$out" || rig_fail "vfio-vmm panicked"

# A guest without ACPI PCI hotplug never ejects.
rm -f "$out"
RUST_LOG=info timeout -s KILL 120 vfio-vmm run --api-socket "$S" --kernel "$RIG_L2_KERNEL" \
    --initramfs "$RIG_L2_INITRD" --cpus 2 --memory 256M \
    --cmdline "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} acpiphp.disable=1 rig.noeject=1" > "$out" 2>&1 &
pid=$!
i=0
until remote ping > /dev/null 2>&1; do
    [ $i -lt 100 ] || fail "the second vfio-vmm never answered vmm.ping"
    sleep 0.1; i=$((i + 1))
done
wait_for "RIG-L2: hotplug-disk guest without acpiphp ready" 120
remote add-disk "path=$img,id=disk0" || fail "vm.add-disk (no acpiphp) failed"
rig_cs; t0=$RIG_CS
remote remove-device disk0 && fail "vm.remove-device succeeded on a guest that cannot eject"
rig_cs
grep -q "error 409: the guest did not eject" "$RIG_TMP/answer" || fail "no 409 for a guest that does not eject"
rig_say "no eject: vm.remove-device answered 409 after $(rig_secs $((RIG_CS - t0))) s"
remote info > /dev/null || fail "vm.info failed"
grep -q '"disk0"' "$RIG_TMP/answer" || fail "vm.info lost disk0 although it was not ejected"
remote shutdown-vmm || fail "vmm.shutdown (no acpiphp) failed"
wait $pid
rc=$?
[ $rc = 0 ] || { show; rig_fail "the second vfio-vmm exited $rc"; }
rig_say "hotplug-disk: a disk added to a running L2, written, removed, its image free again; a guest that cannot eject gets 409 and keeps the disk"
