#!/bin/bash
# Storage benchmark: the same guest and the same fio jobs (4 KiB random reads,
# 1 MiB sequential reads and writes, O_DIRECT) on an assigned NVMe controller
# and on emulated disks, one guest boot per configuration, plus a CPU-bound
# loop natively and in each guest (see blk-run.sh and blk-guest.sh):
#   nvme-passthrough       the NVMe controller assigned by vfio-vmm (run --device)
#   virtio-blk             vfio-vmm's virtio-blk (--disk path=DISK,direct=on)
#   qemu-virtio-blk        QEMU's virtio-blk on DISK (cache=none)  (needs qemu-system-x86_64)
#   qemu-nvme              QEMU's emulated NVMe on DISK (cache=none)
#   qemu-nvme-passthrough  the NVMe controller assigned by QEMU's vfio-pci
# Writes blk.json, blk.md and blk.svg (vfio-vmm bench report) into --out.
#
# Usage:
#   scripts/bench/blk.sh rig [--long] [--time S] [--reps N] [--out DIR]
#       run the rig scenario bench-blk (nested; RIG_DIR as for run.sh). Its
#       shortest setting (2 s per fio job, one repetition) is what CI runs;
#       --long: 30 s per job, 3 repetitions (about 30 minutes); --time and
#       --reps set those two
#   scripts/bench/blk.sh host [--device BDF] [--disk PATH] [options]
#       on a real host, as root. BDF is an NVMe controller already on vfio-pci
#       (vfio-vmm host bind BDF); PATH is a file or block device behind the
#       emulated disks, opened with O_DIRECT by both VMMs. fio OVERWRITES the
#       first --size MiB of both. Options: --configs LIST (comma-separated),
#       --time S (10), --reps N (3), --size MIB (1024), --qd N (8, random
#       reads), --cpu-mib N (256), --cpus N (1), --memory MIB (256), --out DIR,
#       --long (--time 30 --reps 5)
#   scripts/bench/blk.sh from-log LOG [--out DIR]
#       extract the RIG-BENCH results of a rig log and write the report; fails
#       unless every configuration but nvme-passthrough has numbers (the rig's
#       bench-blk host step)
#   scripts/bench/blk.sh report RAWDIR [--out DIR] [--strict]
#       write the report from a directory of raw records
# The report needs a vfio-vmm with `bench report`: $VFIO_VMM, else the rig's
# $RIG_DIR/l1/vfio-vmm, else `cargo build --release`. Default --out: target/bench.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG_DIR=${RIG_DIR:-$ROOT/target/rig}
OUT=${BENCH_REPORT_DIR:-$ROOT/target/bench}
# What --strict (and the rig) require: nvme-passthrough may fail with its reason shown.
REQUIRE=virtio-blk,qemu-virtio-blk,qemu-nvme,qemu-nvme-passthrough

