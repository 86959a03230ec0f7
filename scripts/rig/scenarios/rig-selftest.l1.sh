#!/bin/sh
# Scenario rig-selftest: the boot checks with L1's QEMU/KVM as the VMM instead of
# vfio-vmm. Tells a broken rig apart from a broken vfio-vmm.
. /rig/lib.sh
token=$(rig_token)
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.cpus=2 rig.mem=256 rig.token=$token"
rig_vmm qemu qemu-system-x86_64 -machine q35,accel=kvm -cpu host -smp 2 -m 256M \
    -nodefaults -no-user-config -nographic -serial stdio -monitor none -no-reboot \
    -kernel "$RIG_L2_KERNEL" -initrd "$RIG_L2_INITRD" -append "$cmdline" || rig_fail "$RIG_WHY"
grep "RIG-L2: cmdline " "$RIG_TMP/qemu.out" | grep -qF -- "$cmdline" ||
    rig_fail "L2's /proc/cmdline does not contain the -append given"
rig_say "L2 reached init $(rig_secs "$RIG_T_INIT")s after exec"
