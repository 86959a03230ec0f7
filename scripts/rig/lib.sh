# Helpers for L1 scenario scripts (busybox sh). Source with: . /rig/lib.sh
# shellcheck shell=sh
# Output conventions (grep-able in the L1 serial log):
#   RIG-L1: ...   progress lines from L1
#   RIG-OUT: ...  lines run.sh also prints on its stdout (tables, numbers)
#   [TAG +S.SS] . lines of an L2 console copied by rig_vmm, S.SS = seconds since exec
#   RIG-L2: ...   lines printed by L2's init and L2 scenario scripts

[ -z "${RIG_LIB_LOADED:-}" ] || return 0 # already sourced: keep overrides
RIG_LIB_LOADED=1
RIG_TMP=${RIG_TMP:-/tmp/rig}
mkdir -p "$RIG_TMP"

rig_say() { echo "RIG-L1: $*"; }
rig_out() { echo "RIG-OUT: $*"; }

# rig_fail REASON: end the L1 script; REASON becomes the scenario's FAIL reason.
rig_fail() {
    echo "$*" > "$RIG_TMP/reason"
    rig_say "FAIL: $*"
    exit 1
}

RIG_CR=$(printf '\r')

# rig_cs: sets RIG_CS to /proc/uptime in centiseconds, without forking
# (L1 init runs seconds after boot, so the value never has leading zeros).
rig_cs() {
    read -r RIG_CS _ < /proc/uptime
    RIG_CS=${RIG_CS%.*}${RIG_CS#*.}
}
# rig_secs CS: prints centiseconds as seconds, "12.05"
rig_secs() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

rig_token() { cut -c1-8 /proc/sys/kernel/random/uuid; }

# rig_vmm TAG CMD...: run CMD, a VMM that boots L2 with its console on stdout.
# Its output is copied to ours, each line prefixed "[TAG +S.SS]", and kept in
# $RIG_TMP/TAG.out. The run is killed after RIG_L2_TIMEOUT seconds.
# Sets: RIG_RC (VMM exit status), RIG_L2_RC (L2 init's "RIG-L2: exit N", or
# empty), RIG_T_INIT / RIG_T_END (centiseconds from exec to L2's first
# "RIG-L2: init" line / to the VMM's exit) and RIG_WHY (reason on failure).
# When L2 prints "RIG-L2: sample", rig_on_sample PID runs (override it; the
# default records the VMM's memory use in $RIG_TMP/TAG.rss, see rig_rss).
# Returns 0 if the VMM exited 0 and L2's scenario script exited 0.
rig_vmm() {
    _tag=$1
    shift
    _fifo=$RIG_TMP/$_tag.fifo
    rm -f "$_fifo" "$RIG_TMP/$_tag.rss" "$RIG_TMP/$_tag.out"
    mkfifo "$_fifo"
    RIG_L2_RC="" RIG_T_INIT="" RIG_WHY=""
    rig_say "$_tag: $*"
    rig_cs
    _t0=$RIG_CS
    # busybox timeout execs CMD itself, so $! is the VMM's pid.
    timeout -s KILL "${RIG_L2_TIMEOUT:-150}" "$@" > "$_fifo" 2>&1 &
    _pid=$!
    while IFS= read -r _line || [ -n "$_line" ]; do
        rig_cs
        _e=$((RIG_CS - _t0))
        _c=$((_e % 100))
        [ $_c -lt 10 ] && _c=0$_c
        _line=${_line%"$RIG_CR"}
        case $_line in
            *"RIG-L2: init"*) [ -n "$RIG_T_INIT" ] || RIG_T_INIT=$_e ;;
            *"RIG-L2: sample"*) rig_on_sample "$_pid" ;;
            *"RIG-L2: exit "*) RIG_L2_RC=${_line##*RIG-L2: exit } ;;
        esac
        echo "[$_tag +$((_e / 100)).$_c] $_line"
        echo "$_line" >> "$RIG_TMP/$_tag.out"
    done < "$_fifo"
    wait "$_pid"
    RIG_RC=$?
    rig_cs
    RIG_T_END=$((RIG_CS - _t0))
    rig_say "$_tag: exit status $RIG_RC after $(rig_secs "$RIG_T_END")s, L2 exit ${RIG_L2_RC:-none}"
    if [ "$RIG_RC" = 137 ]; then
        RIG_WHY="$_tag killed after ${RIG_L2_TIMEOUT:-150}s (L2 exit ${RIG_L2_RC:-none})"
    elif [ "$RIG_RC" != 0 ]; then
        RIG_WHY="$_tag exited with status $RIG_RC (L2 exit ${RIG_L2_RC:-none})"
    elif [ -z "$RIG_L2_RC" ]; then
        RIG_WHY="$_tag exited 0 but L2 printed no 'RIG-L2: exit' marker"
    elif [ "$RIG_L2_RC" != 0 ]; then
        RIG_WHY="L2 scenario script exited $RIG_L2_RC"
    fi
    [ -z "$RIG_WHY" ]
}

