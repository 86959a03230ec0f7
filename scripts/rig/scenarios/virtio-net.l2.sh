#!/bin/sh
# Scenario virtio-net (L2 side): bring up the virtio-net NIC, ping L1 1000
# times while L1 pings us, and show that its MSI-X vectors counted.
fail() { echo "RIG-L2: FAIL $*"; exit 1; }
read -r cmdline < /proc/cmdline
arg() { for a in $cmdline; do case $a in "$1"=*) echo "${a#*=}" ;; esac; done; }
modprobe virtio_pci && modprobe virtio_net || fail "cannot load virtio_pci/virtio_net"
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /sys/class/net/eth0 ] || fail "virtio_net created no eth0"
ip addr add "$(arg rig.addr)/16" dev eth0 && ip link set eth0 up || fail "cannot configure eth0"
echo "RIG-L2: sample"
ping -c 1000 -A -q -W 5 -w 90 "$(arg rig.peer)" > /tmp/ping.txt 2>&1
sed 's/^/RIG-L2: ping L1: /' /tmp/ping.txt
# Wait until L1's 1000 echo requests have all arrived (or 60 s).
i=0
while [ "$(awk '/^Icmp:/ && $3 ~ /^[0-9]+$/ {print $10}' /proc/net/snmp)" -lt 1000 ] && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
echo "RIG-L2: echo requests received: $(awk '/^Icmp:/ && $3 ~ /^[0-9]+$/ {print $10}' /proc/net/snmp)"
grep virtio /proc/interrupts | sed 's/^/RIG-L2: irq /'
grep -q "1000 packets received, 0% packet loss" /tmp/ping.txt || fail "L2 -> L1 ping lost packets"
in=$(awk '/virtio0-input/ {s = 0; for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s}' /proc/interrupts)
grep virtio0-input /proc/interrupts | grep -q MSI || fail "virtio0-input is not an MSI-X vector"
[ "${in:-0}" -gt 0 ] || fail "the input queue's vector never fired"
echo "RIG-L2: virtio-net checks passed (input vector fired $in times)"
