#!/bin/bash
# Scenario host, host step: the `host list --json` L1 printed parses, has
# IOMMU groups, and lists the e1000e (back on e1000e) with its group.
set -euo pipefail
json=$(tr -d '\r' < "$1" | sed -n 's/^RIG-JSON: //p' | tail -n1)
[ -n "$json" ] || { echo "no RIG-JSON line in $1" >&2; exit 1; }
python3 - "$json" <<'PY'
import json, sys
doc = json.loads(sys.argv[1])
groups = [g for g in doc["groups"] if g["group"] is not None]
if not groups:
    sys.exit("host list --json shows no IOMMU groups")
nics = [d for g in groups for d in g["devices"] if (d["vendor_id"], d["device_id"]) == ("8086", "10d3")]
if len(nics) != 1 or nics[0]["driver"] != "e1000e" or nics[0]["iommu_group"] is None:
    sys.exit(f"e1000e not listed on e1000e with a group: {nics}")
print(f"host list --json: {len(groups)} IOMMU groups, e1000e {nics[0]['bdf']} in group {nics[0]['iommu_group']}")
PY
