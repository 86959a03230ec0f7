#!/bin/sh
# Shared helpers for the L2 scenario scripts (busybox sh). run.sh installs this
# file as /rig/lib.sh in every L2 initramfs; a scenario's l2.sh sources it.

fail() { echo "RIG-L2: FAIL $*"; exit 1; }

read -r cmdline < /proc/cmdline
# arg NAME: the value of NAME=VALUE on the kernel command line.
arg() { for a in $cmdline; do case $a in "$1"=*) echo "${a#*=}" ;; esac; done; }

# wait_until TENTHS CMD...: runs CMD every 0.1 s until it succeeds or TENTHS
# tries have failed; leaves the number of tries in $waited.
wait_until() {
    limit=$1
    shift
    waited=0
    until "$@"; do
        [ $waited -lt "$limit" ] || return 1
        sleep 0.1
        waited=$((waited + 1))
    done
}

# echo_requests: ICMP echo requests this guest has received.
# find_pci VENDOR DEVICE: the address of the last PCI function with those ids
# (empty if none), as L1's rig_find_pci finds them.
find_pci() {
    _found=""
    for _d in /sys/bus/pci/devices/*; do
        [ "$(cat "$_d/vendor"):$(cat "$_d/device")" = "$1:$2" ] && _found=${_d##*/}
    done
    echo "$_found"
}
echo_requests() { awk '/^Icmp:/ && $3 ~ /^[0-9]+$/ {print $10}' /proc/net/snmp; }
have_echo_requests() { [ "$(echo_requests)" -ge "$1" ]; }

# eth0_up: waits for eth0 (10 s) and gives it rig.addr.
eth0_up() {
    wait_until 100 test -e /sys/class/net/eth0 || fail "$1 created no eth0"
    { ip addr add "$(arg rig.addr)/16" dev eth0 && ip link set eth0 up; } || fail "cannot configure eth0"
}

# ping_both_ways: tells L1 to start its pings ("RIG-L2: sample"), pings
# rig.peer 1000 times, then waits (60 s) until L1's 1000 echo requests have
# all arrived. Fails if any of ours was lost.
ping_both_ways() {
    echo "RIG-L2: sample"
    ping -c 1000 -A -q -W 5 -w 90 "$(arg rig.peer)" > /tmp/ping.txt 2>&1
    sed 's/^/RIG-L2: ping L1: /' /tmp/ping.txt
    wait_until 600 have_echo_requests 1000
    echo "RIG-L2: echo requests received: $(echo_requests)"
    grep -q "1000 packets received, 0% packet loss" /tmp/ping.txt || fail "L2 -> L1 ping lost packets"
}

# irq_count PATTERN: interrupts counted on all CPUs by /proc/interrupts lines matching PATTERN.
irq_count() {
    awk -v p="$1" '$0 ~ p {for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i} END {print s + 0}' /proc/interrupts
}
