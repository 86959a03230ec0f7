#!/bin/sh
# Scenario api: Kata's sequence on vfio-vmm's control API, twice: once in raw
# HTTP/1.1 (socat on the UNIX socket), once with `vfio-vmm remote`. Start
# `vfio-vmm --api-socket`, ping until it answers, vm.create shaped like Kata's (payload, max_vcpus 4 over 1 boot vCPU with a topology, hotplug_size, the edu
# in devices[], a read-only disk, vsock, rng), vm.info says Created,
# vm.add-net (raw HTTP: tap=NAME; remote: fd=3, a tap descriptor that tapfd
# opens, passed with SCM_RIGHTS), vm.boot,
# vm.info says Running; L2 (api.l2.sh) drives the edu and serves vsock port
# 1024, which L1 reaches; vm.pause: vm.info says Paused and L2's ticks stop
# for 3 s; vm.resume: they go on. Raw HTTP ends paused with vmm.shutdown;
# remote ends with vm.power-button (L2 powers off on KEY_POWER); exit 0 both
# times. The second run takes the same edu right after the first.
. /rig/lib.sh
# shellcheck source=scripts/rig/scenarios/api-common.sh
. /rig/scenarios/api-common.sh
bdf=$(rig_find_pci 0x1234 0x11e8)
[ -n "$bdf" ] || rig_fail "no edu device in L1"
rig_bind_vfio "$bdf" > /dev/null || rig_fail "cannot bind $bdf to vfio-pci"
modprobe tun || rig_fail "modprobe tun failed"
S=$RIG_TMP/api.sock
dd if=/dev/zero of="$RIG_TMP/ro.img" bs=1M count=1 2> /dev/null
token=$(rig_token)
cat > "$RIG_TMP/vm.json" << END
{"payload": {"kernel": "$RIG_L2_KERNEL", "initramfs": "$RIG_L2_INITRD",
             "cmdline": "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.token=$token"},
 "cpus": {"boot_vcpus": 1, "max_vcpus": 4, "kvm_hyperv": false,
          "topology": {"threads_per_core": 1, "cores_per_die": 4, "dies_per_package": 1, "packages": 1}},
 "memory": {"size": 268435456, "shared": false, "hugepages": false, "hotplug_size": 2147483648},
 "serial": {"mode": "Tty"}, "console": {"mode": "Off"},
 "devices": [{"path": "/sys/bus/pci/devices/$bdf", "id": "edu0"}],
 "disks": [{"path": "$RIG_TMP/ro.img", "readonly": true, "image_type": "Raw", "id": "ro0"}],
 "vsock": {"cid": 3, "socket": "$RIG_TMP/v.sock"}, "rng": {"src": "/dev/urandom"}}
