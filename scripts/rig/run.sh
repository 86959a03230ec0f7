#!/bin/bash
# Run rig scenarios under QEMU TCG. Scenarios with the same device set
# (scenarios.table) run one after another in one L1 boot.
# Usage: scripts/rig/run.sh SCENARIO...
#        scripts/rig/run.sh --list      every scenario (and custom)
#        scripts/rig/run.sh --skipped   "NAME<TAB>REASON" of those scripts/test.sh leaves out
# Prints "RIG PASS <name>" or "RIG FAIL <name>: <reason> (log: <file>)" per
# scenario and exits 0 only if all passed. Knobs: see scripts/rig/README.md.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG_DIR=${RIG_DIR:-$ROOT/target/rig}
RIG_IOMMU=${RIG_IOMMU:-intel}
RIG_TIMEOUT=${RIG_TIMEOUT:-120}
RIG_RETRIES=${RIG_RETRIES:-2}
RIG_SILENCE=${RIG_SILENCE:-240}
RIG_L1_MEM=${RIG_L1_MEM:-1536}
RIG_L2_TIMEOUT=${RIG_L2_TIMEOUT:-150}
RIG_L2_KARGS=${RIG_L2_KARGS-quiet}

# shellcheck source=scripts/rig/table.sh
. "$HERE/table.sh"
read_table

usage() { echo "usage: $0 SCENARIO... | --list | --skipped (scenarios: ${SCENARIOS[*]} custom)" >&2; exit 2; }
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # quote for sh

[ $# -gt 0 ] || usage
case $1 in
    --list) printf '%s\n' "${SCENARIOS[@]}" custom; exit 0 ;;
    --skipped) for s in "${SCENARIOS[@]}"; do [ -z "${SKIP[$s]}" ] || printf '%s\t%s\n' "$s" "${SKIP[$s]}"; done; exit 0 ;;
    -*) usage ;;
esac
case $RIG_IOMMU in
    intel) IOMMU_DEV=intel-iommu,intremap=on,caching-mode=on ;;
    amd) IOMMU_DEV=amd-iommu,intremap=on ;;
    *) echo "RIG_IOMMU must be intel or amd" >&2; exit 2 ;;
