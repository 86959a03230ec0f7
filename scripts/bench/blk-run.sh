#!/bin/sh
# Host side of the storage benchmark (POSIX sh; busybox in the rig's L1, or a
# real host through scripts/bench/blk.sh). For each configuration it boots
# the benchmark guest once (blk-guest.sh inside: a CPU loop, then fio) and
# writes key=value files into $BENCH_OUT:
#   CONFIG-REP.txt  record=blk: config, vmm, rep, rr_iops, rr_p50_us, rr_p99_us,
#                   sr_kib_s, sw_kib_s (fio's figures, see blk-guest.sh)
#   CONFIG-cpu.txt  record=cpu: config, vmm, mib, seconds (the guest's CPU loop)
#   native-cpu.txt  record=cpu, config=native: the same loop run here, once
#   CONFIG.txt      record=skip or record=fail: config, reason (a failed guest's
#                   finished repetitions are kept)
#   setup.txt       record=setup, bench=blk: what was measured
# `vfio-vmm bench report --input $BENCH_OUT` turns them into blk.{json,md,svg}.
#
# Configurations (BENCH_CONFIGS, default all five):
#   nvme-passthrough       BENCH_DEVICE assigned by vfio-vmm (run --device)
#   virtio-blk             vfio-vmm's virtio-blk on BENCH_DISK (--disk path=..,direct=on)
#   qemu-virtio-blk        QEMU's virtio-blk-pci on BENCH_DISK (cache=none)
#   qemu-nvme              QEMU's emulated NVMe on BENCH_DISK (cache=none)
#   qemu-nvme-passthrough  BENCH_DEVICE assigned by QEMU's vfio-pci
# Both VMMs open BENCH_DISK with O_DIRECT: the host's page cache serves
# neither. Environment (defaults in brackets):
#   BENCH_OUT (required)  BENCH_KERNEL, BENCH_INITRD (required: a guest whose
#   initramfs has fio and runs blk-guest.sh)  BENCH_GUEST [blk-guest.sh beside
#   this file: the CPU loop for the native baseline]
#   BENCH_DEVICE  BDF of an NVMe controller bound to vfio-pci [none: passthrough skipped]
#   BENCH_DISK    file or block device behind the emulated disks [none: those skipped]
#   BENCH_CPUS [1]  BENCH_MEM (MiB) [256]  BENCH_TIME (s per fio job) [2]
#   BENCH_REPS [1]  BENCH_SIZE (MiB of the disk fio uses) [256]  BENCH_QD [8]
#   BENCH_CPU_MIB [32]  BENCH_KARGS [quiet]  BENCH_HOST [uname -n]
#   BENCH_RIG_LIB  the rig's lib.sh (rig_vmm) [/rig/lib.sh]
# The whole disk region fio uses is overwritten.
# shellcheck source=/dev/null
. "${BENCH_RIG_LIB:-/rig/lib.sh}"
: "${BENCH_OUT:?BENCH_OUT is required}" "${BENCH_KERNEL:?}" "${BENCH_INITRD:?}"
configs=${BENCH_CONFIGS:-nvme-passthrough virtio-blk qemu-virtio-blk qemu-nvme qemu-nvme-passthrough}
cpus=${BENCH_CPUS:-1} mem=${BENCH_MEM:-256} secs=${BENCH_TIME:-2} reps=${BENCH_REPS:-1}
size=${BENCH_SIZE:-256} qd=${BENCH_QD:-8} cpu_mib=${BENCH_CPU_MIB:-32} kargs=${BENCH_KARGS-quiet}
guest=${BENCH_GUEST:-$(dirname "$0")/blk-guest.sh}
# Each guest boot runs the CPU loop and reps x 3 fio jobs; allow for a slow boot on top.
RIG_L2_TIMEOUT=$((${RIG_L2_TIMEOUT:-150} + cpu_mib / 4 + reps * 3 * (secs + 10)))
mkdir -p "$BENCH_OUT"

{
    echo "record=setup"
    echo "bench=blk"
    echo "host=${BENCH_HOST:-$(uname -n)}"
    echo "host_kernel=$(uname -r)"
    echo "guest_cpus=$cpus"
    echo "guest_memory_mib=$mem"
    echo "fio_seconds=$secs"
    echo "reps=$reps"
    echo "region_mib=$size"
    echo "randread_qd=$qd"
    echo "cpu_mib=$cpu_mib"
    echo "thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2> /dev/null)"
    echo "fio=$(fio --version 2> /dev/null)"
} > "$BENCH_OUT/setup.txt"

# bench_record CONFIG KIND REASON: a skip or fail record.
bench_record() {
    printf 'record=%s\nconfig=%s\nreason=%s\n' "$2" "$1" "$3" > "$BENCH_OUT/$1.txt"
    rig_say "bench $1: $2: $3"
}

