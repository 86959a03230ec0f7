#!/bin/sh
# Scenario seccomp: vfio-vmm with the default filters (--seccomp true) runs
# L2 with the edu passed through, a virtio-net, a writable disk, vsock, rng
# and the API (`run --api-socket` with the VM on the command line). Once L2
# has used every device (seccomp.l2.sh), L1 pings it, talks to it over vsock
# and holds an API connection open; then every task of vfio-vmm must show
# `Seccomp: 2` (a filter) in /proc/PID/task/*/status, every kind of thread
# must be there, and vmm.shutdown must end it with 0. (A denied call ending
# vfio-vmm with its message is a cargo test: seccomp::tests.)
. /rig/lib.sh
bdf=$(rig_find_pci 0x1234 0x11e8)
[ -n "$bdf" ] || rig_fail "no edu device in L1"
rig_bind_vfio "$bdf" > /dev/null || rig_fail "cannot bind $bdf to vfio-pci"
modprobe tun || rig_fail "modprobe tun failed"
S=$RIG_TMP/api.sock
dd if=/dev/zero of="$RIG_TMP/disk.img" bs=1M count=4 2> /dev/null
out=$RIG_TMP/vmm.out
mkfifo "$RIG_TMP/stdin"
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.addr=169.254.1.2 rig.peer=169.254.1.1"
RUST_LOG=info vfio-vmm run --api-socket "$S" --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cmdline "$cmdline" --cpus 1 --memory 256M --device "$bdf" --net tap=vtap0,mac=02:00:00:00:00:02 \
    --disk path="$RIG_TMP/disk.img",id=d0 --vsock cid=3,socket="$RIG_TMP/v.sock" --rng \
    < "$RIG_TMP/stdin" > "$out" 2>&1 &
pid=$!
vmm_fail() { # vmm_fail REASON: fails the scenario with vfio-vmm's output (L2's console) shown
    sed 's/^/[vmm] /' "$out"
    rig_fail "$@"
}
# The serial console's stdin stays open (its reader thread stays) until the end.
exec 3> "$RIG_TMP/stdin"
i=0
while [ ! -e /sys/class/net/vtap0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
{ ip addr add 169.254.1.1/16 dev vtap0 && ip link set vtap0 up; } || vmm_fail "cannot configure vtap0"
i=0
until grep -q "RIG-L2: seccomp guest ready" "$out"; do
    ! grep -q "RIG-L2: FAIL" "$out" || vmm_fail "L2: $(grep -m1 "RIG-L2: FAIL" "$out")"
    kill -0 $pid 2> /dev/null || vmm_fail "vfio-vmm ended early: $(grep -m1 seccomp "$out" || tail -n1 "$out")"
    [ $i -lt 1200 ] || vmm_fail "L2 never got ready"
    sleep 0.1; i=$((i + 1))
done
ping -c 20 -A -q -W 5 169.254.1.2 > "$RIG_TMP/ping.txt" 2>&1 || vmm_fail "L1 -> L2 ping: $(tail -n2 "$RIG_TMP/ping.txt")"
printf 'CONNECT 1024\n' | socat -t 10 - UNIX-CONNECT:"$RIG_TMP/v.sock" > "$RIG_TMP/vsock.out" 2>&1
grep -q "^seccomp-ok" "$RIG_TMP/vsock.out" || vmm_fail "no answer from L2 on vsock port 1024: $(cat "$RIG_TMP/vsock.out")"
vfio-vmm remote --api-socket "$S" counters > "$RIG_TMP/counters.out" 2>&1 || vmm_fail "vm.counters failed: $(cat "$RIG_TMP/counters.out")"
# An idle connection keeps its api-conn thread alive while the tasks are read.
sleep 4 | socat -t 5 - UNIX-CONNECT:"$S" > /dev/null 2>&1 &
sleep 1
# NAME MODE per task: the thread's name and its Seccomp field (2: filtered).
for t in "/proc/$pid/task/"*; do
    awk '/^Name:/ {n = $2} /^Seccomp:/ {print n, $2}' "$t/status"
done > "$RIG_TMP/tasks.txt"
sort "$RIG_TMP/tasks.txt" | uniq -c | sed 's/^ */RIG-L1: tasks (count, name, Seccomp): /'
# kvm-nx-lpage-recovery is KVM's own worker, in the VMM's thread group on
# newer kernels; it runs no user code, and no filter applies to it.
unfiltered=$(awk '$2 != 2 && $1 !~ /^kvm-nx-lpage/ {printf " %s(%s)", $1, $2}' "$RIG_TMP/tasks.txt")
[ -z "$unfiltered" ] || vmm_fail "tasks without a seccomp filter:$unfiltered"
names=$(awk '{print $1}' "$RIG_TMP/tasks.txt" | tr '\n' ' ')
for want in vfio-vmm spawner signals api api-conn vm vcpu serial-in virtio-net-vtap virtio-blk-d0 virtio-vsock-3 virtio-rng; do
    case " $names " in *" $want "*) ;; *) vmm_fail "no $want thread among: $names" ;; esac
done
rig_say "every task of vfio-vmm has a seccomp filter: $names"
vfio-vmm remote --api-socket "$S" shutdown-vmm > /dev/null 2>&1 || vmm_fail "vmm.shutdown failed"
wait $pid
rc=$?
exec 3>&-
sed 's/^/[vmm] /' "$out"
vmm_fail() { rig_fail "$@"; }
[ $rc = 0 ] || vmm_fail "vfio-vmm exited $rc after vmm.shutdown"
! grep -q "seccomp: thread" "$out" || vmm_fail "a denied call: $(grep -m1 'seccomp: thread' "$out")"
grep -q "^$bdf BAR0: .*trapped accesses: 0 reads, 0 writes" "$out" || vmm_fail "no clean BAR0 report for $bdf"
