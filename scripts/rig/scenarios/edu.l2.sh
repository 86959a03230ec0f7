#!/bin/sh
# Scenario edu (L2 side): find the passed-through edu, give it to
# uio_pci_generic (INTx) and run edu-probe: id, MMIO, factorial, 100
# interrupts, DMA round trip.
. /rig/lib.sh
edu=$(find_pci 0x1234 0x11e8)
[ -n "$edu" ] || fail "no edu device on L2's PCI bus"
echo "RIG-L2: edu at $edu, BAR0 $(head -n1 /sys/bus/pci/devices/$edu/resource)"
modprobe uio_pci_generic || fail "cannot load uio_pci_generic"
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id
i=0
while [ ! -d "/sys/bus/pci/devices/$edu/uio" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
uio=$(ls "/sys/bus/pci/devices/$edu/uio" 2>/dev/null)
[ -n "$uio" ] || fail "uio_pci_generic did not take $edu (no INTx masking support?)"
edu-probe "$edu" "/dev/$uio" 100 > /tmp/edu-probe.txt 2>&1
rc=$?
sed 's/^/RIG-L2: /' /tmp/edu-probe.txt
grep -E "uio|edu" /proc/interrupts | sed 's/^/RIG-L2: irq /'
exit "$rc"
