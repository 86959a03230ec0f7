# shellcheck shell=sh disable=SC2034,SC2154 # cpus, mem, reps, cmdline: set by the sourcing script; it uses bench_qemu
# What blk-run.sh and net-run.sh share (POSIX sh, sourced once they have set
# cpus, mem, reps and cmdline's parts): the rig library (rig_vmm, rig_say),
# the setup, skip and fail records, the assigned device's checks, QEMU's part
# of a command line, booting one guest and reading its result lines.
# In the rig's L1 it is /rig/scenarios/bench-common.sh, beside bench-*.run.sh.
# shellcheck source=/dev/null
. "${BENCH_RIG_LIB:-/rig/lib.sh}"
: "${BENCH_OUT:?BENCH_OUT is required}" "${BENCH_KERNEL:?}" "${BENCH_INITRD:?}"
mkdir -p "$BENCH_OUT"

# QEMU's command line but for the devices, kernel and initramfs.
bench_qemu="qemu-system-x86_64 -machine q35,accel=kvm -cpu host -smp $cpus -m ${mem}M -nodefaults
    -no-user-config -nographic -serial stdio -monitor none -no-reboot"

# bench_setup KEY=VALUE...: $BENCH_OUT/setup.txt, the host and guest, then the arguments.
bench_setup() {
    {
        echo "record=setup"
        echo "host=${BENCH_HOST:-$(uname -n)}"
        echo "host_kernel=$(uname -r)"
        echo "guest_cpus=$cpus"
        echo "guest_memory_mib=$mem"
        echo "reps=$reps"
        printf '%s\n' "$@"
    } > "$BENCH_OUT/setup.txt"
}

# bench_record CONFIG KIND REASON: a skip or fail record.
bench_record() {
    printf 'record=%s\nconfig=%s\nreason=%s\n' "$2" "$1" "$3" > "$BENCH_OUT/$1.txt"
    rig_say "bench $1: $2: $3"
}

# bench_check_device CONFIG WHAT: is BENCH_DEVICE (WHAT) there, on vfio-pci?
# Records a skip otherwise.
bench_check_device() {
    [ -n "${BENCH_DEVICE:-}" ] || { bench_record "$1" skip "no $2 to assign (BENCH_DEVICE)"; return 1; }
    case $(readlink "/sys/bus/pci/devices/$BENCH_DEVICE/driver") in
        */vfio-pci) ;;
        *) bench_record "$1" skip "$BENCH_DEVICE is not bound to vfio-pci"; return 1 ;;
    esac
}

# bench_check_qemu CONFIG: a qemu-* CONFIG needs qemu-system-x86_64. Records a skip otherwise.
bench_check_qemu() {
    case $1 in
        qemu-*) command -v qemu-system-x86_64 > /dev/null ||
            { bench_record "$1" skip "qemu-system-x86_64 is not installed"; return 1; } ;;
    esac
}

# bench_boot CONFIG VMM CMD...: boots the guest (BENCH_KERNEL, BENCH_INITRD,
# $cmdline) with CMD, a vfio-vmm (VMM vfio-vmm) or QEMU (VMM qemu) command line
# without them, through rig_vmm. Its output: $RIG_TMP/CONFIG.out, and its
# result lines ("RIG-L2: bench ..." without that) $RIG_TMP/bench.lines.
bench_boot() {
    _bc=$1 _bvmm=$2 _bok=0
    shift 2
    if [ "$_bvmm" = vfio-vmm ]; then
        set -- "$@" --kernel "$BENCH_KERNEL" --initramfs "$BENCH_INITRD" --cpus "$cpus" --memory "${mem}M" --cmdline "$cmdline"
    else
        set -- "$@" -kernel "$BENCH_KERNEL" -initrd "$BENCH_INITRD" -append "$cmdline"
    fi
    rig_vmm "$_bc" "$@" || _bok=1
    # A guest of L1's QEMU that died without its exit marker (in this rig they
    # now and then panic or reset under QEMU 7.2 in L1, "Fatal exception in
    # interrupt") is booted once more, said in the log; vfio-vmm's guests are
    # never retried: their death is a failure.
    case $_bok:$_bvmm:$RIG_WHY in
        1:qemu:*"no 'RIG-L2: exit' marker"*)
            echo "RIG-L1: bench $_bc: $RIG_WHY: booting QEMU's guest once more (its log: $_bc.lost.out)"
            mv "$RIG_TMP/$_bc.out" "$RIG_TMP/$_bc.lost.out"
            _bok=0
            rig_vmm "$_bc" "$@" || _bok=1
            ;;
    esac
    touch "$RIG_TMP/$_bc.out"
    sed -n 's/.*RIG-L2: bench //p' "$RIG_TMP/$_bc.out" > "$RIG_TMP/bench.lines"
    return $_bok
}

# bench_fail CONFIG: the fail record of a guest that bench_boot saw fail.
bench_fail() {
    _bwhy=$(grep -h 'RIG-L2: FAIL' "$RIG_TMP/$1.out" | head -n1 | sed 's/.*RIG-L2: FAIL //')
    bench_record "$1" fail "$RIG_WHY${_bwhy:+: $_bwhy}"
}

# bench_result KIND CONFIG VMM LINE: the lines of a record from a guest's
# result LINE ("KEY=VALUE KEY=VALUE ...").
bench_result() {
    echo "record=$1"
    echo "config=$2"
    echo "vmm=$3"
    echo "$4" | tr ' ' '\n'
}
