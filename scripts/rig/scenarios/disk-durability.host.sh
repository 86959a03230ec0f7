#!/bin/bash
# Scenario disk-durability, host step: LOG is the scenario's part of L1's log.
# L1 was killed (SIGKILL to its QEMU) right after L2 reported its writes; the
# data L2 flushed must be in the file behind L1's disk. The unflushed control
# region is reported, not judged: it is expected to be lost.
set -euo pipefail
log=$1
img=$RIG_DIR/drives/l1disk/l1disk.img
die() { echo "$*" >&2; exit 1; }
grep -q "killed on request (RIG-KILL-L1: disk-durability)" "$log" ||
    die "L1 was not killed on the scenario's request (see the last line of $log)"
[ -f "$img" ] || die "no $img (device set l1disk)"
# region OFFSET LENGTH: md5 of those bytes of the image
region() { dd if="$img" bs=1M iflag=skip_bytes,count_bytes skip="$1" count="$2" status=none | md5sum | cut -d' ' -f1; }
read -r _ _ off len sum < <(grep '^RIG-OUT: flushed ' "$log") || die "no 'flushed' line in $log"
got=$(region "$off" "$len")
[ "$got" = "$sum" ] || die "flushed data lost: $len bytes at $off in $img have md5 $got, L2 wrote $sum"
echo "flushed: $len bytes at $off survived L1's SIGKILL (md5 $sum)"
read -r _ _ off len sum < <(grep '^RIG-OUT: unflushed ' "$log") || die "no 'unflushed' line in $log"
if [ "$(region "$off" "$len")" = "$sum" ]; then
    echo "control, unflushed: $len bytes at $off survived too (L1 wrote them back on its own: this run could not tell FLUSH from luck)"
else
    echo "control, unflushed: $len bytes at $off were lost, as expected without FLUSH"
fi
