#!/bin/sh
# Scenario boot (L1 side): vfio-vmm boots L2 with 2 vCPUs and 256M; L2
# (boot.l2.sh) checks what it sees against rig.cpus/rig.mem on its command line.
# BOOT_MEMORY_OPTS (e.g. ",hugepages=on") is appended to --memory 256M,
# BOOT_VMM_OPTS (e.g. "--pit reinject=off") added to vfio-vmm's options, and
# BOOT_KERNEL (default $RIG_L2_KERNEL, the bzImage) is the kernel.
. /rig/lib.sh
token=$(rig_token)
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.cpus=2 rig.mem=256 rig.token=$token"
# shellcheck disable=SC2086 # BOOT_VMM_OPTS: words
rig_vmm vfio-vmm vfio-vmm run --kernel "${BOOT_KERNEL:-$RIG_L2_KERNEL}" --initramfs "$RIG_L2_INITRD" \
    --cpus 2 --memory "256M${BOOT_MEMORY_OPTS:-}" ${BOOT_VMM_OPTS:-} --cmdline "$cmdline" || rig_fail "$RIG_WHY"
grep "RIG-L2: cmdline " "$RIG_TMP/vfio-vmm.out" | grep -qF -- "$cmdline" ||
    rig_fail "L2's /proc/cmdline does not contain the --cmdline given"
rig_say "L2 reached init $(rig_secs "$RIG_T_INIT")s after exec; vfio-vmm exited after $(rig_secs "$RIG_T_END")s"
