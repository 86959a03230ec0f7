# shellcheck shell=bash disable=SC2034,SC2153 # sets and reads run.sh's variables
# boot_group KEY BOOT NAME... (sourced by run.sh): boot L1 once with the
# device set KEY and run the scenarios NAME... in it, in that order. The L1
# serial log is logs/l1-KEY.BOOT.log; each scenario's part of it (up to its
# verdict line; the first part also holds L1's boot) goes to logs/NAME.log.
# Sets, per NAME: GOT (PASS, "FAIL reason", or empty: no verdict) and STARTED
# (1 if L1 announced the scenario); and BOOT_RC (QEMU's exit status), BOOT_TMO
# (the L1 timeout: the sum of the scenarios' timeouts), BOOT_END (how L1 ended,
# for messages) and BOOT_LOST (why, when a scenario got no verdict).
declare -A GOT=() STARTED=()
boot_group() {
    local key=$1 boot=$2 s l2 part n
    shift 2
    local st=$RIG_DIR/run/$key log=$RIG_DIR/logs/l1-$key.$boot.log
    rm -rf "$st"
    mkdir -p "$st/l2/rig" "$st/l1/rig/l2"

    # L2 initramfs, put together in L1 per scenario: the shared base (cached busybox and
    # modules, /init, the L2 helpers) and the scenario's part (its L2 script, iperf3 and socat if needed).
    install -m 755 "$HERE/l2-init" "$st/l2/init"
    install -m 644 "$HERE/l2-lib.sh" "$st/l2/rig/lib.sh"
    (cd "$st/l2" && find . | cpio -o -H newc -R 0:0 --quiet) |
        cat "$RIG_DIR/l2/base.cpio" "$RIG_DIR/l2/tools.cpio" - > "$st/l1/rig/l2/base.cpio"
    cp "$RIG_DIR/l2/vmlinuz" "$st/l1/rig/l2/vmlinuz"
    for s in "$@"; do
        l2=$HERE/scenarios/$s.l2.sh
        [ "$s" != custom ] || l2=$L2_CUSTOM
        mkdir -p "$st/l2-$s/rig"
        [ ! -f "$l2" ] || install -m 755 "$l2" "$st/l2-$s/rig/l2.sh"
        part=()
        ! needs "$s" iperf || part+=("$RIG_DIR/l1/iperf.cpio")
        ! needs "$s" socat || part+=("$RIG_DIR/l1/socat.cpio")
        ! needs "$s" fio || part+=("$RIG_DIR/l1/fio.cpio")
        (cd "$st/l2-$s" && find . | cpio -o -H newc -R 0:0 --quiet) |
            cat "${part[@]}" - > "$st/l1/rig/l2/$s.cpio"
    done

    # L1 initramfs: cached base and vfio-vmm parts, what the scenarios need (QEMU, iperf3, socat, ...), then ours.
    install -m 755 "$HERE/l1-init" "$st/l1/init"
    cp "$HERE/lib.sh" "$st/l1/rig/lib.sh"
    cp -rL "$HERE/scenarios" "$st/l1/rig/scenarios"
    [ -z "$L1_CUSTOM" ] || install -m 755 "$L1_CUSTOM" "$st/l1/rig/scenarios/custom.l1.sh"
    {
        for v in RIG_IOMMU RIG_L2_KARGS RIG_L2_TIMEOUT RIG_VMM_LOG; do echo "$v=$(q "${!v:-}")"; done
        echo "RIG_SCENARIOS=$(q "$*")"
    } > "$st/l1/rig/env"
    local parts=("$RIG_DIR/l1/base.cpio" "$RIG_DIR/l1/vmm.cpio" "$RIG_DIR/l2/tools.cpio") qemu=0 iperf=0 socat=0 vmlinux=0 disk=0 fio=0
    for s in "$@"; do
        ! needs "$s" fio || fio=1
        ! needs "$s" qemu || qemu=1
        ! needs "$s" iperf || iperf=1
        ! needs "$s" socat || socat=1
        ! needs "$s" vmlinux || vmlinux=1
        ! needs "$s" disk || disk=1
    done
    case ${RIG_L1_QEMU:-auto} in # QEMU adds 50M and ~6 s to every L1 boot
        1) parts+=("$RIG_DIR/l1/qemu.cpio") ;;
        auto) [ $qemu = 0 ] || parts+=("$RIG_DIR/l1/qemu.cpio") ;;
    esac
    [ $iperf = 0 ] || parts+=("$RIG_DIR/l1/iperf.cpio")
    [ $socat = 0 ] || parts+=("$RIG_DIR/l1/socat.cpio")
    [ $fio = 0 ] || parts+=("$RIG_DIR/l1/fio.cpio")
    [ $vmlinux = 0 ] || parts+=("$RIG_DIR/l2/vmlinux.cpio") # /rig/l2/vmlinux, 65M
    [ $disk = 0 ] || parts+=("$RIG_DIR/l1/disk.cpio")       # /rig/disk.img, 16M
    (cd "$st/l1" && find . | cpio -o -H newc -R 0:0 --quiet) |
        cat "${parts[@]}" - > "$st/initrd.cpio"
    rm -rf "$st/l1" "$st/l2" "$st"/l2-*

    # The L1 timeout: each scenario's TIMEOUT, or RIG_TIMEOUT if larger, added up.
    BOOT_TMO=0
    for s in "$@"; do
        n=${TMO[$s]/#-/0}
        [ "$n" -ge "$RIG_TIMEOUT" ] || n=$RIG_TIMEOUT
        BOOT_TMO=$((BOOT_TMO + n))
    done
    local devs=("${EXTRA_DEVS[@]}")
    [ "$key" = none ] || [ "$key" = custom ] || read -ra devs <<< "${RIG_L1_DEVICES:-} ${DEVARGS[$key]}"
    make_drives "$key" devs
    # shellcheck disable=SC2054 # the commas are QEMU's
    local cmd=(timeout -k 10 "$BOOT_TMO" qemu-system-x86_64
        -machine q35,accel=tcg,kernel-irqchip=split -cpu max -smp 2 -m "$RIG_L1_MEM"
        -nodefaults -no-user-config -nographic -serial stdio -monitor none -no-reboot
        -device "$IOMMU_DEV" "${devs[@]}"
        -kernel "$RIG_DIR/l1/vmlinuz" -initrd "$st/initrd.cpio"
        -append "console=ttyS0 panic=-1 softlockup_panic=1 quiet ${RIG_IOMMU}_iommu=on iommu=pt transparent_hugepage=never ${RIG_L1_KARGS:-}")
    { echo "# L1 boot $boot of device set $key: $*"; echo "# ${cmd[*]}"; } > "$log"
    watch_l1 "$log" "${cmd[@]}"
    rm -rf "$st"
    split_log "$log" "$@"
}

