#!/bin/sh
# Host side of the network benchmark (POSIX sh; busybox in the rig's L1, or a
# real host through scripts/bench/net.sh). For each configuration it boots the
# benchmark guest once (net-guest.sh inside), runs iperf3 -s for it, samples
# the VMM's and the host's CPU time around each repetition's iperf3 runs and
# writes one key=value file per repetition into $BENCH_OUT:
#   CONFIG-REP.txt  record=run:   config, vmm, rep, tx_bytes, tx_seconds, rx_bytes,
#                   rx_seconds, rtt_us (comma list), clk_tck, vmm_cpu_ticks,
#                   vmm_guest_ticks, host_cpu_ticks (deltas over tx+rx)
#   CONFIG.txt      record=skip or record=fail: config, reason
#   setup.txt       record=setup: what was measured, for the report's header
# `vfio-vmm bench report --input $BENCH_OUT` turns them into net.{json,md,svg}.
#
# Environment (defaults in brackets):
#   BENCH_OUT (required)  BENCH_KERNEL, BENCH_INITRD (required: a guest whose
#   initramfs has iperf3 and runs net-guest.sh)  BENCH_CONFIGS [all five]
#   BENCH_DEVICE  BDF of the NIC to assign, bound to vfio-pci [none: passthrough skipped]
#   BENCH_DRIVER  the assigned NIC's driver in the guest [e1000e]
#   BENCH_PEER_ADDR / BENCH_GUEST_ADDR  host-side endpoint on the assigned NIC's
#       wire (already configured) and the guest's address [169.254.2.1 / 169.254.2.2/24]
#   BENCH_CPUS [1]  BENCH_MEM (MiB) [256]  BENCH_TIME (s) [2]  BENCH_REPS [3]
#   BENCH_PINGS [100]  BENCH_KARGS [quiet]  BENCH_HOST [uname -n]
#   BENCH_RIG_LIB  the rig's lib.sh (rig_vmm, rig_bind_vfio) [/rig/lib.sh]; bench-common.sh beside this file
# The tap configurations use their own taps with 169.254.1.1/24 (host) and
# 169.254.1.2/24 (guest).
configs=${BENCH_CONFIGS:-passthrough virtio-net qemu-virtio qemu-e1000e qemu-passthrough}
cpus=${BENCH_CPUS:-1} mem=${BENCH_MEM:-256} secs=${BENCH_TIME:-2} reps=${BENCH_REPS:-3}
pings=${BENCH_PINGS:-100} kargs=${BENCH_KARGS-quiet}
peer=${BENCH_PEER_ADDR:-169.254.2.1} guest=${BENCH_GUEST_ADDR:-169.254.2.2/24}
# shellcheck source=scripts/bench/bench-common.sh
. "$(dirname "$0")/bench-common.sh"
# Each guest boot runs reps x (2 iperf3 runs + pings); allow for a slow boot on top.
RIG_L2_TIMEOUT=$((${RIG_L2_TIMEOUT:-150} + reps * (2 * secs + pings / 50 + 10)))

bench_setup "iperf3_seconds=$secs" "pings=$pings" "ping_interval_ms=10" \
    "iperf3=$(iperf3 --version 2>/dev/null | head -n1)"

