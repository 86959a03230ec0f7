#!/bin/sh
# NIC passthrough (L2 side): load e1000e with IntMode=rig.intmode, bring the
# NIC up, ping L1 1000 times while L1 pings us, check the interrupt type and
# that it counted.
. /rig/lib.sh
mode=$(arg rig.intmode)
modprobe e1000e IntMode="$mode" || fail "cannot load e1000e"
eth0_up e1000e
wait_until 100 grep -q 1 /sys/class/net/eth0/carrier
# shellcheck disable=SC2154 # waited: set by wait_until (lib.sh)
echo "RIG-L2: eth0 carrier $(cat /sys/class/net/eth0/carrier 2>/dev/null) after $((waited / 10)).$((waited % 10))s"
ping_both_ways
grep eth0 /proc/interrupts | sed 's/^/RIG-L2: irq /'
dmesg | grep -iE "e1000e|msi" | sed 's/^/RIG-L2: dmesg: /'
count=$(irq_count eth0)
case $mode in
    2) grep eth0-rx-0 /proc/interrupts | grep -q MSI || fail "no MSI-X vector eth0-rx-0" ;;
    1) grep -w eth0 /proc/interrupts | grep -v -- '-rx-\|-tx-' | grep -q MSI || fail "eth0 is not on an MSI vector" ;;
    0) grep -w eth0 /proc/interrupts | grep -q IO-APIC || fail "eth0 is not on an IO-APIC (INTx) line" ;;
esac
[ "$count" -gt 0 ] || fail "eth0's interrupts never fired"
echo "RIG-L2: nic checks passed (IntMode=$mode, $count interrupts)"