# watch_l1 LOG CMD...: run CMD (QEMU under timeout) in the background with its
# output appended to LOG (and streamed to stderr with RIG_VERBOSE=1), and watch
# LOG twice a second until CMD ends:
# * a line "RIG-KILL-L1: NAME" (scenario NAME's L1 part passed and asks for L1
#   to die at once, as a power cut: disk-durability) gets QEMU a SIGKILL;
# * if LOG has not grown for RIG_SILENCE seconds (L1 froze without a panic),
#   QEMU gets a SIGKILL too, and the run is lost like any run without a verdict.
# Sets BOOT_RC (CMD's exit status), BOOT_END and BOOT_LOST.
watch_l1() {
    local log=$1 pid tail_pid="" size=-1 now quiet_since=$SECONDS t0=$SECONDS why=""
    shift
    "$@" < /dev/null >> "$log" 2>&1 &
    pid=$!
    # timeout runs QEMU in a process group of its own, out of reach of the terminal's ^C.
    trap 'kill -TERM "$pid" 2> /dev/null; exit 130' INT TERM
    if [ "${RIG_VERBOSE:-0}" = 1 ]; then
        tail -c "+$(($(stat -c %s "$log") + 1))" -f --pid="$pid" "$log" >&2 &
        tail_pid=$!
    fi
    while kill -0 "$pid" 2> /dev/null; do
        now=$(stat -c %s "$log")
        if [ "$now" != "$size" ]; then
            size=$now quiet_since=$SECONDS
            if grep -q "^RIG-KILL-L1: " "$log"; then
                why="killed on request ($(grep -m1 -o "^RIG-KILL-L1: [a-z0-9-]*" "$log" | tr -d '\r'))"
                kill_l1 "$pid" && break
            fi
        elif [ $((SECONDS - quiet_since)) -ge "$RIG_SILENCE" ]; then
            why="silent for ${RIG_SILENCE}s (RIG_SILENCE), killed"
            kill_l1 "$pid" && break
        fi
        sleep 0.5
    done
    BOOT_RC=0
    wait "$pid" 2> /dev/null || BOOT_RC=$? # no "Killed" notice from bash: BOOT_END says it
    trap - INT TERM
    [ -z "$tail_pid" ] || wait "$tail_pid" || true
    BOOT_END="qemu exit status $BOOT_RC after $((SECONDS - t0))s${why:+, $why}"
    echo "# $BOOT_END" >> "$log"
    case $why:$BOOT_RC in
        silent*) BOOT_LOST="L1 was silent for ${RIG_SILENCE}s (frozen?)" ;;
        :124 | :137) BOOT_LOST="L1 timed out after ${BOOT_TMO}s" ;;
        *) BOOT_LOST="qemu exit status $BOOT_RC" ;;
    esac
}

