#!/bin/sh
# Scenario disk-durability: data that L2 flushed must survive a power cut of
# L1. vfio-vmm's disk is L1's own disk (device set l1disk), opened without
# O_DIRECT, so its writes sit in L1's page cache until a FLUSH from L2 makes
# vfio-vmm fdatasync them down to L1's QEMU. L2 writes 4 MiB of random data
# with fsync (FLUSH), then 4 MiB more with O_DIRECT but no fsync (the control),
# and waits. L1 then prints RIG-KILL-L1, and boot.sh SIGKILLs L1's QEMU while
# vfio-vmm still runs: L1's page cache dies with it. The host step
# (disk-durability.host.sh) reads both regions from the file behind L1's disk.
# L1's periodic writeback is off for the run, and the script holds the disk
# open, because the last close of a block device writes its dirty pages back.
. /rig/lib.sh
. /rig/scenarios/disk-common.sh
dev=$(l1_disk) || rig_fail "L1 has no disk with serial rig-l1disk (device set l1disk, scenarios.table; virtio_blk in L1?)"
# shellcheck disable=SC2217 # sleep does not read it, only holds it open
sleep 100000 < "$dev" & # holds the disk open (see above); dies with the session
vm=/proc/sys/vm
read -r wb < $vm/dirty_writeback_centisecs
read -r exp < $vm/dirty_expire_centisecs
trap 'echo "$wb" > $vm/dirty_writeback_centisecs; echo "$exp" > $vm/dirty_expire_centisecs' EXIT
echo 0 > $vm/dirty_writeback_centisecs
echo 360000 > $vm/dirty_expire_centisecs
rig_say "L1's disk: $dev; L1 writeback off (dirty_writeback_centisecs 0, dirty_expire_centisecs 360000)"
rig_on_sample() { # L2 has written both regions and waits; vfio-vmm is pid $1
    flags=$(fd_flags "$1" "$dev") || rig_fail "vfio-vmm has no descriptor of $dev"
    for f in $flags; do
        ! o_direct "$f" || rig_fail "vfio-vmm has $dev open with O_DIRECT (flags $flags): only buffered I/O tests FLUSH"
    done
    rig_say "vfio-vmm's descriptors of $dev: flags $flags (no O_DIRECT)"
    dirty=$(awk '/^Dirty:/ {print $2}' /proc/meminfo)
    for what in flushed unflushed; do
        line=$(grep "^RIG-L2: $what " "$RIG_TMP/vmm.out") || rig_fail "L2 did not report its $what write"
        rig_out "${line#RIG-L2: }"
    done
    rig_say "L1 has $dirty kB dirty; asking the host to kill L1 now"
    echo "RIG-KILL-L1: $RIG_SCENARIO"
    sleep 600
    rig_fail "L1 was not killed within 600 s of RIG-KILL-L1"
}
rig_vmm vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 1 --memory 256M --disk "path=$dev" \
    --cmdline "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}" || rig_fail "$RIG_WHY"
rig_fail "vfio-vmm ended before L2 reported its writes"
