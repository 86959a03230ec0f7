#!/bin/sh
# NIC passthrough (L2 side): load e1000e with IntMode=rig.intmode, bring the
# NIC up, ping L1 1000 times while L1 pings us, check the interrupt type and
# that it counted.
fail() { echo "RIG-L2: FAIL $*"; exit 1; }
read -r cmdline < /proc/cmdline
arg() { for a in $cmdline; do case $a in "$1"=*) echo "${a#*=}" ;; esac; done; }
mode=$(arg rig.intmode)
modprobe e1000e IntMode="$mode" || fail "cannot load e1000e"
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /sys/class/net/eth0 ] || fail "e1000e created no eth0"
ip addr add "$(arg rig.addr)/16" dev eth0 && ip link set eth0 up || fail "cannot configure eth0"
i=0
while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "RIG-L2: eth0 carrier $(cat /sys/class/net/eth0/carrier 2>/dev/null) after $((i / 10)).$((i % 10))s"
echo "RIG-L2: sample"
ping -c 1000 -A -q -W 5 -w 90 "$(arg rig.peer)" > /tmp/ping.txt 2>&1
sed 's/^/RIG-L2: ping L1: /' /tmp/ping.txt
i=0
while [ "$(awk '/^Icmp:/ && $3 ~ /^[0-9]+$/ {print $10}' /proc/net/snmp)" -lt 1000 ] && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
grep eth0 /proc/interrupts | sed 's/^/RIG-L2: irq /'
dmesg | grep -iE "e1000e|msi" | sed 's/^/RIG-L2: dmesg: /'
grep -q "1000 packets received, 0% packet loss" /tmp/ping.txt || fail "L2 -> L1 ping lost packets"
count=$(awk '/eth0/ {for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i} END {print s + 0}' /proc/interrupts)
case $mode in
    2) grep eth0-rx-0 /proc/interrupts | grep -q MSI || fail "no MSI-X vector eth0-rx-0" ;;
    1) grep -w eth0 /proc/interrupts | grep -v -- '-rx-\|-tx-' | grep -q MSI || fail "eth0 is not on an MSI vector" ;;
    0) grep -w eth0 /proc/interrupts | grep -q IO-APIC || fail "eth0 is not on an IO-APIC (INTx) line" ;;
esac
[ "$count" -gt 0 ] || fail "eth0's interrupts never fired"
echo "RIG-L2: nic checks passed (IntMode=$mode, $count interrupts)"
