#!/bin/sh
# Scenario boot (L2 side): check vCPUs, memory and command line against the
# rig.cpus=N rig.mem=MIB rig.token=T arguments L1 passed.
set -e
. /rig/lib.sh # fail, arg, $cmdline (scripts/rig/l2-lib.sh)
cpus=$(grep -c ^processor /proc/cpuinfo)
online=$(cat /sys/devices/system/cpu/online)
mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
echo "RIG-L2: cmdline $cmdline"
echo "RIG-L2: cpus=$cpus online=$online memtotal=${mem}MiB"
echo "RIG-L2: sample"  # lets L1 look at the VMM while L2 is up
sleep 1
want=$(arg rig.cpus)
[ -n "$(arg rig.token)" ] || fail "no rig.token= on the command line"
[ "$cpus" = "$want" ] || fail "$cpus CPUs, want $want"
[ "$online" = "0-$((want - 1))" ] || [ "$want:$online" = 1:0 ] || fail "online CPUs $online, want $want"
max=$(arg rig.mem)
if [ "$mem" -gt "$max" ] || [ "$mem" -lt $((max * 3 / 4)) ]; then
    fail "MemTotal ${mem}MiB, want $((max * 3 / 4))..$max"
fi
dmesg | grep -q "ACPI: RSDP" || fail "the kernel found no ACPI RSDP"
echo "RIG-L2: $(dmesg | grep -m1 "ACPI: RSDP")"
echo "RIG-L2: boot checks passed"
