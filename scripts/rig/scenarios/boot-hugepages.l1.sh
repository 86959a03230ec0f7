#!/bin/sh
# Scenario boot-hugepages: boot, with guest RAM on 2M hugepages.
. /rig/lib.sh
echo 160 > /proc/sys/vm/nr_hugepages
total=$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)
[ "$total" -ge 128 ] || rig_fail "L1 could reserve only $total hugepages"
rig_on_sample() { # L2 is up: count hugepages in use or reserved
    awk '/^HugePages_(Total|Free|Rsvd):/ {v[$1] = $2}
         END {print v["HugePages_Total:"] - v["HugePages_Free:"] + v["HugePages_Rsvd:"]}' \
        /proc/meminfo > "$RIG_TMP/huge-used"
}
# shellcheck disable=SC2034 # used by boot.l1.sh
BOOT_MEMORY_OPTS=,hugepages=on
. /rig/scenarios/boot.l1.sh
used=$(cat "$RIG_TMP/huge-used" 2>/dev/null || echo 0)
rig_say "hugepages used while L2 ran: $used of $total"
[ "$used" -ge 128 ] || rig_fail "only $used 2M hugepages in use while L2 ran (want 128 for 256M)"
