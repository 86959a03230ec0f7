#!/bin/sh
# Example for scenario custom: L1's QEMU passes an e1000e through VFIO to L2.
#   RIG_L1_DEVICES="-device e1000e,romfile=,netdev=n0 -netdev hubport,id=n0,hubid=0" \
#   RIG_L1_SCRIPT=scripts/rig/examples/qemu-passthrough.l1.sh \
#   RIG_L2_SCRIPT=scripts/rig/examples/qemu-passthrough.l2.sh scripts/rig/run.sh custom
. /rig/lib.sh
bdf=$(rig_find_pci 0x8086 0x10d3)
[ -n "$bdf" ] || rig_fail "no e1000e in L1 (RIG_L1_DEVICES?)"
group=$(rig_bind_vfio "$bdf") || rig_fail "cannot bind $bdf to vfio-pci"
rig_say "$bdf bound to vfio-pci, group $group"
rig_vmm qemu qemu-system-x86_64 -machine q35,accel=kvm -cpu host -smp 1 -m 256M \
    -nodefaults -no-user-config -nographic -serial stdio -monitor none -no-reboot \
    -device vfio-pci,host="$bdf" \
    -kernel "$RIG_L2_KERNEL" -initrd "$RIG_L2_INITRD" -append "console=ttyS0 panic=-1 quiet" ||
    rig_fail "$RIG_WHY"
