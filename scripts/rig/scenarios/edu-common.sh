#!/bin/sh
# edu passthrough (L1 side), sourced by the edu scenarios: binds QEMU's edu
# to vfio-pci and defines edu_run TAG, one vfio-vmm run of L2 with edu, after
# which vfio-vmm's report must show no trapped access to the mmapped BAR0 and
# no interrupt relayed by vfio-vmm. L2 (edu.l2.sh) drives MMIO, INTx and DMA.
. /rig/lib.sh
bdf=$(rig_find_pci 0x1234 0x11e8)
[ -n "$bdf" ] || rig_fail "no edu device in L1"
rig_bind_vfio "$bdf" > /dev/null || rig_fail "cannot bind $bdf to vfio-pci"
edu_run() { # edu_run TAG: one vfio-vmm run of L2 with edu; fails the scenario on error
    cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}"
    RUST_LOG=info rig_vmm "$1" vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
        --cpus 1 --memory 256M --device "$bdf" --cmdline "$cmdline" || rig_fail "$RIG_WHY"
    grep "^$bdf " "$RIG_TMP/$1.out" | sed 's/^/RIG-L1: report: /'
    rig_saw "$1" "$bdf BAR0: " || rig_fail "vfio-vmm printed no report for BAR0 of $bdf"
    rig_saw "$1" "$bdf BAR0: 32-bit memory BAR, 1 MiB mapped in 1 slot(s), trapped accesses: 0 reads, 0 writes" ||
        rig_fail "BAR0 of $bdf was not fully mmapped, or accesses to it trapped: $(grep "^$bdf BAR0" "$RIG_TMP/$1.out")"
    rig_saw "$1" "relayed by vfio-vmm: 0 " || rig_fail "vfio-vmm relayed interrupts itself: $(grep "^$bdf interrupts" "$RIG_TMP/$1.out")"
}
