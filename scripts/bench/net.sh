#!/bin/bash
# Network I/O benchmark: the same guest and the same iperf3/ping traffic over an
# assigned NIC and over emulated NICs, one guest boot per configuration:
#   passthrough       the NIC assigned by vfio-vmm (run --device)
#   virtio-net        vfio-vmm's virtio-net on a tap
#   qemu-virtio       QEMU's virtio-net on a tap      (needs qemu-system-x86_64)
#   qemu-e1000e       QEMU's e1000e on a tap          (needs qemu-system-x86_64)
#   qemu-passthrough  the NIC assigned by QEMU's vfio-pci
# Writes net.json, net.md and net.svg (vfio-vmm bench report) into --out.
#
# Usage:
#   scripts/bench/net.sh rig [--out DIR]
#       run the rig scenario bench-net (nested, short runs; RIG_DIR as for run.sh)
#   scripts/bench/net.sh host --device BDF --peer-addr ADDR [options]
#       on a real host, as root. BDF is the NIC to assign, already on vfio-pci
#       (vfio-vmm host bind BDF). ADDR is the host-side endpoint: an address
#       configured on a local interface that shares a wire or switch with that
#       NIC; iperf3 -s runs here. Options: --guest-addr A.B.C.D/N (default: ADDR
#       plus one, same /24), --driver MODULE (guest driver of the NIC, default
#       e1000e), --configs LIST (comma-separated), --time S (10), --reps N (3),
#       --pings N (1000), --cpus N (1), --memory MIB (256), --out DIR
#   scripts/bench/net.sh from-log LOG [--out DIR]
#       extract the RIG-BENCH results of a rig log and write the report; fails
#       unless every configuration has numbers (the rig's bench-net host step)
#   scripts/bench/net.sh report RAWDIR [--out DIR] [--strict]
#       write the report from a directory of raw records
# The report needs a vfio-vmm with `bench report`: $VFIO_VMM, else the rig's
# $RIG_DIR/l1/vfio-vmm, else `cargo build --release`. Default --out: target/bench.
set -euo pipefail
shopt -s inherit_errexit

BENCH=net RAW=raw SHOW='^\|' MIN_REPS=3 REQUIRE=""
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

host_mode() {
    local device="" peer="" guest="" driver=e1000e configs="" secs=10 reps=3 pings=1000 cpus=1 mem=256
    while [ $# -gt 0 ]; do
        case $1 in
            --device) device=$2 ;;
            --peer-addr) peer=$2 ;;
            --guest-addr) guest=$2 ;;
            --driver) driver=$2 ;;
            --pings) pings=$2 ;;
            *) host_opt "$1" "${2:-}" ;;
        esac
        [ $# -ge 2 ] || usage
        shift 2
    done
    [ "$(id -u)" = 0 ] || die "host mode needs root (KVM, VFIO, taps)"
    [ -c /dev/kvm ] || die "no /dev/kvm"
    command -v iperf3 > /dev/null || die "iperf3 is not installed (apt-get install iperf3)"
    [ -n "$peer" ] || die "--peer-addr ADDR is required: the host-side endpoint on the assigned NIC's wire"
    ip -o -4 addr show | grep -qw "inet $peer" || die "$peer is not configured on any local interface"
    if [ -n "$device" ]; then
        device=$(vfio_device "$device")
    else
        say "no --device: passthrough and qemu-passthrough will be skipped"
    fi
    [ -n "$guest" ] || guest=${peer%.*}.$(( ${peer##*.} % 254 + 1 ))/24
    say "running: configs ${configs:-all}, ${secs}s per direction, $reps repetitions, $pings pings"
    # The guest: the rig's Debian kernel, busybox + NIC modules + iperf3, net-guest.sh as its script.
    host_run iperf.cpio \
        "BENCH_CONFIGS=$configs" "BENCH_DEVICE=$device" "BENCH_DRIVER=$driver" "BENCH_PEER_ADDR=$peer" \
        "BENCH_GUEST_ADDR=$guest" "BENCH_TIME=$secs" "BENCH_REPS=$reps" "BENCH_PINGS=$pings" \
        "BENCH_CPUS=$cpus" "BENCH_MEM=$mem"
}

# rig_mode [--out DIR]
rig_mode() {
    [ $# = 0 ] || { [ "$1" = --out ] && [ $# = 2 ] && OUT=$2; } || usage
    rig_cmd
}

bench_main "$@"
