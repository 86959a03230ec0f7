#!/bin/bash
# The whole test suite: every cargo test of the workspace (unit, fake-sysfs,
# host-KVM payload tests), then every rig scenario in the nested QEMU rig.
# Installs what it needs (scripts/rig/build.sh pulls the Debian packages).
# Usage: scripts/test.sh [--no-rig] [SCENARIO...]   (default: all rig scenarios)
set -euo pipefail
cd "$(dirname "$0")/.."

RIG=1
if [ "${1:-}" = --no-rig ]; then RIG=0; shift; fi

echo "== cargo test (workspace)"
cargo test --workspace --quiet 2>&1 | grep -v '^running 0 tests$' || exit 1

[ "$RIG" = 1 ] || exit 0
if [ $# -eq 0 ]; then
    mapfile -t SCENARIOS < <(scripts/rig/run.sh --list | grep -v '^custom$')
else
    SCENARIOS=("$@")
fi
echo "== rig: ${SCENARIOS[*]}"
status=0
out=$(mktemp)
scripts/rig/run.sh "${SCENARIOS[@]}" | tee "$out" || status=$?
passed=$(grep -c '^RIG PASS' "$out" || true)
failed=$(grep -c '^RIG FAIL' "$out" || true)
rm -f "$out"
echo "rig: $passed passed, $failed failed"
exit "$status"
