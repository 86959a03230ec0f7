#!/bin/sh
# Bind PCI devices to vfio-pci (`vfio-vmm host bind`).
# Usage: scripts/vfio-bind.sh [--group] BDF...
# A thin wrapper: all options are passed to `vfio-vmm host bind`. The binary is
# $VFIO_VMM if set, else vfio-vmm on PATH, else target/release or target/debug of this
# checkout. $VFIO_VMM_SYSFS_ROOT, $VFIO_VMM_STATE_DIR and $VFIO_VMM_PCI_IDS pass through.
set -eu

. "$(dirname "$0")/find-vfio-vmm.sh"

if [ $# -eq 0 ]; then
    echo "usage: vfio-bind.sh [--group] BDF..." >&2
    exit 2
fi

exec "$bin" host bind "$@"
