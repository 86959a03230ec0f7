#!/bin/sh
# Scenario hotplug-net: a virtio-net added to a running L2 with vm.add-net
# (on tap vtap0, which vfio-vmm creates; L1 is 169.254.1.1 on it), L2 pings
# L1 100 times without loss (hotplug-net.l2.sh), then vm.remove-device: the
# guest ejects it and vm.info stops listing it.
. /rig/lib.sh
# shellcheck source=scripts/rig/scenarios/api-common.sh
. /rig/scenarios/api-common.sh
modprobe tun || rig_fail "modprobe tun failed"
S=$RIG_TMP/api.sock
api_run 250 "rig.addr=169.254.1.2 rig.peer=169.254.1.1"
wait_for "RIG-L2: hotplug-net guest ready" 120
api_add hotplug-net add-net "tap=vtap0,mac=02:00:00:00:00:02,id=net0"
{ ip addr add 169.254.1.1/16 dev vtap0 && ip link set vtap0 up; } || fail "cannot configure vtap0"
wait_for "RIG-L2: pings done" 120
remote remove-device net0 || fail "vm.remove-device failed"
wait_for "RIG-L2: eth0 removed" 30
remote info > /dev/null && grep -q '"net0"' "$RIG_TMP/answer" && fail "vm.info still lists net0"
api_end
rig_say "hotplug-net: a NIC added to a running L2, pinged, removed"
