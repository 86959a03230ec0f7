#!/bin/sh
# Benchmark bench-boot: boot the same L2 (kernel, initramfs, 2 vCPUs, 256M) with
# vfio-vmm and with L1's QEMU/KVM; print exec-to-L2-init times and memory use.
# Never fails on speed, only if a VMM does not boot L2.
. /rig/lib.sh
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}"
# shellcheck disable=SC2034 # used by rig_rss
RIG_GUEST_MIB=256
why=""
row() { printf '%-10s %18s %18s %10s\n' "$@"; }
mib() { if [ -n "$1" ]; then printf '%d.%d' $(($1 / 1024)) $(($1 % 1024 * 10 / 1024)); else printf n/a; fi; }

bench() { # bench TAG CMD...: boot L2, append a table row to $RIG_TMP/rows
    tag=$1
    rig_vmm "$@" || why="${why:+$why; }$RIG_WHY"
    read -r hwm own _ < "$RIG_TMP/$tag.rss" || hwm="" own="" # kB, see rig_rss
    t=n/a
    [ -z "$RIG_T_INIT" ] || t=$(rig_secs "$RIG_T_INIT")
    row "$tag" "$t" "$(mib "$own")" "$(mib "$hwm")" >> "$RIG_TMP/rows"
}

bench vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 2 --memory 256M --cmdline "$cmdline"
t_vmm=$RIG_T_INIT
bench qemu qemu-system-x86_64 -machine q35,accel=kvm -cpu host -smp 2 -m 256M \
    -nodefaults -no-user-config -nographic -serial stdio -monitor none -no-reboot \
    -kernel "$RIG_L2_KERNEL" -initrd "$RIG_L2_INITRD" -append "$cmdline"
t_qemu=$RIG_T_INIT

{
    echo "bench-boot: L2 with 2 vCPUs, 256M, same kernel+initramfs+cmdline, one L1 (TCG) run"
    row VMM 'exec->L2 init s' 'RSS w/o guest MiB' 'VmHWM MiB'
    cat "$RIG_TMP/rows"
    if [ -n "$t_vmm" ] && [ -n "$t_qemu" ]; then
        echo "qemu/vfio-vmm time ratio: $(awk -v a="$t_qemu" -v b="$t_vmm" 'BEGIN {printf "%.2f", a / b}')"
    fi
} | while IFS= read -r line; do rig_out "$line"; done
[ -z "$why" ] || rig_fail "$why"
