#!/bin/sh
# Scenario disk-durability (L2 side): 4 MiB of random data at 1 MiB of
# /dev/vda, written and fsynced (a FLUSH to vfio-vmm), then 4 MiB at 8 MiB
# written with O_DIRECT and no fsync (reaches vfio-vmm, never flushed). It
# reports "flushed|unflushed OFFSET LENGTH MD5", asks L1 to act
# ("RIG-L2: sample") and waits for L1 to be killed.
. /rig/lib.sh
for m in virtio_pci virtio_blk; do modprobe $m || fail "cannot load $m"; done
wait_until 50 test -b /dev/vda || fail "no /dev/vda"
# Without a write-back cache, Linux sends no FLUSH and the test would prove nothing.
[ "$(cat /sys/block/vda/queue/write_cache)" = "write back" ] ||
    fail "vda's write_cache is '$(cat /sys/block/vda/queue/write_cache)': FLUSH not offered"
# put OFFSET-MiB NAME DD-FLAG: 4 MiB of random data at OFFSET MiB, reported as NAME.
put() {
    dd if=/dev/urandom of="/tmp/$2" bs=64k count=64 2> /dev/null || fail "no random data"
    sum=$(md5sum < "/tmp/$2")
    dd if="/tmp/$2" of=/dev/vda bs=64k seek=$(($1 * 16)) "$3" 2> /dev/null || fail "writing the $2 data failed"
    echo "RIG-L2: $2 $(($1 * 1048576)) 4194304 ${sum%% *}"
}
put 1 flushed conv=fsync
put 8 unflushed oflag=direct
echo "RIG-L2: sample"
sleep 600
