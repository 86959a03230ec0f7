#!/bin/sh
# Scenario pci (L1 side): vfio-vmm gives L2 a virtio-net NIC; L2 (pci.l2.sh)
# reports what its PCI bus holds, and we check that BAR 0 of the NIC is where
# vfio-vmm placed it (Linux kept our placement, no pci= options needed).
. /rig/lib.sh
modprobe tun || rig_fail "modprobe tun failed"
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}"
RUST_LOG=info rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 1 --memory 256M --net tap=vtap0 --cmdline "$cmdline" || rig_fail "$RIG_WHY"
placed=$(sed -n 's/.*PCI 00:01\.0 BAR 0 at \(0x[0-9a-f]*\) size.*/\1/p' "$RIG_TMP/vfio-vmm.out")
[ -n "$placed" ] || rig_fail "vfio-vmm did not log where it placed BAR 0 of 00:01.0"
seen=$(sed -n 's/.*RIG-L2: bar 0000:00:01\.0 0 \(0x[0-9a-f]*\).*/\1/p' "$RIG_TMP/vfio-vmm.out")
[ "$((placed))" = "$((seen))" ] || rig_fail "vfio-vmm placed BAR 0 at $placed but L2 sees it at ${seen:-nothing}"
rig_say "BAR 0 of 00:01.0: placed at $placed by vfio-vmm, seen there by L2"
