#!/bin/sh
# Scenario msi: MSI (not MSI-X) through vfio-vmm. QEMU's ICH9 HD Audio is
# passed to L2, whose snd_hda_intel drives its codec over MSI (L2 side:
# msi.l2.sh). vfio-vmm must have switched the device to MSI and relayed no
# interrupt itself. (QEMU's e1000e cannot show this: its MSI self-test fails
# in the rig whatever the VMM; see its skip reason in scripts/rig/scenarios.table.)
. /rig/lib.sh
hda=$(rig_find_pci 0x8086 0x293e)
[ -n "$hda" ] || rig_fail "no ICH9 HD Audio in L1"
rig_bind_vfio "$hda" > /dev/null || rig_fail "cannot bind $hda to vfio-pci"
RUST_LOG=${RIG_VMM_LOG:-info} rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 2 --memory 256M --device "$hda" --cmdline "console=ttyS0 panic=-1 quiet" || rig_fail "$RIG_WHY"
grep "^$hda " "$RIG_TMP/vfio-vmm.out" | sed 's/^/RIG-L1: report: /'
rig_saw vfio-vmm "interrupts now MSI" || rig_fail "vfio-vmm never switched $hda to MSI"
rig_saw vfio-vmm "relayed by vfio-vmm: 0 " || rig_fail "vfio-vmm relayed interrupts itself"