esac
[[ $RIG_TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "RIG_TIMEOUT must be seconds" >&2; exit 2; }
[[ $RIG_RETRIES =~ ^[0-9]+$ ]] || { echo "RIG_RETRIES must be a count" >&2; exit 2; }
[[ $RIG_SILENCE =~ ^[1-9][0-9]*$ ]] || { echo "RIG_SILENCE must be seconds" >&2; exit 2; }
read -ra EXTRA_DEVS <<< "${RIG_L1_DEVICES:-}"

# Scenario custom: RIG_L1_SCRIPT/RIG_L2_SCRIPT, in a boot of its own; its needs are guessed from its scripts.
L1_CUSTOM=${RIG_L1_SCRIPT:-}
L2_CUSTOM=${RIG_L2_SCRIPT:-}
DEVSET[custom]=custom TMO[custom]=- NEEDS[custom]=" "
grep -qs qemu-system-x86_64 "$L1_CUSTOM" && NEEDS[custom]+="qemu "
grep -qs iperf3 "$L1_CUSTOM" "$L2_CUSTOM" && NEEDS[custom]+="iperf "
grep -qs socat "$L1_CUSTOM" "$L2_CUSTOM" && NEEDS[custom]+="socat "

# Groups: one per device set, in the order of the arguments; within a group the
# scenarios run in table order. Unknown names FAIL at once.
status=0
declare -A GROUP=() TRIES=()
KEYS=()
for s in "$@"; do
    if [ -z "${DEVSET[$s]+x}" ]; then
        echo "RIG FAIL $s: no such scenario (not in $TABLE)"; status=1; continue
    fi
    [ "$s" != custom ] || [ -f "$L1_CUSTOM" ] || { echo "rig: scenario custom needs RIG_L1_SCRIPT=FILE" >&2; exit 2; }
    [ -z "${TRIES[$s]+x}" ] || { echo "rig: scenario $s given twice" >&2; exit 2; }
    TRIES[$s]=0
    key=${DEVSET[$s]/#-/none}
    [ -n "${GROUP[$key]+x}" ] || { KEYS+=("$key"); GROUP[$key]=""; }
done
for s in "${SCENARIOS[@]}" custom; do
    [ -z "${TRIES[$s]+x}" ] || GROUP[${DEVSET[$s]/#-/none}]+="$s "
done
[ ${#KEYS[@]} -gt 0 ] || exit "$status"

[ "${RIG_BUILD:-1}" = 0 ] || "$HERE/build.sh"
RIG_DIR=$(cd "$RIG_DIR" && pwd)
mkdir -p "$RIG_DIR/logs"

# shellcheck source=scripts/rig/boot.sh
. "$HERE/boot.sh"

# final NAME VERDICT: print the scenario's result ("PASS" or "FAIL reason") after its host step.
final() {
    local s=$1 verdict=$2 log=$RIG_DIR/logs/$1.log err=$RIG_DIR/logs/$1.host.err
    sed -n 's/^RIG-OUT: /  /p' "$log"
    # After a PASS, scenarios/NAME.host.sh LOG runs on the host, e.g. to turn RIG-OUT or
    # RIG-BENCH lines into reports; it can still fail the scenario (last stderr line = reason).
    if [ "$verdict" = PASS ] && needs "$s" host; then
        if ! RIG_DIR=$RIG_DIR bash "$HERE/scenarios/$s.host.sh" "$log" 2> "$err" | sed 's/^/  /'; then
            verdict="FAIL host step: $(tail -n1 "$err")"
        fi
        cat "$err" >&2
    fi
    case $verdict in
        PASS) echo "RIG PASS $s" ;;
        *) echo "RIG FAIL $s: ${verdict#FAIL } (log: $log)"; status=1 ;;
    esac
}

# Each group boots until every scenario in it has a verdict. A lost run (L1
# ended without a scenario's verdict) counts against the scenarios it started,
# and against the first one of the boot in any case; a scenario lost more than
# RIG_RETRIES times FAILs. A verdict, PASS or FAIL, is final.
for key in "${KEYS[@]}"; do
    read -ra todo <<< "${GROUP[$key]}"
    rm -f "$RIG_DIR/logs/l1-$key".*.log
    for s in "${todo[@]}"; do rm -f "$RIG_DIR/logs/$s".lost*.log; done
    boot=0
    while [ ${#todo[@]} -gt 0 ]; do
        boot=$((boot + 1))
        boot_group "$key" "$boot" "${todo[@]}"
        next=()
        for s in "${todo[@]}"; do
            if [ -n "${GOT[$s]}" ]; then final "$s" "${GOT[$s]}"; continue; fi
            if [ "${STARTED[$s]}" = 0 ] && [ "$s" != "${todo[0]}" ]; then
                echo "rig: $s: not reached in this L1 run; booting it again" >&2
                next+=("$s"); continue
            fi
            TRIES[$s]=$((TRIES[$s] + 1))
            if [ "${TRIES[$s]}" -le "$RIG_RETRIES" ]; then
                lost=$RIG_DIR/logs/$s.lost.log
                [ "${TRIES[$s]}" = 1 ] || lost=$RIG_DIR/logs/$s.lost${TRIES[$s]}.log
                mv "$RIG_DIR/logs/$s.log" "$lost"
                echo "rig: $s: L1 ended without a verdict ($BOOT_END; log: $lost); trying again" >&2
                next+=("$s")
            else
                final "$s" "FAIL no verdict, $BOOT_LOST"
            fi
        done
        todo=("${next[@]}")
    done
done
exit $status
