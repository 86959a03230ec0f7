#!/bin/sh
# Driving vfio-vmm's control API from L1, sourced (after /rig/lib.sh) by the
# api and hotplug* scenarios. They set S (the API socket); the hotplug ones
# start vfio-vmm with api_run, which sets out (its output: L2's console) and
# pid. $mode, where set (api), prefixes what remote logs.

# remote [tapfd NAME FD] COMMAND...: vfio-vmm remote (under tapfd, which opens
# tap NAME as descriptor FD, if asked); the answer in $RIG_TMP/answer.
remote() {
    _pre=""
    [ "$1" != tapfd ] || { _pre="tapfd $2 $3"; shift 3; }
    # shellcheck disable=SC2086 # _pre: words
    $_pre vfio-vmm remote --api-socket "$S" "$@" > "$RIG_TMP/answer" 2>&1
    _rc=$?
    rig_say "${mode:+$mode: }remote $*: status $_rc, $(tr -d '\n' < "$RIG_TMP/answer" | tr -s ' ' | cut -c1-200)"
    return $_rc
}

# api_run SECONDS [KARGS]: vfio-vmm run with the API socket in the background
# (killed after SECONDS): L2 with 2 vCPUs, 256 MiB and KARGS on its command
# line; its output in $out (default $RIG_TMP/vfio-vmm.out), its pid in $pid.
# Returns once it answers vmm.ping.
api_run() {
    out=${out:-$RIG_TMP/vfio-vmm.out}
    rm -f "$out"
    RUST_LOG=info timeout -s KILL "$1" vfio-vmm run --api-socket "$S" --kernel "$RIG_L2_KERNEL" \
        --initramfs "$RIG_L2_INITRD" --cpus 2 --memory 256M \
        --cmdline "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}${2:+ $2}" > "$out" 2>&1 &
    pid=$!
    _i=0
    until remote ping > /dev/null 2>&1; do
        [ $_i -lt 100 ] || fail "vfio-vmm never answered vmm.ping"
        sleep 0.1; _i=$((_i + 1))
    done
}

show() { sed 's/^/[vfio-vmm] /' "$out"; }
fail() { show; rig_fail "$*"; }

# wait_for TEXT SECONDS: until vfio-vmm's output (L2's console) has TEXT.
wait_for() {
    _i=0
    until grep -qF -- "$1" "$out"; do
        ! grep -q "RIG-L2: FAIL" "$out" || fail "L2: $(grep -m1 "RIG-L2: FAIL" "$out")"
        kill -0 "$pid" 2> /dev/null || fail "vfio-vmm ended while waiting for '$1'"
        [ $_i -lt $(($2 * 10)) ] || fail "no '$1' after $2 s"
        sleep 0.1; _i=$((_i + 1))
    done
}

# api_add WHAT COMMAND ARGS...: remote COMMAND ARGS, timed (rig_out "WHAT:
# COMMAND answered in S s"); fails unless it answers with the device's bdf.
api_add() {
    _what=$1
    shift
    rig_cs; _t0=$RIG_CS
    remote "$@" || fail "$_what: vm.$1 failed"
    rig_cs; api_answer=$((RIG_CS - _t0))
    rig_out "$_what: vm.$1 answered in $(rig_secs $api_answer) s"
    grep -q '"bdf": *"0000:00:..\.0"' "$RIG_TMP/answer" || fail "$_what: the answer has no bdf"
}

# api_end: vmm.shutdown, then vfio-vmm must exit 0 without a panic.
api_end() {
    remote shutdown-vmm || fail "vmm.shutdown failed"
    wait "$pid"
    _rc=$?
    show
    [ $_rc = 0 ] || rig_fail "vfio-vmm exited $_rc"
    ! grep -q "panicked" "$out" || rig_fail "vfio-vmm panicked"
}
