#!/bin/sh
# Scenario disk-direct (L2 side): write 4 MiB of random data at 1 MiB of
# /dev/vda, sync, drop the page cache, read them back with O_DIRECT, compare.
. /rig/lib.sh
for m in virtio_pci virtio_blk; do modprobe $m || fail "cannot load $m"; done
wait_until 50 test -b /dev/vda || fail "no /dev/vda"
dd if=/dev/urandom of=/tmp/data bs=64k count=64 2> /dev/null || fail "no random data"
sum=$(md5sum < /tmp/data)
sum=${sum%% *}
echo "RIG-L2: sample"
dd if=/tmp/data of=/dev/vda bs=64k seek=16 conv=fsync 2> /dev/null || fail "writing /dev/vda failed"
echo 3 > /proc/sys/vm/drop_caches
back=$(dd if=/dev/vda bs=64k skip=16 count=64 iflag=direct 2> /dev/null | md5sum)
[ "${back%% *}" = "$sum" ] || fail "read back md5 ${back%% *}, wrote $sum"
echo "RIG-L2: wrote 4194304 at 1048576 md5 $sum, read back equal; logical block $(cat /sys/block/vda/queue/logical_block_size)"
