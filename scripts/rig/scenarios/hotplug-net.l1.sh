#!/bin/sh
# Scenario hotplug-net: a virtio-net added to a running L2 with vm.add-net
# (on tap vtap0, which vfio-vmm creates; L1 is 169.254.1.1 on it), L2 pings
# L1 100 times without loss (hotplug-net.l2.sh), then vm.remove-device: the
# guest ejects it and vm.info stops listing it.
. /rig/lib.sh
modprobe tun || rig_fail "modprobe tun failed"
S=$RIG_TMP/api.sock
out=$RIG_TMP/vfio-vmm.out
RUST_LOG=info timeout -s KILL 250 vfio-vmm run --api-socket "$S" --kernel "$RIG_L2_KERNEL" \
    --initramfs "$RIG_L2_INITRD" --cpus 2 --memory 256M \
    --cmdline "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.addr=169.254.1.2 rig.peer=169.254.1.1" > "$out" 2>&1 &
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
i=0
until remote ping > /dev/null 2>&1; do
    [ $i -lt 100 ] || fail "vfio-vmm never answered vmm.ping"
    sleep 0.1; i=$((i + 1))
done
wait_for "RIG-L2: hotplug-net guest ready" 120
rig_cs; t0=$RIG_CS
remote add-net "tap=vtap0,mac=02:00:00:00:00:02,id=net0" || fail "vm.add-net failed"
rig_cs
rig_out "hotplug-net: vm.add-net answered in $(rig_secs $((RIG_CS - t0))) s"
grep -q '"bdf": *"0000:00:..\.0"' "$RIG_TMP/answer" || fail "the answer has no bdf"
{ ip addr add 169.254.1.1/16 dev vtap0 && ip link set vtap0 up; } || fail "cannot configure vtap0"
wait_for "RIG-L2: pings done" 120
remote remove-device net0 || fail "vm.remove-device failed"
wait_for "RIG-L2: eth0 removed" 30
remote info > /dev/null && grep -q '"net0"' "$RIG_TMP/answer" && fail "vm.info still lists net0"
remote shutdown-vmm || fail "vmm.shutdown failed"
wait $pid
rc=$?
show
[ $rc = 0 ] || rig_fail "vfio-vmm exited $rc"
! grep -q "panicked" "$out" || rig_fail "vfio-vmm panicked"
rig_say "hotplug-net: a NIC added to a running L2, pinged, removed"
