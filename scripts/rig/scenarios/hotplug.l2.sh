#!/bin/sh
# Scenario hotplug (L2 side): boots with no assigned device; e1000e is loaded
# so that it binds when the device arrives (ACPI PCI hotplug: acpiphp, built
# into Debian's kernel). Round 1: eth0 appears (vm.add-device), ping L1 1000
# times, eth0 goes (vm.remove-device). Round 2 (replug after L1 used the
# NIC itself): the same, and L2 keeps pinging while the NIC is removed.
# Round 3: the guest ejects the slot itself (echo 0 > slots/N/power). Then
# wait for L1's vmm.shutdown. With rig.vmm=qemu (L1's QEMU, for the
# benchmark line): only round 1's bound, then wait for L1 to stop QEMU.
. /rig/lib.sh
# why: the kernel's view of PCI hotplug, before a failure.
why() { dmesg | grep -iE "acpiphp|hotplug|pci 0000|e1000e|GED|ACPI.*(error|warning)" | tail -n 40 | sed 's/^/RIG-L2: dmesg: /'; }
modprobe e1000e || fail "cannot load e1000e"
[ ! -e /sys/class/net/eth0 ] || fail "eth0 exists before any vm.add-device"
echo "RIG-L2: hotplug slots: $(echo /sys/bus/pci/slots/*)"
echo "RIG-L2: hotplug guest ready"
bound() { # bound ROUND: waits (90 s) for eth0, configures it
    wait_until 900 test -e /sys/class/net/eth0 || { why; fail "round $1: no eth0 after vm.add-device"; }
    echo "RIG-L2: round $1: e1000e bound as eth0 ($(basename "$(readlink /sys/class/net/eth0/device)"))"
    eth0_up e1000e
    wait_until 100 grep -q 1 /sys/class/net/eth0/carrier || fail "round $1: eth0 has no carrier"
}
pings() { # pings ROUND COUNT: COUNT pings to L1 (-A: the next as soon as the reply is in), none lost
    ping -c "$2" -A -q -W 5 -w 150 "$(arg rig.peer)" > /tmp/ping.txt 2>&1
    sed "s/^/RIG-L2: round $1: ping L1: /" /tmp/ping.txt
    grep -q "$2 packets received, 0% packet loss" /tmp/ping.txt || fail "round $1: L2 -> L1 ping lost packets"
    echo "RIG-L2: round $1: pings done"
}
removed() { # removed ROUND: waits (90 s) for eth0 to go
    wait_until 900 test ! -e /sys/class/net/eth0 || { why; fail "round $1: eth0 still there"; }
    echo "RIG-L2: round $1: e1000e removed"
}
bound 1
if [ "$(arg rig.vmm)" = qemu ]; then
    while :; do sleep 1; done
fi
pings 1 1000
removed 1
bound 2
pings 2 200
ping -i 0.1 "$(arg rig.peer)" > /tmp/ping-during.txt 2>&1 &
during=$!
echo "RIG-L2: round 2: pinging while the NIC is removed"
removed 2
kill $during 2> /dev/null
echo "RIG-L2: round 2: $(grep -c 'bytes from' /tmp/ping-during.txt) replies before the removal"
bound 3
slot=""
dev=$(basename "$(readlink /sys/class/net/eth0/device)")
for s in /sys/bus/pci/slots/*; do
    [ "$(cat "$s/address").0" = "$dev" ] && slot=${s##*/}
done
[ -n "$slot" ] || fail "round 3: no hotplug slot for $dev in /sys/bus/pci/slots ($(echo /sys/bus/pci/slots/*))"
echo 0 > "/sys/bus/pci/slots/$slot/power" || fail "round 3: cannot power slot $slot off"
removed 3
echo "RIG-L2: round 3: ejected slot $slot"
while :; do sleep 1; done
