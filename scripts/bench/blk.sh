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

BENCH=blk RAW=raw-blk SHOW='^\||^vfio-vmm' MIN_REPS=1
# What --strict (and the rig) require: nvme-passthrough may fail with its reason shown.
REQUIRE=virtio-blk,qemu-virtio-blk,qemu-nvme,qemu-nvme-passthrough
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

host_mode() {
    local device="" disk="" configs="" secs=10 reps=3 size=1024 qd=8 cpu_mib=256 cpus=1 mem=256
    while [ $# -gt 0 ]; do
        case $1 in
            --long) secs=30 reps=5; shift; continue ;;
            --device) device=$2 ;;
            --disk) disk=$2 ;;
            --size) size=$2 ;;
            --qd) qd=$2 ;;
            --cpu-mib) cpu_mib=$2 ;;
            *) host_opt "$1" "${2:-}" ;;
        esac
        [ $# -ge 2 ] || usage
        shift 2
    done
    [ "$(id -u)" = 0 ] || die "host mode needs root (KVM, VFIO)"
    [ -c /dev/kvm ] || die "no /dev/kvm"
    if [ -n "$device" ]; then
        device=$(vfio_device "$device")
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
    say "running: configs ${configs:-all}, ${secs}s per fio job, $reps repetitions"
    # The guest: the rig's Debian kernel, busybox + nvme/virtio modules + fio, blk-guest.sh as its script.
    host_run fio.cpio \
        "BENCH_GUEST=$HERE/blk-guest.sh" "BENCH_CONFIGS=$configs" "BENCH_DEVICE=$device" "BENCH_DISK=$disk" \
        "BENCH_TIME=$secs" "BENCH_REPS=$reps" "BENCH_SIZE=$size" "BENCH_QD=$qd" "BENCH_CPU_MIB=$cpu_mib" \
        "BENCH_CPUS=$cpus" "BENCH_MEM=$mem"
}

# rig_mode [--long] [--time S] [--reps N] [--out DIR]
rig_mode() {
    local kargs="" secs=2 reps=1
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
    rig_cmd
}

bench_main "$@"