say() { echo "bench-blk: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { awk '/^# Usage:/,/^# The report needs/' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# vmm_bin: prints a vfio-vmm whose `bench report` knows the storage records.
vmm_bin() {
    local b
    for b in "${VFIO_VMM:-}" "$RIG_DIR/l1/vfio-vmm"; do
        [ -n "$b" ] && [ -x "$b" ] && "$b" bench report --help 2>&1 | grep -q blk.json && { echo "$b"; return; }
    done
    [ -z "${VFIO_VMM:-}" ] || die "VFIO_VMM=$VFIO_VMM has no 'bench report' for storage results"
    say "building vfio-vmm (cargo build --release) for the report"
    (cd "$ROOT" && cargo build --release -q -p vfio-vmm --bin vfio-vmm >&2) || die "cargo build failed"
    b=${CARGO_TARGET_DIR:-$ROOT/target}/release/vfio-vmm
    "$b" bench report --help 2>&1 | grep -q blk.json || die "$b has no 'bench report' for storage results"
    echo "$b"
}

# report RAWDIR STRICT: write and check the report, print its tables.
report() {
    local raw=$1 strict=$2 bin reps f args=()
    bin=$(vmm_bin)
    reps=$(sed -n 's/^reps=//p' "$raw/setup.txt" 2> /dev/null || true)
    [ "$strict" = 1 ] && args+=(--strict --min-reps "${reps:-1}" --require "$REQUIRE")
    local err
    err=$("$bin" bench report --input "$raw" --out "$OUT" "${args[@]}" 2>&1 > /dev/null) ||
        die "${err#vfio-vmm: } (raw records in $raw, report in $OUT)"
    for f in blk.json blk.md blk.svg; do
        [ -s "$OUT/$f" ] || die "the report wrote no $OUT/$f"
    done
    grep -q '<svg' "$OUT/blk.svg" || die "$OUT/blk.svg is not an SVG document"
    grep -E '^\||^vfio-vmm' "$OUT/blk.md"
    say "report: $OUT/blk.md, $OUT/blk.json, $OUT/blk.svg"
}

# from_log LOG: RIG-BENCH lines ("FILE KEY=VALUE") -> $OUT/raw-blk/FILE
from_log() {
    local log=$1 raw=$OUT/raw-blk file line
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
    local device="" disk="" configs="" secs=10 reps=3 size=1024 qd=8 cpu_mib=256 cpus=1 mem=256
    while [ $# -gt 0 ]; do
        case $1 in
            --long) secs=30 reps=5; shift; continue ;;
            --device) device=$2 ;;
            --disk) disk=$2 ;;
            --configs) configs=${2//,/ } ;;
            --time) secs=$2 ;;
            --reps) reps=$2 ;;
            --size) size=$2 ;;
            --qd) qd=$2 ;;
            --cpu-mib) cpu_mib=$2 ;;
            --cpus) cpus=$2 ;;
            --memory) mem=$2 ;;
            --out) OUT=$2 ;;
            *) usage ;;
        esac
        [ $# -ge 2 ] || usage
        shift 2
    done
    [ "$(id -u)" = 0 ] || die "host mode needs root (KVM, VFIO)"
    [ -c /dev/kvm ] || die "no /dev/kvm"
    if [ -n "$device" ]; then
        [[ $device == *:*:*.* ]] || device=0000:$device
        [ "$(basename "$(readlink "/sys/bus/pci/devices/$device/driver" 2> /dev/null)")" = vfio-pci ] ||
            die "$device is not bound to vfio-pci: run 'vfio-vmm host bind $device' first"
    else
        say "no --device: nvme-passthrough and qemu-nvme-passthrough will be skipped"
    fi
    if [ -n "$disk" ]; then
        [ -e "$disk" ] || die "--disk $disk does not exist"
    else
        say "no --disk: virtio-blk, qemu-virtio-blk and qemu-nvme will be skipped"
    fi
    grep -q '\[never\]' /sys/kernel/mm/transparent_hugepage/enabled 2> /dev/null ||
        say "transparent huge pages are not 'never': QEMU may back guest RAM with 2 MiB pages, vfio-vmm does not"
    local vmm tmp
    vmm=$(vmm_bin)
    tmp=$(mktemp -d)
    # The guest: the rig's Debian kernel, busybox + nvme/virtio modules + fio, blk-guest.sh as its script.
    printf '#!/bin/sh\nexit 0\n' > "$tmp/no-vmm"
    chmod +x "$tmp/no-vmm"
    RIG_VMM_BIN=$tmp/no-vmm RIG_DIR=$RIG_DIR "$ROOT/scripts/rig/build.sh" || die "building the guest failed"
    mkdir -p "$tmp/initrd/rig"
    install -m 755 "$ROOT/scripts/rig/l2-init" "$tmp/initrd/init"
    install -m 755 "$HERE/blk-guest.sh" "$tmp/initrd/rig/l2.sh"
    (cd "$tmp/initrd" && find . | cpio -o -H newc -R 0:0 --quiet) |
        cat "$RIG_DIR/l2/base.cpio" "$RIG_DIR/l2/tools.cpio" "$RIG_DIR/l1/fio.cpio" - > "$tmp/initramfs.cpio"
    rm -rf "$OUT/raw-blk"
    mkdir -p "$OUT/raw-blk" "$tmp/rig"
    say "running: configs ${configs:-all}, ${secs}s per fio job, $reps repetitions"
    PATH=$(dirname "$vmm"):$PATH RIG_TMP=$tmp/rig BENCH_RIG_LIB=$ROOT/scripts/rig/lib.sh \
        BENCH_OUT=$OUT/raw-blk BENCH_KERNEL=$RIG_DIR/l2/vmlinuz BENCH_INITRD=$tmp/initramfs.cpio \
        BENCH_GUEST=$HERE/blk-guest.sh BENCH_CONFIGS=$configs BENCH_DEVICE=$device BENCH_DISK=$disk \
        BENCH_TIME=$secs BENCH_REPS=$reps BENCH_SIZE=$size BENCH_QD=$qd BENCH_CPU_MIB=$cpu_mib \
        BENCH_CPUS=$cpus BENCH_MEM=$mem sh "$HERE/blk-run.sh" >&2
    rm -rf "$tmp"
    report "$OUT/raw-blk" 0
}

[ $# -gt 0 ] || usage
cmd=$1
shift
case $cmd in
    rig)
        kargs="" secs=2 reps=1
        while [ $# -gt 0 ]; do
            case $1 in
                --long) kargs="$kargs bench.long=1" secs=30 reps=3 ;;
                --time | --reps)
                    { [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]]; } || usage
                    kargs="$kargs bench.${1#--}=$2"
                    if [ "$1" = --time ]; then secs=$2; else reps=$2; fi
                    shift ;;
                --out) [ $# -ge 2 ] || usage; OUT=$2; shift ;;
                *) usage ;;
            esac
            shift
        done
        # L1's time: about 30 s per guest boot and 3 fio jobs of (secs + 10) s per repetition, 5 guests.
        [ -z "$kargs" ] || export RIG_L1_KARGS="${RIG_L1_KARGS:-}$kargs" RIG_TIMEOUT=${RIG_TIMEOUT:-$((120 + 5 * (30 + reps * 3 * (secs + 10))))}
        mkdir -p "$OUT"
        OUT=$(cd "$OUT" && pwd)
        BENCH_REPORT_DIR=$OUT exec "$ROOT/scripts/rig/run.sh" bench-blk ;;
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
        # from-log is the rig's check (scenarios/bench-blk.host.sh): always strict.
        [ "$cmd" = report ] || strict=1
        [ "$cmd" = report ] || src=$(from_log "$src")
        report "$src" "$strict" ;;
    host) host_mode "$@" ;;
    *) usage ;;
esac
