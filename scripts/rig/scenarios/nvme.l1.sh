#!/bin/sh
# Scenario nvme: QEMU's emulated NVMe controller (device set nvme: 64 I/O
# queue pairs, 65 MSI-X vectors, on a raw file on the host) bound to vfio-pci
# in L1 and passed to L2, which drives it with Linux's nvme driver on at least
# 16 MSI-X vectors and writes, reads back and compares a random pattern with
# O_DIRECT (nvme.l2.sh; the host step compares it with the backing file).
# The controller's MSI-X table and PBA share BAR0 with its registers and
# doorbells: vfio-vmm must mmap the register and doorbell pages (BAR0 shows
# 0 trapped reads and writes: MSI-X table/PBA accesses are counted apart) and
# relay no interrupt itself.
. /rig/lib.sh
nvme=$(rig_find_pci 0x1b36 0x0010)
[ -n "$nvme" ] || rig_fail "no QEMU NVMe controller in L1: see device set nvme in scenarios.table"
rig_bind_vfio "$nvme" > /dev/null || rig_fail "cannot bind $nvme to vfio-pci"
# Linux's nvme takes one vector for the admin queue, one per possible CPU
# and one per write queue, and refuses more write queues than possible CPUs
# (nvme.write_queues=12 with 4 CPUs: "invalid for parameter"). So L2 gets 8
# vCPUs, 4 times L1's 2, and 8 write queues: 1 + 8 + 8 = 17 vectors.
cpus=8 write_queues=8 want=16
vectors=65 # the controller's MSI-X table (QEMU's msix_qsize), all wired to VFIO
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} nvme.write_queues=$write_queues rig.vectors=$want"
RUST_LOG=${RIG_VMM_LOG:-info} rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus $cpus --memory 256M --device "$nvme" --cmdline "$cmdline" || rig_fail "$RIG_WHY"
out=$RIG_TMP/vfio-vmm.out
grep "^$nvme " "$out" | sed 's/^/RIG-L1: report: /'
bar0=$(grep "^$nvme BAR0: " "$out")
[ -n "$bar0" ] || rig_fail "vfio-vmm printed no report for BAR0 of $nvme"
case $bar0 in
    *" 0 B mapped"* | *" 0 slot(s)"*) rig_fail "BAR0 (registers and doorbells) was not mmapped: $bar0" ;;
    *"trapped accesses: 0 reads, 0 writes") ;;
    *) rig_fail "guest accesses to BAR0 (registers, doorbells) trapped: $bar0" ;;
esac
# The report gives the mode at exit (INTx: L2's driver freed its vectors at
# power-off); the switch to MSI-X is in the log.
rig_saw vfio-vmm "$nvme: interrupts now MSI-X ($vectors vectors)" || rig_fail "vfio-vmm never switched $nvme to MSI-X with $vectors vectors"
irqs=$(grep "^$nvme interrupts: " "$out")
case $irqs in
    *"relayed by vfio-vmm: 0 "*) ;;
    *) rig_fail "vfio-vmm relayed interrupts itself: $irqs" ;;
esac
used=$(sed -n 's/.*RIG-L2: nvme vectors: \(.*\)/\1/p' "$out")
pattern=$(sed -n 's/.*RIG-L2: nvme pattern \(.*\)/\1/p' "$out")
rig_out "nvme: L2 on $cpus vCPUs with nvme.write_queues=$write_queues: vectors $used; $bar0"
rig_out "nvme: $irqs"
# For the host step: where L2 wrote its pattern, and its md5.
rig_out "nvme pattern $pattern"