# kill_l1 PID: SIGKILL to the QEMU that timeout PID runs (timeout then exits 137).
kill_l1() {
    local q
    q=$(pgrep -P "$1") || return 1
    kill -KILL "$q"
}

# make_drives KEY ARRAY: L1 drives backed by files on the host. In a device
# set, @DRIVES@ stands for $RIG_DIR/drives/KEY; every @DRIVES@/NAME.img the set
# names is made anew for each boot as an empty sparse file of RIG_DRIVE_SIZE
# (default 1G), raw. The files outlive the boot, so a scenario's host step can
# read what reached them (scenarios/disk-durability.host.sh does).
make_drives() {
    local key=$1 dir=$RIG_DIR/drives/$1 i f
    local -n args=$2
    rm -rf "$dir"
    for i in "${!args[@]}"; do
        [[ ${args[$i]} == *@DRIVES@* ]] || continue
        args[i]=${args[$i]//@DRIVES@/$dir}
        while read -r f; do
            mkdir -p "$dir"
            [ -e "$f" ] || truncate -s "${RIG_DRIVE_SIZE:-1G}" "$f"
        done < <(grep -o "$dir/[A-Za-z0-9_.-]*\.img" <<< "${args[$i]}")
    done
}

# split_log LOG NAME...: LOG's part for each scenario into logs/NAME.log (see
# boot_group); sets GOT and STARTED. A "RIG-KILL-L1: NAME" line counts as
# NAME's PASS (its host step has the last word); L1 died there, so NAME's part
# runs to the end of LOG. The part of a scenario without a verdict
# runs to the end of LOG; scenarios after it, never reached, get no log.
split_log() {
    local log=$1 s i=0 v
    shift
    mkdir -p "$RIG_DIR/run/split"
    rm -f "$RIG_DIR/run/split/"*
    tr -d '\r' < "$log" | awk -v dir="$RIG_DIR/run/split" '
        { print > (dir "/" n + 0) }
        /^RIG-VERDICT: / { close(dir "/" n + 0); n++ }'
    for s in "$@"; do
        GOT[$s]="" STARTED[$s]=0
        rm -f "$RIG_DIR/logs/$s.log"
        [ -f "$RIG_DIR/run/split/$i" ] || continue
        { echo "# $s: part $((i + 1)) of $log"; cat "$RIG_DIR/run/split/$i"; } > "$RIG_DIR/logs/$s.log"
        grep -q "^RIG-L1: scenario $s " "$RIG_DIR/logs/$s.log" && STARTED[$s]=1
        v=$(sed -n "s/^RIG-VERDICT: $s //p" "$RIG_DIR/logs/$s.log")
        case $v in PASS | FAIL\ *) GOT[$s]=$v ;; esac
        # RIG-KILL-L1: the scenario's L1 part passed and L1 was killed on its request.
        ! grep -qx "RIG-KILL-L1: $s" "$RIG_DIR/logs/$s.log" || GOT[$s]=PASS
        i=$((i + 1))
    done
    # Lines after the last verdict (L1 powering off) go to the log of the last scenario that has one.
    if [ -f "$RIG_DIR/run/split/$i" ] && [ $i -gt 0 ]; then
        cat "$RIG_DIR/run/split/$i" >> "$RIG_DIR/logs/${!i}.log" # ${!i}: argument i, the i-th scenario
    fi
    rm -rf "$RIG_DIR/run/split"
}
