#!/usr/bin/env bash
# Runs the fuzz targets of the workspace: seeded structured random tests
# (the `arbitrary` crate) in release mode, CASES cases each (default a
# million). `cargo test` runs the same targets briefly (a few thousand
# cases each). A failure names its target and case; the same command
# reproduces it, since every target's seed is fixed.
#
#   scripts/fuzz.sh                 # every target, 1,000,000 cases each
#   scripts/fuzz.sh fuzz_http       # one target
#   scripts/fuzz.sh all 10000       # every target, 10,000 cases each
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-all}
cases=${2:-1000000}

# target -> package that holds it
declare -A targets=(
  [fuzz_pci_bus]=vfio-vmm-pci
  [fuzz_msix_table]=vfio-vmm-pci
  [fuzz_msi_capability]=vfio-vmm-pci
  [fuzz_vfio_config]=vfio-vmm-pci
  [fuzz_virtio_pci]=vfio-vmm
  [fuzz_net_chains]=vfio-vmm
  [fuzz_vsock_packets]=vfio-vmm
  [fuzz_config_json]=vfio-vmm
  [fuzz_http]=vfio-vmm
  [fuzz_blk_chains]=vfio-vmm
  [fuzz_pci_hotplug]=vfio-vmm
  [fuzz_ged]=vfio-vmm
)
# targets whose test has another name
declare -A tests=(
  [fuzz_blk_chains]=random_chains_never_panic_and_get_a_defined_status
)
order=(fuzz_pci_bus fuzz_msix_table fuzz_msi_capability fuzz_vfio_config
       fuzz_virtio_pci fuzz_net_chains fuzz_blk_chains fuzz_vsock_packets fuzz_config_json
       fuzz_http fuzz_pci_hotplug fuzz_ged)

if [[ $target == all ]]; then
  selected=("${order[@]}")
elif [[ -n ${targets[$target]:-} ]]; then
  selected=("$target")
else
  echo "unknown target $target; one of: all ${order[*]}" >&2
  exit 2
fi

failed=()
for t in "${selected[@]}"; do
  log=$(mktemp)
  if VFIO_VMM_FUZZ_CASES=$cases cargo test --release -q -p "${targets[$t]}" --lib "${tests[$t]:-$t}" \
       -- --nocapture >"$log" 2>&1; then
    grep -E '^fuzz ' "$log" || echo "fuzz $t: $cases cases"
  else
    grep -E '^fuzz |panicked|failed at case' "$log" || tail -20 "$log"
    failed+=("$t")
  fi
  rm -f "$log"
done
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all ${#selected[@]} targets passed, $cases cases each"