# The CPU loop natively, once per $BENCH_OUT: the baseline of the guests' loops.
if [ ! -f "$BENCH_OUT/native-cpu.txt" ]; then
    line=$(sh "$guest" cpu "$cpu_mib") || line=""
    if [ -n "$line" ]; then
        { echo "record=cpu"; echo "config=native"; echo "vmm=none"; echo "${line#bench-cpu }" | tr ' ' '\n'; } > "$BENCH_OUT/native-cpu.txt"
        rig_say "bench native: $line"
    fi
fi

# bench_check CONFIG: is what CONFIG needs here? Records a skip otherwise.
bench_check() {
    case $1 in
        nvme-passthrough | qemu-nvme-passthrough)
            [ -n "${BENCH_DEVICE:-}" ] || { bench_record "$1" skip "no NVMe controller to assign (BENCH_DEVICE)"; return 1; }
            case $(readlink "/sys/bus/pci/devices/$BENCH_DEVICE/driver") in
                */vfio-pci) ;;
                *) bench_record "$1" skip "$BENCH_DEVICE is not bound to vfio-pci"; return 1 ;;
            esac ;;
        virtio-blk | qemu-virtio-blk | qemu-nvme)
            [ -n "${BENCH_DISK:-}" ] || { bench_record "$1" skip "no disk to emulate (BENCH_DISK)"; return 1; }
            [ -e "$BENCH_DISK" ] || { bench_record "$1" skip "$BENCH_DISK does not exist"; return 1; } ;;
        *) bench_record "$1" fail "unknown configuration"; return 1 ;;
    esac
    case $1 in
        qemu-*) command -v qemu-system-x86_64 > /dev/null ||
            { bench_record "$1" skip "qemu-system-x86_64 is not installed"; return 1; } ;;
    esac
}

# bench_config CONFIG: boot the guest once for CONFIG and record its results.
bench_config() {
    c=$1
    bench_check "$c" || return 0
    kind=virtio
    case $c in *nvme*) kind=nvme ;; esac
    cmdline="console=ttyS0 panic=-1${kargs:+ $kargs} bench.dev=$kind bench.time=$secs bench.reps=$reps"
    cmdline="$cmdline bench.size=$size bench.qd=$qd bench.cpu=$cpu_mib"
    qemu="qemu-system-x86_64 -machine q35,accel=kvm -cpu host -smp $cpus -m ${mem}M -nodefaults
        -no-user-config -nographic -serial stdio -monitor none -no-reboot"
    drive="-drive file=${BENCH_DISK:-},if=none,id=d0,format=raw,cache=none"
    # shellcheck disable=SC2086 # $qemu and $drive are split into words on purpose
    case $c in
        nvme-passthrough) vmm=vfio-vmm; set -- vfio-vmm run --device "$BENCH_DEVICE" ;;
        virtio-blk) vmm=vfio-vmm; set -- vfio-vmm run --disk "path=$BENCH_DISK,direct=on" ;;
        qemu-virtio-blk) vmm=qemu; set -- $qemu $drive -device virtio-blk-pci,drive=d0,romfile= ;;
        qemu-nvme) vmm=qemu; set -- $qemu $drive -device nvme,drive=d0,serial=bench ;;
        qemu-nvme-passthrough) vmm=qemu; set -- $qemu -device vfio-pci,host="$BENCH_DEVICE" ;;
    esac
    if [ "$vmm" = vfio-vmm ]; then
        set -- "$@" --kernel "$BENCH_KERNEL" --initramfs "$BENCH_INITRD" --cpus "$cpus" --memory "${mem}M" --cmdline "$cmdline"
    else
        set -- "$@" -kernel "$BENCH_KERNEL" -initrd "$BENCH_INITRD" -append "$cmdline"
    fi
    ok=1
    rig_vmm "$c" "$@" || ok=0
    touch "$RIG_TMP/$c.out"
    # The repetitions a failed guest finished before it failed are kept beside its fail record.
    line=$(sed -n 's/.*RIG-L2: bench-cpu //p' "$RIG_TMP/$c.out" | head -n1)
    [ -z "$line" ] || { echo "record=cpu"; echo "config=$c"; echo "vmm=$vmm"; echo "$line" | tr ' ' '\n'; } > "$BENCH_OUT/$c-cpu.txt"
    k=0
    sed -n 's/.*RIG-L2: bench //p' "$RIG_TMP/$c.out" > "$RIG_TMP/bench.lines"
    while read -r line; do
        k=$((k + 1))
        { echo "record=blk"; echo "config=$c"; echo "vmm=$vmm"; echo "$line" | tr ' ' '\n'; } > "$BENCH_OUT/$c-$k.txt"
    done < "$RIG_TMP/bench.lines"
    rig_say "bench $c: $k repetition(s) recorded"
    if [ $ok = 0 ]; then
        why=$(grep -h 'RIG-L2: FAIL' "$RIG_TMP/$c.out" | head -n1 | sed 's/.*RIG-L2: FAIL //')
        bench_record "$c" fail "$RIG_WHY${why:+: $why}"
    elif [ $k = 0 ]; then
        bench_record "$c" fail "the guest printed no result"
    fi
}

for c in $configs; do
    bench_config "$c"
done
