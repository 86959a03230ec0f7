#!/bin/sh
# Scenario hotplug: assigned-device hotplug and unplug through the control
# API while L2 runs. vfio-vmm boots L2 with no assigned device; the e1000e
# (on vfio-pci) is added with vm.add-device, L2's e1000e driver binds and L2
# pings L1's e1000 (hotplug.l2.sh); vm.remove-device has L2 eject it; L1's
# own e1000e driver takes it back and brings its link up; vfio-pci again,
# added again (replug), pinged, removed while L2 pings; added a third time
# and ejected by L2 itself (vm.info stops listing it). Prints the time from
# vm.add-device to the answer and to L2's driver bound, per round.
. /rig/lib.sh
rig_nic_pair 169.254.2.1/16
nic=$RIG_NIC
modprobe e1000e || rig_fail "modprobe e1000e failed"
S=$RIG_TMP/api.sock
out=$RIG_TMP/vfio-vmm.out
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.addr=169.254.2.2 rig.peer=169.254.2.1"
RUST_LOG=info timeout -s KILL 400 vfio-vmm run --api-socket "$S" --kernel "$RIG_L2_KERNEL" \
    --initramfs "$RIG_L2_INITRD" --cpus 2 --memory 256M --cmdline "$cmdline" > "$out" 2>&1 &
pid=$!
show() { sed 's/^/[vfio-vmm] /' "$out"; }
fail() { show; rig_fail "$*"; }
wait_for() { # wait_for TEXT SECONDS: until vfio-vmm's output (L2's console) has TEXT
    _i=0
    until grep -qF -- "$1" "$out"; do
        ! grep -q "RIG-L2: FAIL" "$out" || fail "L2: $(grep -m1 "RIG-L2: FAIL" "$out")"
        kill -0 $pid 2> /dev/null || fail "vfio-vmm ended while waiting for '$1'"
        [ $_i -lt $(($2 * 10)) ] || fail "no '$1' after $2 s"
        sleep 0.1; _i=$((_i + 1))
    done
}
remote() { # remote COMMAND...: vfio-vmm remote; the answer in $RIG_TMP/answer
    vfio-vmm remote --api-socket "$S" "$@" > "$RIG_TMP/answer" 2>&1
    _rc=$?
    rig_say "remote $*: status $_rc, $(tr -d '\n' < "$RIG_TMP/answer" | tr -s ' ' | cut -c1-200)"
    return $_rc
}
listed() { vfio-vmm remote --api-socket "$S" info > "$RIG_TMP/info" 2>&1 && grep -q '"nic0"' "$RIG_TMP/info"; }
add() { # add ROUND: vm.add-device, then L2's driver bound
    rig_cs; _t0=$RIG_CS
    remote add-device "path=/sys/bus/pci/devices/$nic,id=nic0" || fail "round $1: vm.add-device failed"
    rig_cs; _answer=$((RIG_CS - _t0))
    grep -q '"bdf": *"0000:00:..\.0"' "$RIG_TMP/answer" || fail "round $1: the answer has no bdf"
    wait_for "RIG-L2: round $1: e1000e bound" 100
    rig_cs; _bound=$((RIG_CS - _t0))
    rig_out "hotplug round $1: vm.add-device answered in $(rig_secs $_answer) s; L2's e1000e bound $(rig_secs $_bound) s after the request"
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
i=0
until remote ping > /dev/null 2>&1; do
    [ $i -lt 100 ] || fail "vfio-vmm never answered vmm.ping"
    sleep 0.1; i=$((i + 1))
done
wait_for "RIG-L2: hotplug guest ready" 120

add 1
remote add-device "path=/sys/bus/pci/devices/$nic,id=nic1" && fail "the same device was added twice"
remote remove-device nosuch && fail "removing an unknown id was accepted"
grep -q "404" "$RIG_TMP/answer" || fail "removing an unknown id did not answer 404"
wait_for "RIG-L2: round 1: pings done" 120
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
remote shutdown-vmm || fail "vmm.shutdown failed"
wait $pid
rc=$?
show
[ $rc = 0 ] || rig_fail "vfio-vmm exited $rc"
! grep -q "panicked" "$out" || rig_fail "vfio-vmm panicked"
rig_say "hotplug: 3 adds, 2 API removals and a guest eject of $nic, with L1's e1000e in between"
