#!/bin/sh
# Scenario hotplug-net (L2 side): boots with no NIC; eth0 appears
# (vm.add-net: a virtio-net on L1's tap vtap0), pings L1 100 times without
# loss, and goes (vm.remove-device: the guest ejects). Then waits for L1's
# vmm.shutdown.
. /rig/lib.sh
for m in virtio_pci virtio_net; do modprobe $m || fail "cannot load $m"; done
[ ! -e /sys/class/net/eth0 ] || fail "eth0 exists before vm.add-net"
echo "RIG-L2: hotplug-net guest ready"
wait_until 900 test -e /sys/class/net/eth0 || fail "no eth0 after vm.add-net"
echo "RIG-L2: eth0 is $(cat /sys/class/net/eth0/address) on $(basename "$(readlink /sys/class/net/eth0/device/driver)")"
eth0_up virtio_net
# L1 gives its end of the tap an address once vm.add-net has answered.
wait_until 300 ping -c 1 -W 1 "$(arg rig.peer)" > /dev/null || fail "L1 never answered on the new NIC"
ping -c 100 -A -q -W 5 -w 90 "$(arg rig.peer)" > /tmp/ping.txt 2>&1
sed 's/^/RIG-L2: ping L1: /' /tmp/ping.txt
grep -q "100 packets received, 0% packet loss" /tmp/ping.txt || fail "L2 -> L1 ping lost packets"
echo "RIG-L2: pings done"
wait_until 900 test ! -e /sys/class/net/eth0 || fail "eth0 still there after vm.remove-device"
echo "RIG-L2: eth0 removed"
while :; do sleep 1; done
