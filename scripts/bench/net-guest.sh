#!/bin/sh
# Guest side of the network benchmark (busybox sh in the benchmark guest; the
# rig's bench-net.l2.sh is a link to this file). Runs as /rig/l2.sh under
# scripts/rig/l2-init, which reports our exit status as "RIG-L2: exit N".
#
# Kernel command line (set by net-run.sh):
#   bench.driver=MODULE   NIC driver to load (e1000e, virtio_net, ...)
#   bench.addr=A.B.C.D/N  our address;  bench.peer=A.B.C.D  the host side (iperf3 -s)
#   bench.time=S  iperf3 seconds per direction;  bench.reps=N;  bench.pings=N
# Per repetition: "RIG-L2: sample" (the host samples CPU time), iperf3 TCP
# guest->host (tx) and host->guest (-R, rx), "RIG-L2: sample" again, then
# ping with a 10 ms interval. One result line per repetition:
#   RIG-L2: bench rep=K tx_bytes=B tx_seconds=S rx_bytes=B rx_seconds=S rtt_us=R1,R2,...
# Bytes and seconds are iperf3's receiver-side totals (end.sum_received).
fail() { echo "RIG-L2: FAIL $*"; exit 1; }
read -r cmdline < /proc/cmdline
arg() { for a in $cmdline; do case $a in "$1"=*) echo "${a#*=}" ;; esac; done; }
drv=$(arg bench.driver) addr=$(arg bench.addr) peer=$(arg bench.peer)
secs=$(arg bench.time) reps=$(arg bench.reps) pings=$(arg bench.pings)
[ -n "$drv" ] && [ -n "$addr" ] && [ -n "$peer" ] || fail "bench.driver, bench.addr and bench.peer are required"
secs=${secs:-2} reps=${reps:-3} pings=${pings:-100}
command -v iperf3 > /dev/null || fail "no iperf3 in the guest initramfs"

case $drv in virtio_net) modprobe virtio_pci || fail "cannot load virtio_pci" ;; esac
modprobe "$drv" || fail "cannot load $drv"
ifc="" i=0
while [ -z "$ifc" ] && [ $i -lt 100 ]; do
    for n in /sys/class/net/*; do [ -e "$n/device/driver" ] && ifc=${n##*/}; done
    [ -n "$ifc" ] || { sleep 0.1; i=$((i + 1)); }
done
[ -n "$ifc" ] || fail "$drv created no network interface"
ip link set lo up
ip addr add "$addr" dev "$ifc" && ip link set "$ifc" up || fail "cannot configure $ifc"
# The host side may still be setting up its end (a tap appears with the VMM): wait for it.
i=0
until ping -c 1 -W 1 "$peer" > /dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 60 ] || fail "$peer does not answer on $ifc ($drv)"
done
echo "RIG-L2: $ifc ($drv) reaches $peer after $i failed pings"

# iperf_json FILE: prints "BYTES SECONDS" from end.sum_received, nothing on error.
iperf_json() {
    awk -F'[:,]' '/"sum_received"/ {f = 1; next}
        f && /"bytes"/ {gsub(/[ \t]/, "", $2); b = $2}
        f && /"seconds"/ {gsub(/[ \t]/, "", $2); s = $2}
        f && /}/ {f = 0}
        END {if (b != "" && s != "") print b, s}' "$1"
}
iperf_err() { sed -n 's/.*"error":[[:space:]]*"\(.*\)".*/\1/p' "$1" | head -n1; }

rep=1
while [ $rep -le "$reps" ]; do
    echo "RIG-L2: sample"
    sleep 0.2
    iperf3 -c "$peer" -t "$secs" -J > /tmp/tx.json 2>&1
    tx=$(iperf_json /tmp/tx.json)
    [ -n "$tx" ] || fail "iperf3 to $peer (rep $rep): $(iperf_err /tmp/tx.json)"
    iperf3 -c "$peer" -t "$secs" -R -J > /tmp/rx.json 2>&1
    rx=$(iperf_json /tmp/rx.json)
    [ -n "$rx" ] || fail "iperf3 -R from $peer (rep $rep): $(iperf_err /tmp/rx.json)"
    echo "RIG-L2: sample"
    sleep 0.2
    ping -c "$pings" -i 0.01 -W 5 "$peer" > /tmp/ping.txt 2>&1
    rtts=$(sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' /tmp/ping.txt |
        awk '{printf "%s%d", (NR > 1 ? "," : ""), $1 * 1000 + 0.5}')
    [ -n "$rtts" ] || fail "ping $peer (rep $rep): $(tail -n 2 /tmp/ping.txt | tr '\n' ' ')"
    # shellcheck disable=SC2086 # "BYTES SECONDS" pairs
    set -- $tx $rx
    echo "RIG-L2: bench rep=$rep tx_bytes=$1 tx_seconds=$2 rx_bytes=$3 rx_seconds=$4 rtt_us=$rtts"
    rep=$((rep + 1))
done
