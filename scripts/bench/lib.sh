# shellcheck shell=bash
# What blk.sh and net.sh share (bash, sourced): messages, finding a vfio-vmm
# with `bench report`, writing and checking the report, turning a rig log's
# RIG-BENCH lines into raw records, building the benchmark guest and the
# from-log/report commands. The caller sets, before sourcing:
#   BENCH  blk or net: the report's files are $OUT/$BENCH.{json,md,svg}
#   RAW    the raw records' directory under $OUT (raw-blk, raw)
#   SHOW   the report lines printed after writing it (an ERE over $BENCH.md)
#   REQUIRE  configurations --strict requires (empty: all of them)
#   MIN_REPS the repetitions --strict requires when setup.txt names none
# and gets HERE, ROOT, RIG_DIR and OUT (default target/bench).
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG_DIR=${RIG_DIR:-$ROOT/target/rig}
OUT=${BENCH_REPORT_DIR:-$ROOT/target/bench}

say() { echo "bench-$BENCH: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { awk '/^# Usage:/,/^# The report needs/' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# vmm_bin: prints a vfio-vmm whose `bench report` knows $BENCH's records.
vmm_bin() {
    local b
    for b in "${VFIO_VMM:-}" "$RIG_DIR/l1/vfio-vmm"; do
        [ -n "$b" ] && [ -x "$b" ] && "$b" bench report --help 2>&1 | grep -q "$BENCH.json" && { echo "$b"; return; }
    done
    [ -z "${VFIO_VMM:-}" ] || die "VFIO_VMM=$VFIO_VMM has no 'bench report' for $BENCH results"
    say "building vfio-vmm (cargo build --release) for the report"
    (cd "$ROOT" && cargo build --release -q -p vfio-vmm --bin vfio-vmm >&2) || die "cargo build failed"
    b=${CARGO_TARGET_DIR:-$ROOT/target}/release/vfio-vmm
    "$b" bench report --help 2>&1 | grep -q "$BENCH.json" || die "$b has no 'bench report' for $BENCH results"
    echo "$b"
}

# report RAWDIR STRICT: write and check the report, print its tables.
report() {
    local raw=$1 strict=$2 bin reps f args=()
    bin=$(vmm_bin)
    reps=$(sed -n 's/^reps=//p' "$raw/setup.txt" 2> /dev/null || true)
    [ "$strict" = 1 ] && args+=(--strict --min-reps "${reps:-$MIN_REPS}" ${REQUIRE:+--require "$REQUIRE"})
    local err
    err=$("$bin" bench report --input "$raw" --out "$OUT" "${args[@]}" 2>&1 > /dev/null) ||
        die "${err#vfio-vmm: } (raw records in $raw, report in $OUT)"
    for f in "$BENCH".json "$BENCH".md "$BENCH".svg; do
        [ -s "$OUT/$f" ] || die "the report wrote no $OUT/$f"
    done
    grep -q '<svg' "$OUT/$BENCH.svg" || die "$OUT/$BENCH.svg is not an SVG document"
    grep -E "$SHOW" "$OUT/$BENCH.md"
    say "report: $OUT/$BENCH.md, $OUT/$BENCH.json, $OUT/$BENCH.svg"
}

# from_log LOG: RIG-BENCH lines ("FILE KEY=VALUE") -> $OUT/$RAW/FILE
from_log() {
    local log=$1 raw=$OUT/$RAW file line
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

# vfio_device BDF: prints BDF with its PCI domain; fails unless it is on vfio-pci.
vfio_device() {
    local device=$1
    [[ $device == *:*:*.* ]] || device=0000:$device
    [ "$(basename "$(readlink "/sys/bus/pci/devices/$device/driver" 2> /dev/null)")" = vfio-pci ] ||
        die "$device is not bound to vfio-pci: run 'vfio-vmm host bind $device' first"
    echo "$device"
}

# guest_initramfs TMP CPIO: the benchmark guest (the rig's L2 kernel and busybox
# parts, plus $RIG_DIR/l1/CPIO for its tool, $BENCH-guest.sh as its script) as
# TMP/initramfs.cpio.
guest_initramfs() {
    local tmp=$1 cpio=$2
    printf '#!/bin/sh\nexit 0\n' > "$tmp/no-vmm"
    chmod +x "$tmp/no-vmm"
    RIG_VMM_BIN=$tmp/no-vmm RIG_DIR=$RIG_DIR "$ROOT/scripts/rig/build.sh" || die "building the guest failed"
    mkdir -p "$tmp/initrd/rig"
    install -m 755 "$ROOT/scripts/rig/l2-init" "$tmp/initrd/init"
    install -m 755 "$HERE/$BENCH-guest.sh" "$tmp/initrd/rig/l2.sh"
    (cd "$tmp/initrd" && find . | cpio -o -H newc -R 0:0 --quiet) |
        cat "$RIG_DIR/l2/base.cpio" "$RIG_DIR/l2/tools.cpio" "$RIG_DIR/l1/$cpio" - > "$tmp/initramfs.cpio"
}

# host_opt OPTION VALUE: the host-mode options both benchmarks take; sets
# host_mode's configs, secs, reps, cpus, mem (bash scoping) or OUT. Usage otherwise.
# shellcheck disable=SC2034 # host_mode reads them
host_opt() {
    case $1 in
        --configs) configs=${2//,/ } ;;
        --time) secs=$2 ;;
        --reps) reps=$2 ;;
        --cpus) cpus=$2 ;;
        --memory) mem=$2 ;;
        --out) OUT=$2 ;;
        *) usage ;;
    esac
}

