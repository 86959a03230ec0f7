#!/bin/bash
# Run rig scenarios: one L1 boot under QEMU TCG per scenario.
# Usage: scripts/rig/run.sh SCENARIO...   (scripts/rig/run.sh --list)
# Prints "RIG PASS <name>" or "RIG FAIL <name>: <reason>" per scenario and
# exits 0 only if all passed. Knobs: see scripts/rig/README.md.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG_DIR=${RIG_DIR:-$ROOT/target/rig}
RIG_IOMMU=${RIG_IOMMU:-intel}
RIG_TIMEOUT=${RIG_TIMEOUT:-120}
RIG_RETRIES=${RIG_RETRIES:-2}
RIG_L1_MEM=${RIG_L1_MEM:-1536}
RIG_L2_TIMEOUT=${RIG_L2_TIMEOUT:-150}
RIG_L2_KARGS=${RIG_L2_KARGS-quiet}

usage() { echo "usage: $0 SCENARIO... (built-in: $(list | tr '\n' ' ')custom)" >&2; exit 2; }
list() { find "$HERE/scenarios" -name '*.l1.sh' | sed 's,.*/,,; s,\.l1\.sh$,,' | sort; }
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # quote for sh

[ $# -gt 0 ] || usage
if [ "$1" = --list ]; then list; echo custom; exit 0; fi

case $RIG_IOMMU in
    intel) IOMMU_DEV=intel-iommu,intremap=on,caching-mode=on ;;
    amd) IOMMU_DEV=amd-iommu,intremap=on ;;
    *) echo "RIG_IOMMU must be intel or amd" >&2; exit 2 ;;
esac
read -ra EXTRA_DEVS <<< "${RIG_L1_DEVICES:-}"

[ "${RIG_BUILD:-1}" = 0 ] || "$HERE/build.sh"
RIG_DIR=$(cd "$RIG_DIR" && pwd)

