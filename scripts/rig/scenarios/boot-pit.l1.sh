#!/bin/sh
# Scenario boot-pit: boot, with KVM told to drop missed PIT ticks (--pit reinject=off).
# shellcheck disable=SC2034 # used by boot.l1.sh
BOOT_VMM_OPTS="--pit reinject=off"
. /rig/scenarios/boot.l1.sh
