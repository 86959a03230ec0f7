#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ (afl.rs, stable toolchain) of the two
# parsers a local client feeds: the API's HTTP reader and the JSON config.
# Needs `cargo install cargo-afl` (it builds AFL++'s runtime). Findings land
# in fuzz/afl/out/TARGET/default/crashes; scripts/fuzz.sh runs the
# structured targets of every parser.
#
#   scripts/fuzz-afl.sh http 300          # fuzz the HTTP reader for 300 s
#   scripts/fuzz-afl.sh config_json 300
set -euo pipefail
cd "$(dirname "$0")/../fuzz/afl"

target=${1:?usage: fuzz-afl.sh http|config_json [SECONDS]}
seconds=${2:-300}
case $target in http|config_json) ;; *) echo "unknown target $target" >&2; exit 2;; esac

cargo afl build --release --bin "$target"
mkdir -p out
AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  cargo afl fuzz -i "seeds/$target" -o "out/$target" -V "$seconds" \
  "target/release/$target" | grep -aE 'Statistics|crashes|Fuzzing test case' | tail -3
crashes=$(find "out/$target/default/crashes" -name 'id:*' | wc -l)
echo "$target: $crashes crashes in out/$target/default/crashes"
[[ $crashes == 0 ]]
