#!/bin/sh
# Scenario disk: L2 boots with root=/dev/vda from an ext4 image on vfio-vmm's
# virtio-blk (build.sh: busybox, scripts/rig/disk-init as /sbin/init; L2's
# initramfs mounts it and switch_roots). Boot 1 writes a token and syncs; while
# it runs, a second vfio-vmm on the image must be refused as in use. Boot 2
# reads the token back. Boot 3, readonly=on: writes fail, the image is unchanged.
. /rig/lib.sh
img=$RIG_TMP/disk.img
cp /rig/disk.img "$img" || rig_fail "no /rig/disk.img in L1 (scenarios.table: NEEDS disk)"
token=$(rig_token)
disk_boot() { # disk_boot MODE DISK-OPTS ro|rw
    rig_vmm "vmm-$1" vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
        --cpus 1 --memory 256M --disk "path=$img$2" \
        --cmdline "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} root=/dev/vda $3 rig.disk=$1 rig.token=$token" ||
        rig_fail "$1 boot: $RIG_WHY"
    rig_saw "vmm-$1" "RIG-L2: init from the disk" || rig_fail "$1 boot: L2 did not run the disk's /sbin/init"
}
rig_on_sample() { # boot 1 runs (pid $1): a second VMM on the image must be refused
    timeout -s KILL 30 vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" --memory 256M \
        --disk "path=$img" --cmdline console=ttyS0 > "$RIG_TMP/second.out" 2>&1
    echo "$? $(kill -0 "$1" && echo alive)" > "$RIG_TMP/second.rc"
}
disk_boot write "" rw
read -r rc alive < "$RIG_TMP/second.rc"
sed 's/^/RIG-L1: second vfio-vmm: /' "$RIG_TMP/second.out"
{ [ "$rc" != 0 ] && [ "$rc" != 137 ] && grep -q "in use" "$RIG_TMP/second.out"; } ||
    rig_fail "a second vfio-vmm on the image was not refused as in use (status $rc)"
[ "$alive" = alive ] || rig_fail "the first vfio-vmm had ended before the second one was refused"
disk_boot read "" rw
sum=$(md5sum < "$img")
disk_boot ro ,readonly=on ro
[ "$(md5sum < "$img")" = "$sum" ] || rig_fail "the image changed during the readonly=on boot"
rig_say "token $token written, read back; readonly=on boot left the image unchanged"
