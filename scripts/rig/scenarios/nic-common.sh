#!/bin/sh
# NIC passthrough (L1 side), sourced by nic-msix/nic-msi/nic-intx with
# NIC_INTMODE set (e1000e IntMode: 2 MSI-X, 1 MSI, 0 INTx). The e1000e goes to
# L2 through vfio-vmm; the e1000 stays in L1 (169.254.2.1) on the same QEMU
# hub. L1 and L2 (169.254.2.2) ping each other 1000 times; vfio-vmm's report
# must show no trapped access to BAR0 and no interrupt relayed by vfio-vmm.
. /rig/lib.sh
rig_nic_pair 169.254.2.1/16
nic=$RIG_NIC
# L1's pings run beside rig_vmm's reading of the console, so that what L2 and
# vfio-vmm print meanwhile is seen (and timestamped) as it happens.
rig_on_sample() {
    ping -c 1000 -A -q -W 5 -w 90 169.254.2.2 > "$RIG_TMP/l1-ping.txt" 2>&1 &
    l1_ping=$!
}
l1_ping=""
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.intmode=$NIC_INTMODE rig.addr=169.254.2.2 rig.peer=169.254.2.1"
RUST_LOG=${RIG_VMM_LOG:-info} rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 2 --memory 256M --device "$nic" --cmdline "$cmdline" || rig_fail "$RIG_WHY"
[ -z "$l1_ping" ] || wait "$l1_ping"
sed 's/^/RIG-L1: ping L2: /' "$RIG_TMP/l1-ping.txt" 2>/dev/null
grep "^$nic " "$RIG_TMP/vfio-vmm.out" | sed 's/^/RIG-L1: report: /'
grep -q "1000 packets received, 0% packet loss" "$RIG_TMP/l1-ping.txt" ||
    rig_fail "L1 -> L2 ping: $(grep -h 'packet' "$RIG_TMP/l1-ping.txt" || echo 'no result')"
rig_saw vfio-vmm "$nic BAR0: " || rig_fail "vfio-vmm printed no report for $nic"
grep "^$nic BAR0: " "$RIG_TMP/vfio-vmm.out" | grep -q "trapped accesses: 0 reads, 0 writes" ||
    rig_fail "guest accesses to BAR0 trapped: $(grep "^$nic BAR0" "$RIG_TMP/vfio-vmm.out")"
rig_saw vfio-vmm "relayed by vfio-vmm: 0 " || rig_fail "vfio-vmm relayed interrupts itself"
