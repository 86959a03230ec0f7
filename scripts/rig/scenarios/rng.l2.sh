#!/bin/sh
# Scenario rng (L2 side): virtio_rng is the current hwrng and /dev/hwrng reads.
. /rig/lib.sh
{ modprobe virtio_pci && modprobe virtio_rng; } || fail "cannot load virtio_pci/virtio_rng"
cur=/sys/class/misc/hw_random/rng_current
wait_until 50 grep -q virtio_rng "$cur" || fail "rng_current is '$(cat "$cur")', not virtio_rng"
echo "RIG-L2: rng_current $(cat "$cur"), available: $(cat /sys/class/misc/hw_random/rng_available)"
dd if=/dev/hwrng of=/tmp/rng bs=64 count=4 2> /dev/null || fail "reading /dev/hwrng failed"
n=$(wc -c < /tmp/rng)
[ "$n" = 256 ] || fail "read $n bytes from /dev/hwrng, want 256"
nz=$(od -An -v -tx1 /tmp/rng | tr -s ' ' '\n' | grep -vc '^00$\|^$')
[ "$nz" -gt 200 ] || fail "only $nz of 256 bytes from /dev/hwrng are non-zero"
echo "RIG-L2: /dev/hwrng gave 256 bytes: $(od -An -tx1 -N16 /tmp/rng)..."