# bench_sample PID: prints "VMM_TICKS VMM_GUEST_TICKS HOST_BUSY_TICKS".
# Busybox timeout execs the VMM; GNU timeout forks it, then the VMM is its child.
bench_sample() {
    _p=$1
    if [ "$(cat "/proc/$_p/comm" 2>/dev/null)" = timeout ]; then
        _c=$(cat /proc/"$_p"/task/*/children 2>/dev/null)
        _p=${_c%% *}
    fi
    _s=$(cat "/proc/$_p/stat" 2>/dev/null) || { echo "x x x"; return; }
    _s=${_s##*) }
    # shellcheck disable=SC2086 # split the fields; $1 is field 3 of proc(5)
    set -- $_s
    # utime (14), stime (15), guest_time (43); /proc/stat: user nice system irq softirq steal
    echo "$((${12} + ${13})) ${41} $(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat)"
}
rig_on_sample() { bench_sample "$1" >> "$RIG_TMP/bench.samples"; }

# bench_tap IFACE ADDR: in the background, wait for IFACE (the VMM creates it) and configure it.
bench_tap() {
    (
        i=0
        while [ ! -e "/sys/class/net/$1" ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i + 1)); done
        ip addr add "$2" dev "$1" && ip link set "$1" up && rig_say "bench: $1 up as $2"
    ) &
}

# bench_config CONFIG: boot the guest once for CONFIG and record its repetitions.
bench_config() {
    c=$1 vmm="" drv="" addr=$guest host=$peer
    case $c in
        passthrough | qemu-passthrough)
            bench_check_device "$c" NIC || return 0
            drv=${BENCH_DRIVER:-e1000e} ;;
        virtio-net | qemu-virtio) drv=virtio_net addr=169.254.1.2/24 host=169.254.1.1 ;;
        qemu-e1000e) drv=e1000e addr=169.254.1.2/24 host=169.254.1.1 ;;
        *) bench_record "$c" fail "unknown configuration"; return ;;
    esac
    bench_check_qemu "$c" || return 0
    case $c in
        virtio-net | qemu-virtio | qemu-e1000e)
            modprobe tun 2> /dev/null || true
            [ -c /dev/net/tun ] || { bench_record "$c" skip "no /dev/net/tun for a tap"; return; } ;;
    esac
    cmdline="console=ttyS0 panic=-1${kargs:+ $kargs} bench.driver=$drv bench.addr=$addr bench.peer=$host"
    cmdline="$cmdline bench.time=$secs bench.reps=$reps bench.pings=$pings"
    tap="-netdev tap,id=n0,ifname=bqtap0,script=no,downscript=no"
    # shellcheck disable=SC2086 # $bench_qemu and $tap are split into words on purpose
    case $c in
        passthrough) vmm=vfio-vmm; set -- vfio-vmm run --device "$BENCH_DEVICE" ;;
        virtio-net) vmm=vfio-vmm; set -- vfio-vmm run --net tap=bvtap0,mac=02:00:00:00:01:02
            bench_tap bvtap0 169.254.1.1/24 ;;
        qemu-virtio) vmm=qemu; set -- $bench_qemu $tap -device virtio-net-pci,netdev=n0,mac=02:00:00:00:01:02,romfile=
            bench_tap bqtap0 169.254.1.1/24 ;;
        qemu-e1000e) vmm=qemu; set -- $bench_qemu $tap -device e1000e,netdev=n0,mac=02:00:00:00:01:02,romfile=
            bench_tap bqtap0 169.254.1.1/24 ;;
        qemu-passthrough) vmm=qemu; set -- $bench_qemu -device vfio-pci,host="$BENCH_DEVICE" ;;
    esac
    : > "$RIG_TMP/bench.samples"
    iperf3 -s > "$RIG_TMP/iperf3-$c.log" 2>&1 &
    srv=$!
    ok=1
    bench_boot "$c" "$vmm" "$@" || ok=0
    kill "$srv" 2> /dev/null
    wait "$srv" 2> /dev/null
    if [ $ok = 0 ]; then
        bench_fail "$c"
        return
    fi
    k=0
    while read -r line; do
        k=$((k + 1))
        # shellcheck disable=SC2046 # two samples per repetition: before tx, after rx
        set -- $(sed -n "$((2 * k - 1))p;$((2 * k))p" "$RIG_TMP/bench.samples")
        {
            bench_result run "$c" "$vmm" "$line"
            echo "clk_tck=100"
            if [ $# = 6 ] && [ "$1" != x ] && [ "$4" != x ]; then
                echo "vmm_cpu_ticks=$(($4 - $1))"
                echo "vmm_guest_ticks=$(($5 - $2))"
                echo "host_cpu_ticks=$(($6 - $3))"
            fi
        } > "$BENCH_OUT/$c-$k.txt"
    done < "$RIG_TMP/bench.lines"
    rig_say "bench $c: $k repetition(s) recorded"
    [ $k -gt 0 ] || bench_record "$c" fail "the guest printed no result"
}

for c in $configs; do
    bench_config "$c"
done
