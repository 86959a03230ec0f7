# Sourced by the host wrappers (vfio-bind.sh, vfio-unbind.sh, vfio-check.sh):
# sets $bin to the vfio-vmm to run: $VFIO_VMM if set, else vfio-vmm on PATH,
# else target/release or target/debug of this checkout; exits 127 if none.
# shellcheck shell=sh
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
    echo "$(basename "$0"): vfio-vmm not found: build it (cargo build --release) or set VFIO_VMM=/path/to/vfio-vmm" >&2
    exit 127
fi
