#!/bin/sh
# Scenario disk-direct: vfio-vmm's virtio-blk with direct=on on L1's own disk
# (device set l1disk; L1's tmpfs refuses O_DIRECT). While L2 runs, vfio-vmm's
# descriptor of the disk must carry O_DIRECT (/proc/PID/fdinfo). L2 writes
# 4 MiB of random data at 1 MiB, syncs, drops its caches and reads them back;
# L1 then reads the same bytes from its disk with O_DIRECT and compares md5s.
. /rig/lib.sh
. /rig/scenarios/disk-common.sh
dev=$(l1_disk) || rig_fail "L1 has no disk with serial rig-l1disk (device set l1disk, scenarios.table; virtio_blk in L1?)"
rig_say "L1's disk: $dev, $(cat "/sys/block/${dev#/dev/}/size") sectors"
rig_on_sample() { # L2 is about to write; vfio-vmm (pid $1) has the disk open
    fd_flags "$1" "$dev" > "$RIG_TMP/flags" || echo none > "$RIG_TMP/flags"
}
rig_vmm vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 1 --memory 256M --disk "path=$dev,direct=on" \
    --cmdline "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}" || rig_fail "$RIG_WHY"
read -r flags < "$RIG_TMP/flags"
[ "$flags" != none ] || rig_fail "vfio-vmm had no descriptor of $dev while L2 ran"
direct=0
for f in $flags; do ! o_direct "$f" || direct=$((direct + 1)); done
[ $direct = 1 ] || rig_fail "direct=on, but vfio-vmm has $dev open with flags $flags: want one descriptor (for I/O) with O_DIRECT (040000)"
rig_say "vfio-vmm's descriptors of $dev: flags $flags (lock holder, and O_DIRECT 040000 for I/O)"
line=$(grep "^RIG-L2: wrote " "$RIG_TMP/vmm.out") || rig_fail "L2 did not report its write"
read -r _ _ len _ off _ sum _ << EOF
$line
EOF
sum=${sum%,}
l1=$(dd if="$dev" bs=64k skip=$((off / 65536)) count=$((len / 65536)) iflag=direct 2> /dev/null | md5sum)
[ "${l1%% *}" = "$sum" ] || rig_fail "L1 reads md5 ${l1%% *} at $off on $dev, L2 wrote $sum"
rig_out "direct=on: L2 wrote and read back $len bytes at $off (md5 $sum), L1's disk holds them; vfio-vmm's flags $flags"
