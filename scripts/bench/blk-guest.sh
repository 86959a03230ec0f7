#!/bin/sh
# Guest side of the storage benchmark (busybox sh in the benchmark guest; the
# rig's bench-blk.l2.sh is a link to this file). Runs as /rig/l2.sh under
# scripts/rig/l2-init, which reports our exit status as "RIG-L2: exit N".
#
# Kernel command line (set by blk-run.sh):
#   bench.dev=nvme|virtio   the disk's driver: nvme (/dev/nvme0n1) or virtio_blk (/dev/vda)
#   bench.time=S  fio seconds per workload;  bench.reps=N;  bench.size=MIB  the
#   region of the disk fio uses;  bench.qd=N  queue depth of the random reads;
#   bench.cpu=MIB  how much the CPU loop hashes
# First the CPU loop (cpu_loop below), then per repetition three fio jobs on
# the raw disk, O_DIRECT, libaio: 1 MiB sequential writes (queue depth 4),
# 1 MiB sequential reads (4), 4 KiB random reads (bench.qd). Output:
#   RIG-L2: bench-cpu mib=M seconds=S
#   RIG-L2: bench rep=K rr_iops=N rr_p50_us=N rr_p99_us=N sr_kib_s=N sw_kib_s=N
# (fio's own figures: IOPS, completion latency percentiles, bandwidth in KiB/s.)
#
# `blk-guest.sh cpu MIB` runs the CPU loop alone and prints its bench-cpu
# line (without "RIG-L2: "): blk-run.sh runs it natively on the host for the
# baseline.
fail() { echo "RIG-L2: FAIL $*"; exit 1; }

# cpu_loop MIB: prints the seconds sha256sum takes to hash a 4 MiB buffer in
# tmpfs MIB/4 times (a fixed CPU-bound program; /proc/uptime, 10 ms steps).
cpu_loop() {
    dd if=/dev/zero of=/tmp/cpu.buf bs=1M count=4 2> /dev/null || return 1
    n=$(($1 / 4)) i=0
    read -r t0 _ < /proc/uptime
    while [ $i -lt $n ]; do
        sha256sum /tmp/cpu.buf > /dev/null || return 1
        i=$((i + 1))
    done
    read -r t1 _ < /proc/uptime
    rm -f /tmp/cpu.buf
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}'
}

if [ "${1:-}" = cpu ]; then
    s=$(cpu_loop "$2") || { echo "bench-cpu: the CPU loop failed" >&2; exit 1; }
    echo "bench-cpu mib=$2 seconds=$s"
    exit 0
fi

read -r cmdline < /proc/cmdline
arg() { for a in $cmdline; do case $a in "$1"=*) echo "${a#*=}" ;; esac; done; }
kind=$(arg bench.dev) secs=$(arg bench.time) reps=$(arg bench.reps) size=$(arg bench.size)
qd=$(arg bench.qd) cpu=$(arg bench.cpu)
secs=${secs:-2} reps=${reps:-1} size=${size:-256} qd=${qd:-8} cpu=${cpu:-16}
command -v fio > /dev/null || fail "no fio in the guest initramfs"

case $kind in
    nvme) mods=nvme dev=/dev/nvme0n1 ;;
    virtio) mods="virtio_pci virtio_blk" dev=/dev/vda ;;
    *) fail "bench.dev=$kind: want nvme or virtio" ;;
esac
for m in $mods; do modprobe "$m" || fail "cannot load $m"; done
i=0
while [ ! -b $dev ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -b $dev ] || fail "$mods created no $dev"
echo "RIG-L2: $dev ($mods): $(cat "/sys/block/${dev#/dev/}/size") sectors"

s=$(cpu_loop "$cpu") || fail "the CPU loop failed"
echo "RIG-L2: bench-cpu mib=$cpu seconds=$s"

# fio_job NAME RW BS QD: runs one job, prints fio's terse (v3) result line;
# on error, prints the FAIL line to stderr (the console) and exits.
fio_job() {
    fio --name="$1" --filename=$dev --rw="$2" --bs="$3" --iodepth="$4" --ioengine=libaio \
        --direct=1 --size="${size}M" --runtime="$secs" --time_based --percentile_list=50:99 \
        --output-format=terse --terse-version=3 > /tmp/fio.txt 2>&1
    line=$(grep '^3;' /tmp/fio.txt | head -n1)
    err=$(echo "$line" | cut -d';' -f5)
    if [ -z "$line" ] || [ "$err" != 0 ]; then # stderr: our stdout is captured
        fail "fio $1 on $dev: $(grep -v '^3;' /tmp/fio.txt | tail -n 2 | tr '\n' ' ')" >&2
    fi
    echo "$line"
}
# Terse v3 fields: 7 read KiB/s, 8 read IOPS, 18-19 read completion latency
# percentiles ("50.000000%=USEC", as --percentile_list asks), 48 write KiB/s.
rep=1
while [ "$rep" -le "$reps" ]; do
    sw=$(fio_job seqwrite write 1M 4) || exit 1
    sr=$(fio_job seqread read 1M 4) || exit 1
    rr=$(fio_job randread randread 4k "$qd") || exit 1
    set -- "$(echo "$rr" | cut -d';' -f8)" "$(echo "$rr" | cut -d';' -f18)" "$(echo "$rr" | cut -d';' -f19)"
    echo "RIG-L2: bench rep=$rep rr_iops=$1 rr_p50_us=${2#*=} rr_p99_us=${3#*=}" \
        "sr_kib_s=$(echo "$sr" | cut -d';' -f7) sw_kib_s=$(echo "$sw" | cut -d';' -f48)"
    rep=$((rep + 1))
done
