#!/bin/sh
# Scenario pci (L2 side): the host bridge and the virtio-net NIC are on the
# bus, and the NIC's BAR 0 lies in a root-bridge window of /proc/iomem.
. /rig/lib.sh
dev=/sys/bus/pci/devices
for d in "$dev"/*; do
    echo "RIG-L2: pci ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") class $(cat "$d/class")"
done
[ "$(cat $dev/0000:00:00.0/class 2>/dev/null)" = 0x060000 ] || fail "no host bridge at 00:00.0"
nic=0000:00:01.0
[ "$(cat $dev/$nic/vendor):$(cat $dev/$nic/device)" = 0x1af4:0x1041 ] || fail "no virtio-net at $nic"
read -r start end _ < $dev/$nic/resource
echo "RIG-L2: bar $nic 0 $start"
[ "$((start))" != 0 ] || fail "BAR 0 of $nic is unassigned"
grep -i "pci bus 0000:00" /proc/iomem | sed 's/^/RIG-L2: iomem /'
inside=0
for w in $(grep -i "pci bus 0000:00" /proc/iomem | sed 's/^ *\([0-9a-f]*\)-\([0-9a-f]*\) .*/\1:\2/'); do
    lo=$((0x${w%:*})) hi=$((0x${w#*:}))
    [ "$((start))" -ge "$lo" ] && [ "$((end))" -le "$hi" ] && inside=1
done
[ $inside = 1 ] || fail "BAR 0 ($start-$end) is not inside a PCI Bus 0000:00 window"
grep -q "$(printf '%x' "$((start))")-.* : $nic" /proc/iomem || fail "BAR 0 is not claimed by $nic in /proc/iomem"
echo "RIG-L2: pci checks passed"
