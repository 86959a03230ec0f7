#!/bin/sh
# Scenario pvh: boot, from the uncompressed ELF vmlinux (PVH entry) that
# build.sh extracts from the same bzImage; L2 also checks that ACPI was found.
. /rig/lib.sh
[ -f /rig/l2/vmlinux ] || rig_fail "no /rig/l2/vmlinux in L1 (scenarios.table: NEEDS vmlinux)"
# shellcheck disable=SC2034 # used by boot.l1.sh
BOOT_KERNEL=/rig/l2/vmlinux
. /rig/scenarios/boot.l1.sh
