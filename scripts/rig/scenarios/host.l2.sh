#!/bin/sh
# Scenario host (L2 side): the assigned e1000e is on L2's bus.
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x8086:0x10d3 ] && echo "RIG-L2: e1000e present at ${d##*/}" && exit 0
done
echo "RIG-L2: FAIL no e1000e on L2's bus"
exit 1
