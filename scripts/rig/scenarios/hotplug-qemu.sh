#!/bin/sh
# Scenario hotplug, QEMU's half of the benchmark line (sourced by
# hotplug.l1.sh after vfio-vmm's part, with its nic, vmm_answer, vmm_bound
# and api-common.sh's wait_for and fail, which read out and pid): L1's
# qemu-system-x86_64 boots the same L2 (kernel, initramfs, 2 vCPUs, 256M,
# the same command line plus rig.vmm=qemu) with an empty
# pcie-root-port (q35's root bus takes no hotplugged device) and a QMP
# socket; device_add vfio-pci of the same e1000e into that port, timed to
# QMP's answer and to L2's "e1000e bound" line. Then the line with both
# VMMs' times and the ratios. Never fails on speed, only if QEMU's side
# cannot run.
# shellcheck disable=SC2154 # nic, l2_args, vmm_answer, vmm_bound: set by hotplug.l1.sh
command -v qemu-system-x86_64 > /dev/null || rig_fail "no qemu-system-x86_64 in L1 (NEEDS qemu)"
command -v socat > /dev/null || rig_fail "no socat in L1 (NEEDS socat)"
drv=$(basename "$(readlink "/sys/bus/pci/devices/$nic/driver" 2> /dev/null)")
[ "$drv" = vfio-pci ] || vfio-vmm host bind "$nic" 2>&1 | sed 's/^/RIG-L1: bind: /'
Q=$RIG_TMP/qmp.sock
out=$RIG_TMP/qemu.out
show() { sed 's/^/[qemu] /' "$out"; }
qemu-system-x86_64 -machine q35,accel=kvm -cpu host -smp 2 -m 256M -nodefaults -no-user-config \
    -nographic -serial stdio -monitor none -no-reboot \
    -device pcie-root-port,id=rp1,slot=1 -qmp "unix:$Q,server=on,wait=off" \
    -kernel "$RIG_L2_KERNEL" -initrd "$RIG_L2_INITRD" \
    -append "console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} $l2_args rig.vmm=qemu" > "$out" 2>&1 &
pid=$!
wait_for "RIG-L2: hotplug guest ready" 120
# QMP through socat, fed from a FIFO that this shell keeps open (fd 3).
mkfifo "$RIG_TMP/qmp.in"
exec 3<> "$RIG_TMP/qmp.in"
socat -t 5 - "UNIX-CONNECT:$Q" < "$RIG_TMP/qmp.in" > "$RIG_TMP/qmp.out" 2>&1 &
qmp=$!
answers() { grep -cE '"(return|error)"' "$RIG_TMP/qmp.out"; }
qmp_wait() { # qmp_wait N SECONDS: until QMP has given N answers
    _i=0
    until [ "$(answers)" -ge "$1" ]; do
        kill -0 $qmp 2> /dev/null || fail "QMP connection closed: $(cat "$RIG_TMP/qmp.out")"
        [ $_i -lt $(($2 * 50)) ] || fail "QMP gave no answer in $2 s: $(cat "$RIG_TMP/qmp.out")"
        sleep 0.02; _i=$((_i + 1))
    done
}
echo '{"execute":"qmp_capabilities"}' >&3
qmp_wait 1 10
rig_cs; t0=$RIG_CS
echo "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"vfio-pci\",\"host\":\"$nic\",\"bus\":\"rp1\",\"id\":\"hp0\"}}" >&3
qmp_wait 2 60
rig_cs; q_answer=$((RIG_CS - t0))
sed 's/^/RIG-L1: qmp: /' "$RIG_TMP/qmp.out"
! grep -q '"error"' "$RIG_TMP/qmp.out" || fail "QEMU's device_add failed: $(grep '"error"' "$RIG_TMP/qmp.out")"
wait_for "RIG-L2: round 1: e1000e bound" 100
rig_cs; q_bound=$((RIG_CS - t0))
echo '{"execute":"quit"}' >&3
i=0
while kill -0 $pid 2> /dev/null; do
    [ $i -lt 100 ] || { kill -9 $pid; break; }
    sleep 0.1; i=$((i + 1))
done
wait $pid 2> /dev/null
kill $qmp 2> /dev/null
wait $qmp 2> /dev/null
exec 3>&-
show
ratio() { # ratio Y X: Y/X with two decimals
    _x=$2; [ "$_x" -gt 0 ] || _x=1
    rig_secs $(($1 * 100 / _x))
}
rig_out "hotplug: add→answer vfio-vmm $(rig_secs "$vmm_answer") s, qemu $(rig_secs $q_answer) s (ratio $(ratio $q_answer "$vmm_answer")); add→driver bound vfio-vmm $(rig_secs "$vmm_bound") s, qemu $(rig_secs $q_bound) s (ratio $(ratio $q_bound "$vmm_bound"))"
