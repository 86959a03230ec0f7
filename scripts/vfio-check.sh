#!/bin/sh
# Check this host for passthrough (`vfio-vmm host check`); exit 0 when ready.
# Usage: scripts/vfio-check.sh [--memory SIZE] [BDF...]
# A thin wrapper: all options are passed to `vfio-vmm host check`. The binary is
# $VFIO_VMM if set, else vfio-vmm on PATH, else target/release or target/debug of this
# checkout. $VFIO_VMM_SYSFS_ROOT, $VFIO_VMM_STATE_DIR and $VFIO_VMM_PCI_IDS pass through.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${VFIO_VMM:-}" ]; then
    bin=$VFIO_VMM
elif command -v vfio-vmm >/dev/null 2>&1; then
    bin=vfio-vmm
elif [ -x "$here/../target/release/vfio-vmm" ]; then
    bin=$here/../target/release/vfio-vmm
elif [ -x "$here/../target/debug/vfio-vmm" ]; then
    bin=$here/../target/debug/vfio-vmm
else
    echo "vfio-check.sh: vfio-vmm not found: build it (cargo build --release) or set VFIO_VMM=/path/to/vfio-vmm" >&2
    exit 127
fi

exec "$bin" host check "$@"
