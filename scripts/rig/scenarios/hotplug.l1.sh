#!/bin/sh
# Scenario hotplug: assigned-device hotplug and unplug through the control
# API while L2 runs. vfio-vmm boots L2 with no assigned device; the e1000e
# (on vfio-pci) is added with vm.add-device, L2's e1000e driver binds and L2
# pings L1's e1000 (hotplug.l2.sh); vm.remove-device has L2 eject it; L1's
# own e1000e driver takes it back, brings its link up and, moved into a
# network namespace of its own, pings L1's e1000 across the rig's QEMU hub;
# vfio-pci again, added again (replug), pinged, removed while L2 pings; added
# a third time and ejected by L2 itself (vm.info stops listing it). Prints the time from
# vm.add-device to the answer and to L2's driver bound, per round. Then the
# same add by L1's QEMU (hotplug-qemu.sh) and the benchmark line.
. /rig/lib.sh
# shellcheck source=scripts/rig/scenarios/api-common.sh
. /rig/scenarios/api-common.sh
rig_nic_pair 169.254.2.1/16
nic=$RIG_NIC
modprobe e1000e || rig_fail "modprobe e1000e failed"
S=$RIG_TMP/api.sock
l2_args="rig.addr=169.254.2.2 rig.peer=169.254.2.1"
api_run 400 "$l2_args"
listed() { vfio-vmm remote --api-socket "$S" info > "$RIG_TMP/info" 2>&1 && grep -q '"nic0"' "$RIG_TMP/info"; }
add() { # add ROUND: vm.add-device, then L2's driver bound
    rig_cs; _t0=$RIG_CS
    api_add "hotplug round $1" add-device "path=/sys/bus/pci/devices/$nic,id=nic0"
    wait_for "RIG-L2: round $1: e1000e bound" 100
    rig_cs
    # shellcheck disable=SC2034 # round 1's times are read by hotplug-qemu.sh
    [ "$1" != 1 ] || { vmm_answer=$api_answer; vmm_bound=$((RIG_CS - _t0)); }
    rig_out "hotplug round $1: L2's e1000e bound $(rig_secs $((RIG_CS - _t0))) s after the request"
    listed || fail "round $1: vm.info does not list nic0"
}
remove() { # remove ROUND: vm.remove-device answers once L2 ejected
    rig_cs; _t0=$RIG_CS
    remote remove-device nic0 || fail "round $1: vm.remove-device failed"
    rig_cs
    rig_out "hotplug round $1: vm.remove-device answered in $(rig_secs $((RIG_CS - _t0))) s"
    wait_for "RIG-L2: round $1: e1000e removed" 30
    listed && fail "round $1: vm.info still lists nic0 after its removal"
    return 0
}
wait_for "RIG-L2: hotplug guest ready" 120

add 1
remote add-device "path=/sys/bus/pci/devices/$nic,id=nic1" && fail "the same device was added twice"
remote remove-device nosuch && fail "removing an unknown id was accepted"
grep -q "404" "$RIG_TMP/answer" || fail "removing an unknown id did not answer 404"
wait_for "RIG-L2: round 1: pings done" 200
remove 1

# L1's own driver takes the NIC back at once, and its link comes up.
vfio-vmm host unbind "$nic" 2>&1 | sed 's/^/RIG-L1: unbind: /'
i=0
while [ ! -d "/sys/bus/pci/devices/$nic/net" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ifc=$(ls "/sys/bus/pci/devices/$nic/net" 2> /dev/null)
[ -n "$ifc" ] || fail "e1000e did not take $nic back after the removal"
ip link set "$ifc" up
i=0
until [ "$(cat "/sys/class/net/$ifc/carrier" 2> /dev/null)" = 1 ]; do
    [ $i -lt 100 ] || fail "$ifc (e1000e in L1) has no link after the removal"
    sleep 0.1; i=$((i + 1))
done
rig_say "$nic is $ifc on L1's e1000e, link up"
# Its traffic crosses the hub: in a network namespace of its own (busybox
# unshare/nsenter/ip), as 169.254.2.3, it pings L1's e1000 (169.254.2.1).
unshare -n sleep 300 &
ns=$!
i=0
until [ "$(readlink /proc/$ns/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do
    [ $i -lt 50 ] || fail "unshare -n made no network namespace"
    sleep 0.1; i=$((i + 1))
done
ip link set "$ifc" netns "$ns" || fail "cannot move $ifc into a network namespace"
nsenter -t "$ns" -n sh -c "ip link set lo up && ip addr add 169.254.2.3/16 dev $ifc && ip link set $ifc up || exit 1
    i=0
    until ip link show $ifc | grep -q LOWER_UP; do
        [ \$i -lt 100 ] || { echo 'no link in the namespace'; exit 1; }
        sleep 0.1; i=\$((i + 1))
    done
    ping -c 20 -A -W 5 -w 60 169.254.2.1" > "$RIG_TMP/ns-ping.txt" 2>&1
sed 's/^/RIG-L1: netns ping: /' "$RIG_TMP/ns-ping.txt"
grep -q "20 packets received, 0% packet loss" "$RIG_TMP/ns-ping.txt" ||
    fail "L1's e1000e in its namespace could not ping L1's e1000 across the hub"
nsenter -t "$ns" -n ip link set "$ifc" netns 1 || fail "cannot move $ifc back from its namespace"
kill $ns
wait $ns 2> /dev/null
rig_out "hotplug: after the removal, L1's e1000e ($ifc) in a network namespace pinged L1's e1000 across the hub 20 times, none lost"
ip link set "$ifc" down
vfio-vmm host bind "$nic" 2>&1 | sed 's/^/RIG-L1: bind: /'

add 2
wait_for "RIG-L2: round 2: pings done" 120
wait_for "RIG-L2: round 2: pinging while" 30
sleep 1
remove 2

add 3
wait_for "RIG-L2: round 3: ejected slot" 60
i=0
while listed; do
    [ $i -lt 100 ] || fail "vm.info still lists nic0 10 s after the guest ejected it"
    sleep 0.1; i=$((i + 1))
done
grep -q "nic0 (slot .*) ejected by the guest and released" "$out" || fail "vfio-vmm did not release the guest's eject"
api_end
rig_say "hotplug: 3 adds, 2 API removals and a guest eject of $nic, with L1's e1000e in between"
# shellcheck source=scripts/rig/scenarios/hotplug-qemu.sh
. /rig/scenarios/hotplug-qemu.sh
