#!/bin/sh
# Scenario nvme (L2 side): Linux's nvme driver on the passed-through QEMU
# NVMe controller. At least rig.vectors MSI-X vectors must be in use (the L1
# side chose the vCPUs and nvme.write_queues) and must have fired. A random
# pattern goes to the last 16 MiB of /dev/nvme0n1 with O_DIRECT, a slice from
# each CPU (each CPU has its own write queue and read queue, each with its
# own vector), is read back the same way and compared; its place and md5 go
# to L1 (and the host step) in a "RIG-L2: nvme pattern" line.
. /rig/lib.sh
want=$(arg rig.vectors)
modprobe nvme || fail "cannot load nvme"
wait_until 300 test -b /dev/nvme0n1 || fail "nvme created no /dev/nvme0n1"
# shellcheck disable=SC2154 # waited: set by wait_until (lib.sh)
echo "RIG-L2: /dev/nvme0n1 after $((waited / 10)).$((waited % 10))s, $(cat /sys/block/nvme0n1/size) sectors"
dmesg | grep -i nvme | sed 's/^/RIG-L2: dmesg: /'
mib=16
sectors=$(cat /sys/block/nvme0n1/size)
seek=$((sectors / 2048 - mib))
[ "$seek" -ge 0 ] || fail "/dev/nvme0n1 is smaller than $mib MiB"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=$mib 2> /dev/null || fail "cannot make the pattern"
sum=$(md5sum < /tmp/pattern)
sum=${sum%% *}
cpus=$(grep -c ^processor /proc/cpuinfo)
slice=$((mib / cpus))
[ $((slice * cpus)) = $mib ] || fail "$cpus CPUs do not divide $mib MiB"
cpu=0
while [ $cpu -lt "$cpus" ]; do
    taskset -c $cpu dd if=/tmp/pattern of=/dev/nvme0n1 bs=1M skip=$((cpu * slice)) seek=$((seek + cpu * slice)) \
        count=$slice oflag=direct conv=notrunc,fsync 2> /tmp/dd.txt || fail "O_DIRECT write on CPU $cpu failed: $(cat /tmp/dd.txt)"
    cpu=$((cpu + 1))
done
read_back() {
    cpu=0
    while [ $cpu -lt "$cpus" ]; do
        taskset -c $cpu dd if=/dev/nvme0n1 bs=1M skip=$((seek + cpu * slice)) count=$slice iflag=direct 2>> /tmp/dd.txt ||
            echo "RIG-L2: O_DIRECT read on CPU $cpu failed: $(cat /tmp/dd.txt)" >&2
        cpu=$((cpu + 1))
    done
}
: > /tmp/dd.txt
back=$(read_back | md5sum)
back=${back%% *}
echo "RIG-L2: wrote $mib MiB at MiB $seek with O_DIRECT, $slice MiB from each of $cpus CPUs, md5 $sum; read back md5 $back"
[ "$back" = "$sum" ] || fail "the data read back differs from the data written"
grep nvme /proc/interrupts | sed 's/^/RIG-L2: irq /'
lines=$(grep -E 'nvme0q[0-9]+' /proc/interrupts)
n=$(echo "$lines" | grep -c .)
msix=$(echo "$lines" | grep -c MSI)
fired=$(echo "$lines" | awk '{s = 0; for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i; if (s > 0) f++} END {print f + 0}')
echo "RIG-L2: nvme vectors: $n in use, $msix on MSI-X, $fired fired"
[ "$n" -ge "$want" ] || fail "nvme uses $n vectors, fewer than $want"
[ "$msix" = "$n" ] || fail "not every nvme vector is MSI-X"
[ "$fired" -ge "$want" ] || fail "only $fired nvme vectors fired, fewer than $want"
echo "RIG-L2: nvme pattern offset_mib=$seek size_mib=$mib md5=$sum"
