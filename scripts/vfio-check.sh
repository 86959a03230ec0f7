#!/bin/sh
# Check this host for passthrough (`vfio-vmm host check`); exit 0 when ready.
# Usage: scripts/vfio-check.sh [--memory SIZE] [BDF...]
# A thin wrapper: all options are passed to `vfio-vmm host check`. The binary is
# $VFIO_VMM if set, else vfio-vmm on PATH, else target/release or target/debug of this
# checkout. $VFIO_VMM_SYSFS_ROOT, $VFIO_VMM_STATE_DIR and $VFIO_VMM_PCI_IDS pass through.
set -eu

. "$(dirname "$0")/find-vfio-vmm.sh"

exec "$bin" host check "$@"
