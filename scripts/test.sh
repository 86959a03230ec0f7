#!/bin/bash
# The whole test suite: style (rustfmt, clippy), every cargo test of the
# workspace (unit, fake-sysfs, host-KVM payload, tap and root tests), then every rig scenario in the nested QEMU rig.
# Installs what it needs (scripts/rig/build.sh pulls the Debian packages).
# Usage: scripts/test.sh [--no-rig] [SCENARIO...]   (default: every rig scenario of
# scripts/rig/scenarios.table without a skip reason; the others are named with theirs)
set -euo pipefail
cd "$(dirname "$0")/.."

RIG=1
if [ "${1:-}" = --no-rig ]; then RIG=0; shift; fi

echo "== style: cargo fmt --check, clippy (warnings and undocumented unsafe denied)"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Tests that need /dev/kvm, a tap or root are #[ignore]d for a plain `cargo
# test` (listed as ignored, never passed); here they run, and fail with their
# reason on a machine that lacks what they need.
echo "== cargo test (workspace, ignored tests included)"
cargo test --workspace --quiet -- --include-ignored 2>&1 | grep -v '^running 0 tests$' || exit 1

[ "$RIG" = 1 ] || exit 0
if [ $# -eq 0 ]; then
    skipped=$(scripts/rig/run.sh --skipped) # NAME<TAB>REASON, from scripts/rig/scenarios.table
    all=$(scripts/rig/run.sh --list)
    while IFS=$'\t' read -r s why; do
        [ -z "$s" ] || echo "rig: skipping $s: $why"
    done <<< "$skipped"
    SCENARIOS=()
    for s in $all; do
        [ "$s" = custom ] || grep -q "^$s"$'\t' <<< "$skipped" || SCENARIOS+=("$s")
    done
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