# rig_saw TAG STRING: did the last rig_vmm TAG run print a line containing STRING?
rig_saw() { grep -qF -- "$2" "$RIG_TMP/$1.out"; }

# rig_rss PID GUEST_MIB: prints "HWM_KB NONGUEST_KB GUEST_KB" for a running VMM.
# Guest RAM = mappings at least half the size of GUEST_MIB; the rest is the
# VMM's own footprint. HWM is VmHWM (peak RSS, guest RAM included).
rig_rss() {
    awk -v min=$(($2 * 512)) -v hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$1/status")" '
        $1 ~ /^[0-9a-f]+-[0-9a-f]+$/ { next }
        $1 == "Size:" { size = $2 }
        $1 == "Rss:" { if (size >= min) g += $2; else o += $2 }
        END { print hwm + 0, o + 0, g + 0 }' "/proc/$1/smaps"
}
rig_on_sample() { rig_rss "$1" "${RIG_GUEST_MIB:-256}" > "$RIG_TMP/$_tag.rss" 2>/dev/null || true; }

# rig_bind_vfio BDF: bind a PCI function (0000:00:03.0) to vfio-pci; prints its /dev/vfio node.
rig_bind_vfio() {
    _d=/sys/bus/pci/devices/$1
    [ -e "$_d/driver" ] && echo "$1" > "$_d/driver/unbind"
    echo vfio-pci > "$_d/driver_override"
    echo "$1" > /sys/bus/pci/drivers_probe
    _g=$(readlink "$_d/iommu_group")
    _drv=$(readlink "$_d/driver")
    [ "${_drv##*/}" = vfio-pci ] || return 1
    echo "/dev/vfio/${_g##*/}"
}

# rig_nic_pair ADDR/PREFIX: the rig's NIC pair (device set nic, scenarios.table): binds
# the e1000e to vfio-pci and gives L1's e1000, on the same QEMU hub, ADDR.
# Sets RIG_NIC (the e1000e's BDF) and RIG_PEER_IF (the e1000's interface).
rig_nic_pair() {
    RIG_NIC=$(rig_find_pci 0x8086 0x10d3)
    _peer=$(rig_find_pci 0x8086 0x100e)
    { [ -n "$RIG_NIC" ] && [ -n "$_peer" ]; } ||
        rig_fail "L1 lacks the e1000e ($RIG_NIC) or the e1000 peer ($_peer): see device set nic in scenarios.table"
    rig_bind_vfio "$RIG_NIC" > /dev/null || rig_fail "cannot bind $RIG_NIC to vfio-pci"
    modprobe e1000 || rig_fail "modprobe e1000 failed"
    _i=0
    while [ ! -d "/sys/bus/pci/devices/$_peer/net" ] && [ $_i -lt 50 ]; do sleep 0.1; _i=$((_i + 1)); done
    RIG_PEER_IF=$(ls "/sys/bus/pci/devices/$_peer/net" 2> /dev/null)
    [ -n "$RIG_PEER_IF" ] || rig_fail "the e1000 peer has no interface in L1"
    { ip addr add "$1" dev "$RIG_PEER_IF" && ip link set "$RIG_PEER_IF" up; } || rig_fail "cannot configure $RIG_PEER_IF"
}

# rig_find_pci VENDOR DEVICE: BDFs of matching PCI functions, e.g. rig_find_pci 0x8086 0x10d3
rig_find_pci() {
    for _d in /sys/bus/pci/devices/*; do
        [ "$(cat "$_d/vendor")" = "$1" ] && [ "$(cat "$_d/device")" = "$2" ] && echo "${_d##*/}"
    done
    return 0
}
