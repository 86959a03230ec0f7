#!/bin/bash
# Scenario bench-blk, host step (run.sh runs it after a PASS with the L1 log):
# extract the RIG-BENCH results and write target/bench/blk.{json,md,svg}.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$HERE/../../bench/blk.sh" from-log "$1"
