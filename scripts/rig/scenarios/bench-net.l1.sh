#!/bin/sh
# Scenario bench-net (L1 side): the network benchmark (scripts/bench/net-run.sh,
# here /rig/scenarios/bench-net.run.sh) end to end with short runs. Five
# configurations, one L2 boot each, 1 vCPU and 256M: the e1000e assigned by
# vfio-vmm (passthrough) and by qemu-system-x86_64 (qemu-passthrough), with
# L1's e1000 on the same QEMU hub as the host side; vfio-vmm's virtio-net on a
# tap; QEMU's virtio-net and e1000e on a tap. iperf3 -s runs in L1, the client
# in L2 (bench-net.l2.sh). Results leave L1 as "RIG-BENCH: FILE LINE" lines;
# bench-net.host.sh turns them into target/bench/net.{json,md,svg}.
# Never fails on speed, only when a configuration produced no numbers.
. /rig/lib.sh
command -v iperf3 > /dev/null || rig_fail "no iperf3 in L1 (l1/iperf.cpio)"
command -v qemu-system-x86_64 > /dev/null || rig_fail "no qemu-system-x86_64 in L1"
ip link set lo up
rig_nic_pair 169.254.2.1/24
nic=$RIG_NIC

reps=3
BENCH_OUT=$RIG_TMP/bench BENCH_KERNEL=$RIG_L2_KERNEL BENCH_INITRD=$RIG_L2_INITRD \
    BENCH_DEVICE=$nic BENCH_DRIVER=e1000e BENCH_PEER_ADDR=169.254.2.1 BENCH_GUEST_ADDR=169.254.2.2/24 \
    BENCH_CPUS=1 BENCH_MEM=256 BENCH_TIME=2 BENCH_REPS=$reps BENCH_PINGS=100 BENCH_KARGS=$RIG_L2_KARGS \
    BENCH_HOST="rig: L1 under QEMU TCG (2 vCPUs), guests under nested KVM in L1" \
    sh /rig/scenarios/bench-net.run.sh

for f in "$RIG_TMP"/bench/*.txt; do
    while IFS= read -r line; do echo "RIG-BENCH: ${f##*/} $line"; done < "$f"
done
# Every configuration must have $reps repetitions with bytes moved both ways, RTTs and CPU samples.
why=""
for c in passthrough virtio-net qemu-virtio qemu-e1000e qemu-passthrough; do
    if [ -f "$RIG_TMP/bench/$c.txt" ]; then
        why="$why; $c: $(sed -n 's/^reason=//p' "$RIG_TMP/bench/$c.txt")"
        continue
    fi
    n=0
    for f in "$RIG_TMP/bench/$c"-*.txt; do
        [ -f "$f" ] || continue
        awk -F= '$1 ~ /^(tx|rx)_bytes$/ && $2 > 0 {b++} $1 == "rtt_us" && $2 != "" {r++} $1 == "vmm_cpu_ticks" {t++}
            END {exit !(b == 2 && r == 1 && t == 1)}' "$f" && n=$((n + 1))
    done
    [ $n = $reps ] || why="$why; $c: $n of $reps repetitions with numbers"
done
[ -z "$why" ] || rig_fail "bench-net:${why#;}"
rig_say "bench-net: all configurations produced numbers"
