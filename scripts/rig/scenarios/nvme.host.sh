#!/bin/bash
# Scenario nvme, host step: the pattern L2 wrote through the passed-through
# controller reached the file that backs L1's NVMe drive
# ($RIG_DIR/drives/nvme/nvme.img, see make_drives in boot.sh).
set -euo pipefail
line=$(tr -d '\r' < "$1" | sed -n 's/^RIG-OUT: nvme pattern //p' | tail -n1)
[[ $line =~ offset_mib=([0-9]+)\ size_mib=([0-9]+)\ md5=([0-9a-f]{32}) ]] ||
    { echo "no 'nvme pattern' line from L2 in $1" >&2; exit 1; }
img=$RIG_DIR/drives/nvme/nvme.img
[ -f "$img" ] || { echo "$img is missing" >&2; exit 1; }
sum=$(dd if="$img" bs=1M skip="${BASH_REMATCH[1]}" count="${BASH_REMATCH[2]}" status=none | md5sum)
sum=${sum%% *}
[ "$sum" = "${BASH_REMATCH[3]}" ] ||
    { echo "the backing file holds md5 $sum at MiB ${BASH_REMATCH[1]}, L2 wrote ${BASH_REMATCH[3]}" >&2; exit 1; }
echo "host: $img holds L2's pattern (${BASH_REMATCH[2]} MiB at MiB ${BASH_REMATCH[1]}, md5 $sum)"
