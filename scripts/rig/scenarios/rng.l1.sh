#!/bin/sh
# Scenario rng: vfio-vmm's virtio-rng (--rng, from /dev/urandom); L2 (rng.l2.sh)
# finds it as its current hwrng and reads /dev/hwrng.
. /rig/lib.sh
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}"
rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 1 --memory 256M --rng --cmdline "$cmdline" || rig_fail "$RIG_WHY"