# host_run CPIO VAR=VALUE...: on a real host, builds the guest (guest_initramfs
# TMP CPIO), runs $BENCH-run.sh with the common BENCH_* environment and
# VAR=VALUE... (its own), and writes the report from its raw records.
host_run() {
    local cpio=$1 vmm tmp
    shift
    vmm=$(vmm_bin)
    tmp=$(mktemp -d)
    guest_initramfs "$tmp" "$cpio"
    rm -rf "$OUT/${RAW:?}"
    mkdir -p "$OUT/$RAW" "$tmp/rig"
    env PATH="$(dirname "$vmm"):$PATH" RIG_TMP="$tmp/rig" BENCH_RIG_LIB="$ROOT/scripts/rig/lib.sh" \
        BENCH_OUT="$OUT/$RAW" BENCH_KERNEL="$RIG_DIR/l2/vmlinuz" BENCH_INITRD="$tmp/initramfs.cpio" \
        "$@" sh "$HERE/$BENCH-run.sh" >&2
    rm -rf "$tmp"
    report "$OUT/$RAW" 0
}

# report_cmd CMD SRC [--out DIR] [--strict]: the from-log and report commands.
# from-log is the rig's check (scenarios/bench-$BENCH.host.sh): always strict.
report_cmd() {
    local cmd=$1 src strict=0
    shift
    [ $# -ge 1 ] || usage
    src=$1
    shift
    while [ $# -gt 0 ]; do
        case $1 in
            --out) [ $# -ge 2 ] || usage; OUT=$2; shift ;;
            --strict) strict=1 ;;
            *) usage ;;
        esac
        shift
    done
    [ "$cmd" = report ] || strict=1
    [ "$cmd" = report ] || src=$(from_log "$src")
    report "$src" "$strict"
}

# rig_cmd: runs the rig scenario bench-$BENCH with the report in $OUT.
rig_cmd() {
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    BENCH_REPORT_DIR=$OUT exec "$ROOT/scripts/rig/run.sh" "bench-$BENCH"
}

# bench_main COMMAND ARGS...: the script's commands (see its Usage); rig_mode
# and host_mode are the script's own.
bench_main() {
    [ $# -gt 0 ] || usage
    local cmd=$1
    shift
    case $cmd in
        rig) rig_mode "$@" ;;
        from-log | report) report_cmd "$cmd" "$@" ;;
        host) host_mode "$@" ;;
        *) usage ;;
    esac
}
