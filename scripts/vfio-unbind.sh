#!/bin/sh
# Return PCI devices from vfio-pci to their previous drivers (`vfio-vmm host unbind`).
# Usage: scripts/vfio-unbind.sh [--group] BDF...
# A thin wrapper: all options are passed to `vfio-vmm host unbind`. The binary is
# $VFIO_VMM if set, else vfio-vmm on PATH, else target/release or target/debug of this
# checkout. $VFIO_VMM_SYSFS_ROOT, $VFIO_VMM_STATE_DIR and $VFIO_VMM_PCI_IDS pass through.
set -eu

. "$(dirname "$0")/find-vfio-vmm.sh"

if [ $# -eq 0 ]; then
    echo "usage: vfio-unbind.sh [--group] BDF..." >&2
    exit 2
fi

exec "$bin" host unbind "$@"