# run_scenario NAME TRY: boot L1 once; prints the verdict line, returns 0 on
# PASS. An L1 that ends without a verdict returns 2 without a verdict line
# while TRY < RIG_RETRIES, so that the caller can try again; any verdict, PASS
# or FAIL, is final. QEMU 7.2's TCG causes such runs: now and then it stops
# running one of L1's CPUs for good, with or without an L2 guest (REPORT.md's
# lost timer; an L2 vCPU thread's exit; once a busybox `timeout` asleep in L1
# with no VM open at all). softlockup_panic=1 turns most of these into a panic
# that ends L1 in ~25 s instead of at the timeout. Each such log is kept
# (NAME.lost.log, then NAME.lost2.log) and each retry is announced on stderr, so
# a recurring lockup stays visible.
run_scenario() {
    local name=$1 try=$2 l1 l2 st log rc verdict
    if [ "$name" = custom ]; then
        l1=${RIG_L1_SCRIPT:?scenario custom needs RIG_L1_SCRIPT=FILE}
        l2=${RIG_L2_SCRIPT:-}
    else
        l1=$HERE/scenarios/$name.l1.sh
        l2=$HERE/scenarios/$name.l2.sh
        [ -f "$l1" ] || { echo "RIG FAIL $name: no such scenario ($l1)"; return 1; }
        [ -f "$l2" ] || l2=""
    fi
    # Extra L1 devices: RIG_L1_DEVICES, then the scenario's NAME.devices (# comments allowed).
    local devs=("${EXTRA_DEVS[@]}")
    if [ -f "$HERE/scenarios/$name.devices" ]; then
        read -ra more <<< "$(sed 's/#.*//' "$HERE/scenarios/$name.devices" | tr '\n' ' ')"
        devs+=("${more[@]}")
    fi
    st=$RIG_DIR/run/$name
    log=$RIG_DIR/logs/$name.log
    rm -rf "$st"
    mkdir -p "$st/l2/rig" "$st/l1/rig/l2" "$RIG_DIR/logs"

    # L2 initramfs = cached busybox+modules, then /init, the L2 script and its helpers.
    install -m 755 "$HERE/l2-init" "$st/l2/init"
    install -m 644 "$HERE/l2-lib.sh" "$st/l2/rig/lib.sh"
    [ -z "$l2" ] || install -m 755 "$l2" "$st/l2/rig/l2.sh"
    # Debian's iperf3 with its libraries (l1/iperf.cpio) goes in when the L2 script mentions iperf3.
    local l2parts=("$RIG_DIR/l2/base.cpio" "$RIG_DIR/l2/tools.cpio")
    [ -n "$l2" ] && grep -q iperf3 "$l2" && l2parts+=("$RIG_DIR/l1/iperf.cpio")
    (cd "$st/l2" && find . | cpio -o -H newc -R 0:0 --quiet) |
        cat "${l2parts[@]}" - > "$st/l1/rig/l2/initramfs.cpio"
    cp "$RIG_DIR/l2/vmlinuz" "$st/l1/rig/l2/vmlinuz"

    # L1 initramfs = cached base, qemu and vfio-vmm parts, then this scenario's part.
    install -m 755 "$HERE/l1-init" "$st/l1/init"
    install -m 755 "$l1" "$st/l1/rig/l1.sh"
    cp "$HERE/lib.sh" "$st/l1/rig/lib.sh"
    cp -rL "$HERE/scenarios" "$st/l1/rig/scenarios"
    {
        for v in RIG_IOMMU RIG_L2_KARGS RIG_L2_TIMEOUT RIG_VMM_LOG; do echo "$v=$(q "${!v:-}")"; done
        echo "RIG_SCENARIO=$(q "$name")"
    } > "$st/l1/rig/env"
    local parts=("$RIG_DIR/l1/base.cpio" "$RIG_DIR/l1/vmm.cpio")
    case ${RIG_L1_QEMU:-auto} in # QEMU adds 50M and ~6 s to every L1 boot
        1) parts+=("$RIG_DIR/l1/qemu.cpio") ;;
        auto) grep -q qemu-system-x86_64 "$l1" && parts+=("$RIG_DIR/l1/qemu.cpio") ;;
    esac
    grep -q iperf3 "$l1" && parts+=("$RIG_DIR/l1/iperf.cpio")
    (cd "$st/l1" && find . | cpio -o -H newc -R 0:0 --quiet) |
        cat "${parts[@]}" - > "$st/initrd.cpio"
    rm -rf "$st/l1" "$st/l2"

    # A scenario may need more than RIG_TIMEOUT: scenarios/NAME.timeout holds its minimum in seconds.
    local tmo=$RIG_TIMEOUT
    if [ -f "$HERE/scenarios/$name.timeout" ]; then
        tmo=$(tr -dc 0-9 < "$HERE/scenarios/$name.timeout")
        [ "${tmo:-0}" -ge "$RIG_TIMEOUT" ] || tmo=$RIG_TIMEOUT
    fi
    # shellcheck disable=SC2054 # the commas are QEMU's
    local cmd=(timeout -k 10 "$tmo" qemu-system-x86_64
        -machine q35,accel=tcg,kernel-irqchip=split -cpu max -smp 2 -m "$RIG_L1_MEM"
        -nodefaults -no-user-config -nographic -serial stdio -monitor none -no-reboot
        -device "$IOMMU_DEV" "${devs[@]}"
        -kernel "$RIG_DIR/l1/vmlinuz" -initrd "$st/initrd.cpio"
        -append "console=ttyS0 panic=-1 softlockup_panic=1 quiet ${RIG_IOMMU}_iommu=on iommu=pt ${RIG_L1_KARGS:-}")
    echo "# ${cmd[*]}" > "$log"
    local t0=$SECONDS
    rc=0
    if [ "${RIG_VERBOSE:-0}" = 1 ]; then
        "${cmd[@]}" < /dev/null 2>&1 | tee -a "$log" >&2 || rc=$?
    else
        "${cmd[@]}" < /dev/null >> "$log" 2>&1 || rc=$?
    fi
    echo "# qemu exit status $rc after $((SECONDS - t0))s" >> "$log"
    rm -rf "$st"

    tr -d '\r' < "$log" | sed -n 's/^RIG-OUT: /  /p'
    verdict=$(tr -d '\r' < "$log" | grep -a '^RIG-VERDICT: ' | tail -n1 | cut -d' ' -f2-) || true
    # After a PASS, scenarios/NAME.host.sh LOG (if any) runs on the host, e.g. to turn
    # RIG-OUT results into reports; it can still fail the scenario (last stderr line = reason).
    local host=$HERE/scenarios/$name.host.sh
    if [ "$verdict" = PASS ] && [ -f "$host" ]; then
        if ! RIG_DIR=$RIG_DIR bash "$host" "$log" 2> "$RIG_DIR/logs/$name.host.err" | sed 's/^/  /'; then
            verdict="FAIL host step: $(tail -n1 "$RIG_DIR/logs/$name.host.err")"
        fi
        cat "$RIG_DIR/logs/$name.host.err" >&2
    fi
    case $verdict in
        PASS) echo "RIG PASS $name"; return 0 ;;
        FAIL\ *) echo "RIG FAIL $name: ${verdict#FAIL } (log: $log)" ;;
        *) if [ "$try" -lt "$RIG_RETRIES" ]; then
               local lost=$RIG_DIR/logs/$name.lost.log
               [ "$try" = 0 ] || lost=$RIG_DIR/logs/$name.lost$((try + 1)).log
               mv "$log" "$lost"
               echo "rig: $name: L1 ended without a verdict (qemu exit status $rc after $((SECONDS - t0))s; log: $lost); trying again" >&2
               return 2
           elif [ $rc = 124 ] || [ $rc = 137 ]; then
               echo "RIG FAIL $name: no verdict, L1 timed out after ${tmo}s (log: $log)"
           else
               echo "RIG FAIL $name: no verdict, qemu exit status $rc (log: $log)"
           fi ;;
    esac
    return 1
}

status=0
for s in "$@"; do
    rm -f "$RIG_DIR/logs/$s".lost*.log
    try=0 rc=2
    while [ $rc = 2 ]; do # no verdict: the next try's result is the scenario's result
        rc=0
        run_scenario "$s" $try || rc=$?
        try=$((try + 1))
    done
    [ $rc = 0 ] || status=1
done
exit $status