END
http() { # http METHOD ENDPOINT [BODY-FILE]: raw HTTP/1.1; the answer in $RIG_TMP/answer, its status in $code
    _len=0
    [ -z "${3:-}" ] || _len=$(wc -c < "$3")
    {
        printf '%s /api/v1/%s HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n' "$1" "$2"
        [ -z "${3:-}" ] || printf 'Content-Type: application/json\r\n'
        printf 'Content-Length: %s\r\n\r\n' "$_len"
        [ -z "${3:-}" ] || cat "$3"
    } | socat -t 10 - UNIX-CONNECT:"$S" > "$RIG_TMP/answer" 2>&1
    code=$(head -n1 "$RIG_TMP/answer" | cut -d' ' -f2)
    rig_say "$mode: $1 $2: $(head -n1 "$RIG_TMP/answer" | tr -d '\r') $(tail -n1 "$RIG_TMP/answer" | cut -c1-160)"
    case $code in 2??) ;; *) return 1 ;; esac
}
api() { # api STEP: one step in the current mode
    case $mode:$1 in
        http:ping) http GET vmm.ping ;;          remote:ping) remote ping ;;
        http:create) http PUT vm.create "$RIG_TMP/vm.json" ;; remote:create) remote create "$RIG_TMP/vm.json" ;;
        http:info) http GET vm.info ;;           remote:info) remote info ;;
        http:add-net) echo '{"tap": "vtap0", "id": "net0"}' > "$RIG_TMP/net.json" && http PUT vm.add-net "$RIG_TMP/net.json" ;;
        remote:add-net) remote tapfd vtap0 3 add-net fd=3,id=net0 ;;
        http:boot) http PUT vm.boot ;;           remote:boot) remote boot ;;
        http:shutdown) http PUT vmm.shutdown ;;  remote:shutdown) remote shutdown-vmm ;;
        http:pause) http PUT vm.pause ;;         remote:pause) remote pause ;;
        http:resume) http PUT vm.resume ;;       remote:resume) remote resume ;;
        http:power-button) http PUT vm.power-button ;; remote:power-button) remote power-button ;;
    esac
}
ticks() { grep -c "RIG-L2: tick" "$out"; }
wait_ticks() { # wait_ticks N: until L2 has printed more than N ticks (60 s)
    _i=0
    until [ "$(ticks)" -gt "$1" ]; do
        [ $_i -lt 600 ] || rig_fail "$mode: L2 printed no tick after $1 in 60 s"
        sleep 0.1; _i=$((_i + 1))
    done
}
pause_resume() { # vm.pause stops L2's ticks, vm.resume lets them go on
    wait_ticks 1
    api pause || rig_fail "$mode: vm.pause failed: $(tail -n1 "$RIG_TMP/answer")"
    { api info && grep -q '"state": *"Paused"' "$RIG_TMP/answer"; } || rig_fail "$mode: vm.info does not say Paused"
    api pause && rig_fail "$mode: a second vm.pause was accepted"
    grep -q "405" "$RIG_TMP/answer" || rig_fail "$mode: a second vm.pause did not answer 405"
    before=$(ticks)
    sleep 3
    after=$(ticks)
    [ "$before" = "$after" ] || rig_fail "$mode: L2 printed $((after - before)) ticks while paused"
    api resume || rig_fail "$mode: vm.resume failed: $(tail -n1 "$RIG_TMP/answer")"
    { api info && grep -q '"state": *"Running"' "$RIG_TMP/answer"; } || rig_fail "$mode: vm.info does not say Running after vm.resume"
    wait_ticks "$after"
    rig_say "$mode: paused at tick $before, none for 3 s; resumed: tick $(ticks)"
}
end_vm() { # http: vmm.shutdown while paused; remote: the power button
    case $mode in
        http)
            api pause || rig_fail "$mode: vm.pause failed"
            api shutdown || rig_fail "$mode: vmm.shutdown while paused failed"
            ;;
        remote)
            api power-button || rig_fail "$mode: vm.power-button failed"
            ;;
    esac
}
kata() { # kata MODE: the whole sequence
    mode=$1
    out=$RIG_TMP/vmm-$mode.out
    rm -f "$RIG_TMP/answer"
    RUST_LOG=info vfio-vmm --api-socket "$S" > "$out" 2>&1 &
    pid=$!
    i=0
    until api ping 2> /dev/null; do
        [ $i -lt 100 ] || rig_fail "$mode: vfio-vmm --api-socket never answered vmm.ping"
        sleep 0.1; i=$((i + 1))
    done
    api create || rig_fail "$mode: vm.create failed: $(tail -n1 "$RIG_TMP/answer")"
    { api info && grep -q '"state": *"Created"' "$RIG_TMP/answer"; } || rig_fail "$mode: vm.info does not say Created"
    api add-net || rig_fail "$mode: vm.add-net failed: $(tail -n1 "$RIG_TMP/answer")"
    api boot || rig_fail "$mode: vm.boot failed: $(tail -n1 "$RIG_TMP/answer")"
    { api info && grep -q '"state": *"Running"' "$RIG_TMP/answer"; } || rig_fail "$mode: vm.info does not say Running"
    i=0
    until grep -q "RIG-L2: api guest ready" "$out"; do
        ! grep -q "RIG-L2: FAIL" "$out" || rig_fail "$mode: L2: $(grep -m1 "RIG-L2: FAIL" "$out")"
        { [ $i -lt 900 ] && kill -0 $pid 2> /dev/null; } || rig_fail "$mode: L2 never got ready"
        sleep 0.1; i=$((i + 1))
    done
    printf 'CONNECT 1024\n' | socat -t 10 - UNIX-CONNECT:"$RIG_TMP/v.sock" > "$RIG_TMP/vsock.out" 2>&1
    rig_say "$mode: vsock port 1024 says: $(tr '\n' ' ' < "$RIG_TMP/vsock.out")"
    grep -q "^api-ok $token edu-ok$" "$RIG_TMP/vsock.out" || rig_fail "$mode: no answer from L2 on vsock port 1024"
    pause_resume
    end_vm
    wait $pid
    rc=$?
    sed "s/^/[vmm-$mode] /" "$out"
    [ $rc = 0 ] || rig_fail "$mode: vfio-vmm exited $rc after $mode's end"
    [ ! -e "$S" ] || rig_fail "$mode: the API socket is left behind"
    grep -q "^$bdf BAR0: .*trapped accesses: 0 reads, 0 writes" "$out" || rig_fail "$mode: no clean BAR0 report for $bdf"
    [ "$mode" = http ] || { grep -q "RIG-L2: KEY_POWER" "$out" && grep -q "guest powered off" "$out"; } ||
        rig_fail "$mode: L2 did not power off on the power button"
}
kata http
kata remote
rig_say "Kata's sequence passed over raw HTTP and with vfio-vmm remote, with pause/resume, vmm.shutdown while paused and the power button"
