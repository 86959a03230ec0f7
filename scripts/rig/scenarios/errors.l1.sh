#!/bin/sh
# Scenario errors: each bad --device input ends vfio-vmm with its one-line
# error and a non-zero status before any guest starts, leaving nothing bound
# or open. Also: SIGTERM stops a running guest cleanly and frees the device.
. /rig/lib.sh
k="--kernel $RIG_L2_KERNEL --initramfs $RIG_L2_INITRD --memory 256M"
# expect_error NAME SUBSTRING ARGS...: vfio-vmm run ARGS must fail saying SUBSTRING.
expect_error() {
    name=$1 want=$2
    shift 2
    # shellcheck disable=SC2086 # $k is split on purpose
    out=$(timeout 60 vfio-vmm run $k --cmdline console=ttyS0 "$@" 2>&1)
    rc=$?
    rig_say "$name: exit $rc: $(echo "$out" | tail -n1)"
    [ $rc != 0 ] && [ $rc != 124 ] || rig_fail "$name: vfio-vmm exited $rc"
    echo "$out" | grep -qF -- "$want" || rig_fail "$name: error does not say '$want': $out"
}
edu=$(rig_find_pci 0x1234 0x11e8)
set -- $(rig_find_pci 0x8086 0x100e)
[ -n "$edu" ] && [ $# = 2 ] || rig_fail "L1 lacks edu ($edu) or the two bridged e1000s ($*)"
e1=$1 e2=$2
modprobe e1000 || rig_fail "modprobe e1000 failed"

expect_error no-such-device "no PCI device 0000:00:1f.7" --device 0000:00:1f.7
expect_error malformed-bdf "zz:00" --device zz:00
expect_error not-bound "vfio-vmm host bind $e1" --device "$e1"

rig_bind_vfio "$e1" > /dev/null || rig_fail "cannot bind $e1 to vfio-pci"
expect_error group-not-viable "$e2 is on e1000" --device "$e1"

rig_bind_vfio "$edu" > /dev/null || rig_fail "cannot bind $edu to vfio-pci"
echo "nobody:x:65534:65534:nobody:/:/bin/sh" >> /etc/passwd
chmod 666 /dev/kvm /dev/vfio/*
out=$(ulimit -l 1024; su nobody -s /bin/sh -c "vfio-vmm run $k --device $edu" 2>&1)
rig_say "memlock: $(echo "$out" | tail -n1)"
echo "$out" | grep -q "RLIMIT_MEMLOCK is" || rig_fail "memlock: no RLIMIT_MEMLOCK error: $out"

# busy: a first vfio-vmm holds the group (its L2 sleeps); a second is refused.
vfio-vmm run $k --device "$edu" --cmdline "console=ttyS0 quiet" > "$RIG_TMP/first.out" 2>&1 &
first=$!
i=0
while ! grep -q "RIG-L2: init" "$RIG_TMP/first.out" && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
grep -q "RIG-L2: init" "$RIG_TMP/first.out" || rig_fail "busy: the first vfio-vmm did not boot L2: $(tail -n3 "$RIG_TMP/first.out")"
expect_error busy "is in use by" --device "$edu"

# SIGTERM: the first one stops at once with status 0 and releases the group.
kill -TERM "$first"
i=0
while kill -0 "$first" 2> /dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kill -0 "$first" 2> /dev/null && rig_fail "SIGTERM: vfio-vmm still running 10 s later"
wait "$first"
rc=$?
rig_say "SIGTERM: vfio-vmm exited $rc after $((i / 10)).$((i % 10))s"
[ $rc = 0 ] || rig_fail "SIGTERM: vfio-vmm exited $rc"
held=$(ls -l /proc/[0-9]*/fd 2> /dev/null | grep -c /dev/vfio/)
[ "$held" = 0 ] || rig_fail "$held open /dev/vfio descriptors remain"
for d in "$edu" "$e1"; do
    [ "$(readlink /sys/bus/pci/devices/$d/driver)" != "" ] || rig_fail "$d was left without a driver"
done
[ "${e2}" ] && [ "$(basename "$(readlink /sys/bus/pci/devices/$e2/driver)")" = e1000 ] || rig_fail "$e2 lost its e1000 driver"
rig_say "all errors reported; nothing left open"
