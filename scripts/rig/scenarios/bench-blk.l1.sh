#!/bin/sh
# Scenario bench-blk (L1 side): the storage benchmark (scripts/bench/blk-run.sh,
# here /rig/scenarios/bench-blk.run.sh) end to end at its shortest setting.
# Five configurations, one L2 boot each, 1 vCPU and 256M, fio in L2
# (bench-blk.l2.sh) on the disk under test. L1's QEMU NVMe (device set nvme,
# on a raw file on the host) is first, under L1's nvme driver, the O_DIRECT
# backing of the emulated disks: vfio-vmm's virtio-blk, QEMU's virtio-blk and
# QEMU's NVMe; then it is bound to vfio-pci and assigned by vfio-vmm
# (nvme-passthrough) and by QEMU (qemu-nvme-passthrough). Every path ends in
# the same host file. THP is off in L1: both VMMs back L2 RAM with 4 KiB pages.
# Results leave L1 as "RIG-BENCH: FILE LINE" lines; bench-blk.host.sh turns
# them into target/bench/blk.{json,md,svg}. Shortest setting (2 s per fio
# job, one repetition) unless L1's command line has bench.long=1
# (scripts/bench/blk.sh rig --long): 30 s per job, 3 repetitions; and
# bench.time=S, bench.reps=N there set those two (blk.sh rig --time, --reps).
# Never fails on speed, only when a configuration produced no numbers;
# nvme-passthrough may fail with its reason recorded (the nvme scenario
# checks that passthrough itself).
. /rig/lib.sh
command -v fio > /dev/null || rig_fail "no fio in L1 (l1/fio.cpio)"
command -v qemu-system-x86_64 > /dev/null || rig_fail "no qemu-system-x86_64 in L1"
nvme=$(rig_find_pci 0x1b36 0x0010)
[ -n "$nvme" ] || rig_fail "no QEMU NVMe controller in L1: see device set nvme in scenarios.table"
thp=/sys/kernel/mm/transparent_hugepage/enabled
was=$(sed 's/.*\[\(.*\)\].*/\1/' "$thp")
trap 'echo "$was" > "$thp"' EXIT # the group's next scenarios get L1's THP back
echo never > "$thp" || rig_fail "cannot turn THP off in L1"
modprobe nvme || rig_fail "cannot load nvme in L1"
i=0
while [ ! -b /dev/nvme0n1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || rig_fail "L1's nvme driver created no /dev/nvme0n1"

out=$RIG_TMP/bench
secs=2 reps=1 size=128 cpu=64
read -r l1_cmdline < /proc/cmdline
for a in $l1_cmdline; do
    case $a in bench.long=1) secs=30 reps=3 size=512 cpu=256 ;; esac
done
for a in $l1_cmdline; do
    case $a in
        bench.time=*) secs=${a#*=} ;;
        bench.reps=*) reps=${a#*=} ;;
    esac
done
case $secs$reps in *[!0-9]* | "") rig_fail "bench.time=$secs bench.reps=$reps: want whole numbers" ;; esac
{ [ "$secs" -gt 0 ] && [ "$reps" -gt 0 ]; } || rig_fail "bench.time and bench.reps must be positive"
bench() { # bench CONFIGS [VAR=VALUE...]: blk-run.sh for CONFIGS
    _c=$1
    shift
    env BENCH_OUT="$out" BENCH_KERNEL="$RIG_L2_KERNEL" BENCH_INITRD="$RIG_L2_INITRD" \
        BENCH_GUEST=/rig/scenarios/bench-blk.l2.sh BENCH_CONFIGS="$_c" BENCH_CPUS=1 BENCH_MEM=256 \
        BENCH_TIME="$secs" BENCH_REPS="$reps" BENCH_SIZE=$size BENCH_QD=8 BENCH_CPU_MIB=$cpu BENCH_KARGS="$RIG_L2_KARGS" \
        BENCH_HOST="rig: L1 under QEMU TCG (2 vCPUs), guests under nested KVM in L1, disks on L0's QEMU NVMe (a host file)" \
        "$@" sh /rig/scenarios/bench-blk.run.sh
}
bench "virtio-blk qemu-virtio-blk qemu-nvme" BENCH_DISK=/dev/nvme0n1
rig_bind_vfio "$nvme" > /dev/null || rig_fail "cannot bind $nvme to vfio-pci"
bench "nvme-passthrough qemu-nvme-passthrough" BENCH_DEVICE="$nvme"

for f in "$out"/*.txt; do
    while IFS= read -r line; do echo "RIG-BENCH: ${f##*/} $line"; done < "$f"
done
why=""
for c in nvme-passthrough virtio-blk qemu-virtio-blk qemu-nvme qemu-nvme-passthrough; do
    if [ -f "$out/$c.txt" ]; then
        r="$c: $(sed -n 's/^reason=//p' "$out/$c.txt")"
        if [ $c = nvme-passthrough ]; then rig_out "bench-blk: no numbers for $r"; else why="$why; $r"; fi
        continue
    fi
    n=0
    for f in "$out/$c"-[0-9]*.txt; do
        awk -F= '$1 ~ /^(rr_iops|sr_kib_s|sw_kib_s)$/ && $2 > 0 {n++} END {exit n != 3}' "$f" 2> /dev/null && n=$((n + 1))
    done
    [ $n = "$reps" ] || why="$why; $c: $n of $reps repetitions with positive IOPS and bandwidths"
    [ -f "$out/$c-cpu.txt" ] || why="$why; $c: no CPU loop time"
done
[ -f "$out/native-cpu.txt" ] || why="$why; native: no CPU loop time"
[ -z "$why" ] || rig_fail "bench-blk:${why#;}"
rig_say "bench-blk: every configuration produced numbers or a reason"
