#!/bin/sh
# Scenario host: `vfio-vmm host` on L1's real sysfs and vfio-pci. check fails
# while e1000e holds the NIC and says how to fix it; bind makes check pass and
# vfio-vmm assigns the NIC to L2; unbind gives it back to e1000e (the interface
# reappears); list --json shows L1's IOMMU groups (parsed on the host, host.host.sh).
. /rig/lib.sh
nic=$(rig_find_pci 0x8086 0x10d3)
[ -n "$nic" ] || rig_fail "no e1000e in L1"
modprobe e1000e || rig_fail "modprobe e1000e failed"
i=0
while [ ! -d "/sys/bus/pci/devices/$nic/net" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ifc=$(ls "/sys/bus/pci/devices/$nic/net" 2> /dev/null)
[ -n "$ifc" ] || rig_fail "e1000e did not create an interface for $nic"
rig_say "$nic is $ifc on e1000e"

vfio-vmm host check --memory 256M "$nic" > "$RIG_TMP/check1.txt" 2>&1 && rig_fail "host check passed while e1000e holds $nic"
sed 's/^/RIG-L1: check before bind: /' "$RIG_TMP/check1.txt"
grep -q "host bind" "$RIG_TMP/check1.txt" || rig_fail "host check does not say how to fix it"

vfio-vmm host bind "$nic" 2>&1 | sed 's/^/RIG-L1: bind: /'
[ "$(basename "$(readlink "/sys/bus/pci/devices/$nic/driver")")" = vfio-pci ] || rig_fail "host bind left $nic off vfio-pci"
vfio-vmm host check --memory 256M "$nic" > "$RIG_TMP/check2.txt" 2>&1 ||
    rig_fail "host check still fails after bind: $(grep '^fail' "$RIG_TMP/check2.txt" | head -n1)"
grep "$nic\|group" "$RIG_TMP/check2.txt" | sed 's/^/RIG-L1: check after bind: /'

rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --memory 256M --device "$nic" --cmdline "console=ttyS0 panic=-1 quiet" || rig_fail "$RIG_WHY"
rig_saw vfio-vmm "RIG-L2: e1000e present" || rig_fail "L2 did not see the assigned e1000e"

vfio-vmm host unbind "$nic" 2>&1 | sed 's/^/RIG-L1: unbind: /'
i=0
while [ ! -d "/sys/bus/pci/devices/$nic/net" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ "$(basename "$(readlink "/sys/bus/pci/devices/$nic/driver")")" = e1000e ] || rig_fail "host unbind did not give $nic back to e1000e"
[ -n "$(ls "/sys/bus/pci/devices/$nic/net" 2> /dev/null)" ] || rig_fail "the interface of $nic did not reappear"
rig_say "$nic is back on e1000e as $(ls "/sys/bus/pci/devices/$nic/net")"

vfio-vmm host list --json > "$RIG_TMP/list.json" || rig_fail "host list --json failed"
echo "RIG-JSON: $(tr -d '\n' < "$RIG_TMP/list.json")"
