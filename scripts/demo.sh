#!/bin/bash
# The main job, on a machine with no IOMMU: in the nested rig, vfio-vmm boots
# a Linux guest with an e1000e passed through by VFIO (MSI-X), the guest pings
# across it, and the whole console (L1 and the guest) streams to stderr.
# Installs what it needs (scripts/rig/build.sh). Ends with "RIG PASS nic-msix".
set -euo pipefail
cd "$(dirname "$0")/.."
RIG_VERBOSE=1 RIG_L2_KARGS="${RIG_L2_KARGS-}" exec scripts/rig/run.sh nic-msix
