#!/bin/sh
# L2 side of qemu-passthrough: the passed-through e1000e gets a driver and an interface.
modprobe e1000e || exit 1
tries=0
while :; do
    dev=""
    for n in /sys/class/net/*; do [ -e "$n/device/driver" ] && dev=${n##*/}; done
    [ -n "$dev" ] && break
    tries=$((tries + 1))
    [ $tries -lt 20 ] || { echo "RIG-L2: no NIC interface appeared"; exit 1; }
    sleep 0.5
done
drv=$(readlink "/sys/class/net/$dev/device/driver")
ip link set "$dev" up && ip addr add 169.254.2.2/16 dev "$dev" || exit 1
echo "RIG-L2: $dev (driver ${drv##*/}) is up"
