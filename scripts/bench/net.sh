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

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG_DIR=${RIG_DIR:-$ROOT/target/rig}
OUT=${BENCH_REPORT_DIR:-$ROOT/target/bench}

say() { echo "bench-net: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { awk '/^# Usage:/,/^# The report needs/' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# vmm_bin: prints a vfio-vmm that has `bench report`.
vmm_bin() {
    local b
    for b in "${VFIO_VMM:-}" "$RIG_DIR/l1/vfio-vmm"; do
        [ -n "$b" ] && [ -x "$b" ] && "$b" bench report --help > /dev/null 2>&1 && { echo "$b"; return; }
    done
    [ -z "${VFIO_VMM:-}" ] || die "VFIO_VMM=$VFIO_VMM has no 'bench report' subcommand"
    say "building vfio-vmm (cargo build --release) for the report"
    (cd "$ROOT" && cargo build --release -q -p vfio-vmm --bin vfio-vmm >&2) || die "cargo build failed"
    b=${CARGO_TARGET_DIR:-$ROOT/target}/release/vfio-vmm
    "$b" bench report --help > /dev/null 2>&1 || die "$b has no 'bench report' subcommand"
    echo "$b"
}

# report RAWDIR STRICT: write and check the report, print its table.
report() {
    local raw=$1 strict=$2 bin reps f args=()
    bin=$(vmm_bin)
    reps=$(sed -n 's/^reps=//p' "$raw/setup.txt" 2> /dev/null || true)
    [ "$strict" = 1 ] && args+=(--strict --min-reps "${reps:-3}")
    local err
    err=$("$bin" bench report --input "$raw" --out "$OUT" "${args[@]}" 2>&1 > /dev/null) ||
        die "${err#vfio-vmm: } (raw records in $raw, report in $OUT)"
    for f in net.json net.md net.svg; do
        [ -s "$OUT/$f" ] || die "the report wrote no $OUT/$f"
    done
    grep -q '<svg' "$OUT/net.svg" || die "$OUT/net.svg is not an SVG document"
    grep '^|' "$OUT/net.md"
    say "report: $OUT/net.md, $OUT/net.json, $OUT/net.svg"
}

# from_log LOG: RIG-BENCH lines ("FILE KEY=VALUE") -> $OUT/raw/FILE
from_log() {
    local log=$1 raw=$OUT/raw file line
    [ -f "$log" ] || die "no log $log"
    rm -rf "$raw"
    mkdir -p "$raw"
    while read -r file line; do
        case $file in
            "" | .* | *[!A-Za-z0-9._-]*) die "bad record file name '$file' in $log" ;;
        esac
        printf '%s\n' "$line" >> "$raw/$file"
    done < <(tr -d '\r' < "$log" | sed -n 's/^RIG-BENCH: //p')
    [ -n "$(ls "$raw")" ] || die "$log has no RIG-BENCH lines (did the scenario reach its end?)"
    echo "$raw"
}

host_mode() {
    local device="" peer="" guest="" driver=e1000e configs="" secs=10 reps=3 pings=1000 cpus=1 mem=256
    while [ $# -gt 0 ]; do
        case $1 in
            --device) device=$2 ;;
            --peer-addr) peer=$2 ;;
            --guest-addr) guest=$2 ;;
            --driver) driver=$2 ;;
            --configs) configs=${2//,/ } ;;
            --time) secs=$2 ;;
            --reps) reps=$2 ;;
            --pings) pings=$2 ;;
            --cpus) cpus=$2 ;;
            --memory) mem=$2 ;;
            --out) OUT=$2 ;;
            *) usage ;;
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
        [[ $device == *:*:*.* ]] || device=0000:$device
        [ "$(basename "$(readlink "/sys/bus/pci/devices/$device/driver" 2> /dev/null)")" = vfio-pci ] ||
            die "$device is not bound to vfio-pci: run 'vfio-vmm host bind $device' first"
    else
        say "no --device: passthrough and qemu-passthrough will be skipped"
    fi
    [ -n "$guest" ] || guest=${peer%.*}.$(( ${peer##*.} % 254 + 1 ))/24
    local vmm tmp
    vmm=$(vmm_bin)
    tmp=$(mktemp -d)
    # The guest: the rig's Debian kernel, busybox + NIC modules + iperf3, net-guest.sh as its script.
    printf '#!/bin/sh\nexit 0\n' > "$tmp/no-vmm"
    chmod +x "$tmp/no-vmm"
    RIG_VMM_BIN=$tmp/no-vmm RIG_DIR=$RIG_DIR "$ROOT/scripts/rig/build.sh" || die "building the guest failed"
    mkdir -p "$tmp/initrd/rig"
    install -m 755 "$ROOT/scripts/rig/l2-init" "$tmp/initrd/init"
    install -m 755 "$HERE/net-guest.sh" "$tmp/initrd/rig/l2.sh"
    (cd "$tmp/initrd" && find . | cpio -o -H newc -R 0:0 --quiet) |
        cat "$RIG_DIR/l2/base.cpio" "$RIG_DIR/l2/tools.cpio" "$RIG_DIR/l1/iperf.cpio" - > "$tmp/initramfs.cpio"
    rm -rf "$OUT/raw"
    mkdir -p "$OUT/raw" "$tmp/rig"
    say "running: configs ${configs:-all}, ${secs}s per direction, $reps repetitions, $pings pings"
    PATH=$(dirname "$vmm"):$PATH RIG_TMP=$tmp/rig BENCH_RIG_LIB=$ROOT/scripts/rig/lib.sh \
        BENCH_OUT=$OUT/raw BENCH_KERNEL=$RIG_DIR/l2/vmlinuz BENCH_INITRD=$tmp/initramfs.cpio \
        BENCH_CONFIGS=$configs BENCH_DEVICE=$device BENCH_DRIVER=$driver BENCH_PEER_ADDR=$peer \
        BENCH_GUEST_ADDR=$guest BENCH_TIME=$secs BENCH_REPS=$reps BENCH_PINGS=$pings \
        BENCH_CPUS=$cpus BENCH_MEM=$mem sh "$HERE/net-run.sh" >&2
    rm -rf "$tmp"
    report "$OUT/raw" 0
}

[ $# -gt 0 ] || usage
cmd=$1
shift
case $cmd in
    rig)
        [ $# = 0 ] || { [ "$1" = --out ] && [ $# = 2 ] && OUT=$2; } || usage
        mkdir -p "$OUT"
        OUT=$(cd "$OUT" && pwd)
        BENCH_REPORT_DIR=$OUT exec "$ROOT/scripts/rig/run.sh" bench-net ;;
    from-log | report)
        [ $# -ge 1 ] || usage
        src=$1 strict=0
        shift
        while [ $# -gt 0 ]; do
            case $1 in
                --out) [ $# -ge 2 ] || usage; OUT=$2; shift ;;
                --strict) strict=1 ;;
                *) usage ;;
            esac
            shift
        done
        # from-log is the rig's check (scenarios/bench-net.host.sh): always strict.
        [ "$cmd" = report ] || strict=1
        [ "$cmd" = report ] || src=$(from_log "$src")
        report "$src" "$strict" ;;
    host) host_mode "$@" ;;
    *) usage ;;
esac
