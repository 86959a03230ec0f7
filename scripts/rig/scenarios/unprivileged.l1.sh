#!/bin/sh
# Scenario unprivileged: an ordinary user runs a guest with the edu passed
# through, with no privilege but what root hands it beforehand:
#   root creates user rig (uid 1000; L1's busybox has no adduser, so the
#   entries go into /etc/passwd and /etc/group), `host check --user rig`
#   lists what rig lacks, `host bind --owner rig` gives it /dev/vfio/N (0600),
#   /dev/kvm goes to group kvm (0660) with rig in it, /dev/net/tun gets
#   udev's 0666 (L1 has no udev), mktap (guest/mktap.c: what
#   `ip tuntap add ... user rig` does) makes tap utap0
#   for rig, and `ulimit -l` raises the memlock limit before su drops to rig;
#   then `host check --user rig --tap utap0` passes, as root and as rig.
# As rig: without the raised limit, run fails with the memlock error, and
# without the tap made for it, with the tap error. Run 1
# (L2 loops edu DMA and disk writes) is checked to run as uid 1000 with an
# empty CapEff, then SIGKILLed mid-I/O; run 2 starts at once on the same edu
# and image and must pass edu-probe (DMA, 100 INTx) and a disk write/read.
. /rig/lib.sh
bdf=$(rig_find_pci 0x1234 0x11e8)
[ -n "$bdf" ] || rig_fail "no edu device in L1"
mib=256
kib=$((mib * 1024))
mkdir -p /etc /home/rig
echo "rig:x:1000:1000:rig:/home/rig:/bin/sh" >> /etc/passwd
echo "rig:x:1000:" >> /etc/group
chown 1000:1000 /home/rig
img=$RIG_TMP/scratch.img
dd if=/dev/zero of="$img" bs=1M count=16 2> /dev/null
chown 1000:1000 "$img"
group=$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")
node=/dev/vfio/${group##*/}
tunmode=$(stat -c %a /dev/net/tun 2> /dev/null)
trap 'chgrp 0 /dev/kvm; chmod 0600 /dev/kvm; [ -z "$tunmode" ] || chmod "$tunmode" /dev/net/tun' EXIT

check() { # check TAG CMD...: a host check; its lines go to the log, its status to $rc
    _t=$1
    shift
    "$@" > "$RIG_TMP/$_t.check" 2>&1
    rc=$?
    sed "s/^/RIG-L1: check $_t: /" "$RIG_TMP/$_t.check"
}
as_rig() { # as_rig CMD: CMD run by rig through su (busybox), with root's environment and limits, for 60 s at most
    rig_say "as rig: $1"
    timeout -s KILL 60 su -p -s /bin/sh rig -c "$1"
}

modprobe tun || rig_fail "modprobe tun failed"
check before vfio-vmm host check --user rig --memory ${mib}M --tap utap0 "$bdf"
[ "$rc" = 1 ] || rig_fail "host check --user rig passed before rig was given anything"
grep -q "^fail /dev/kvm: rig (uid 1000) cannot read and write it.*usermod -aG" "$RIG_TMP/before.check" ||
    rig_fail "host check --user did not report /dev/kvm with its fix"
grep -q "^fail tap utap0: does not exist, and rig cannot create it.*ip tuntap add dev utap0 mode tap user rig" "$RIG_TMP/before.check" ||
    rig_fail "host check --user did not report the missing tap with its fix"

vfio-vmm host bind --owner rig "$bdf" | sed 's/^/RIG-L1: bind: /'
[ "$(stat -c '%u %a' "$node")" = "1000 600" ] ||
    rig_fail "$node is $(stat -c '%u %a' "$node") after bind --owner rig, not 1000 600"
echo "kvm:x:1001:rig" >> /etc/group
{ chgrp 1001 /dev/kvm && chmod 0660 /dev/kvm; } || rig_fail "cannot give /dev/kvm to group kvm"
# /dev/net/tun: udev makes it 0666; L1 has no udev and the kernel makes it 0600.
chmod 0666 /dev/net/tun || rig_fail "cannot chmod /dev/net/tun"
run_tap() { as_rig "vfio-vmm run --kernel $RIG_L2_KERNEL --initramfs $RIG_L2_INITRD --memory 64M --net tap=utap0" > "$RIG_TMP/tap.run" 2>&1; }
run_tap && rig_fail "vfio-vmm run as rig created tap utap0 without CAP_NET_ADMIN"
rig_say "run with a tap rig may not create: $(cat "$RIG_TMP/tap.run")"
grep -q "tap utap0: not permitted to create it.*ip tuntap add dev utap0 mode tap user" "$RIG_TMP/tap.run" ||
    rig_fail "run as rig did not give the tap error"
# `ip tuntap add dev utap0 mode tap user rig` (L1 has no iproute2; busybox tunctl lacks -u):
{ mktap utap0 1000 && ip link set utap0 up; } || rig_fail "cannot make tap utap0 for rig"

check root vfio-vmm host check --user rig --memory ${mib}M --tap utap0 "$bdf"
[ "$rc" = 0 ] || rig_fail "host check --user rig (as root) still fails: $(grep '^fail' "$RIG_TMP/root.check" | head -n1)"
grep -q "^warn memlock: rig's RLIMIT_MEMLOCK is not knowable" "$RIG_TMP/root.check" ||
    rig_fail "host check --user rig (as root) did not say it cannot know rig's memlock limit"

check low as_rig "vfio-vmm host check --user rig --memory ${mib}M $bdf"
{ [ "$rc" = 1 ] && grep -q "^fail memlock" "$RIG_TMP/low.check"; } ||
    rig_fail "host check as rig with L1's default memlock limit did not fail on memlock"
as_rig "vfio-vmm run --kernel $RIG_L2_KERNEL --initramfs $RIG_L2_INITRD --memory ${mib}M --device $bdf" > "$RIG_TMP/low.run" 2>&1 &&
    rig_fail "vfio-vmm run as rig started with L1's default memlock limit"
rig_say "run with the default limit: $(cat "$RIG_TMP/low.run")"
grep -q "RLIMIT_MEMLOCK is .*ulimit -l $kib" "$RIG_TMP/low.run" || rig_fail "run as rig did not give the memlock error"

# From here on rig's limit is exactly the guest's RAM: what `host check` says is enough.
# shellcheck disable=SC3045 # busybox ash's ulimit has -l (soft and hard limit)
ulimit -l $kib || rig_fail "ulimit -l $kib failed"
check self as_rig "vfio-vmm host check --user rig --memory ${mib}M --tap utap0 $bdf"
[ "$rc" = 0 ] || rig_fail "host check as rig fails: $(grep '^fail' "$RIG_TMP/self.check" | head -n1)"
grep -q "^ok   memlock: RLIMIT_MEMLOCK 256 MiB covers 256 MiB" "$RIG_TMP/self.check" ||
    rig_fail "host check as rig did not find the raised memlock limit"

guest() { # guest TAG PHASE: one run as rig of L2 with the edu and the scratch image
    rig_vmm "$1" su -p -s /bin/sh rig -c "exec vfio-vmm run --kernel $RIG_L2_KERNEL --initramfs $RIG_L2_INITRD \
        --cpus 1 --memory ${mib}M --device $bdf --disk path=$img --net tap=utap0 \
        --cmdline 'console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.phase=$2 rig.token=$token'"
}
# L2 says "sample" once its DMA and disk loops are going: record who runs vfio-vmm, then kill it.
rig_on_sample() {
    { cat "/proc/$1/comm"; grep -E '^(Uid|Gid|Groups|CapPrm|CapEff|CapAmb):' "/proc/$1/status"; } > "$RIG_TMP/killed.status"
    sleep 2
    kill -KILL "$1"
}
token=$(rig_token)
RUST_LOG=info guest busy busy
[ "$RIG_RC" = 137 ] || rig_fail "run 1 was not killed by SIGKILL mid-I/O: ${RIG_WHY:-it passed}"
sed 's/^/RIG-L1: run 1: /' "$RIG_TMP/killed.status"
grep -q "^vfio-vmm$" "$RIG_TMP/killed.status" || rig_fail "the killed process was not vfio-vmm: $(head -n1 "$RIG_TMP/killed.status")"
grep -q "^Uid:	1000	1000	1000	1000$" "$RIG_TMP/killed.status" || rig_fail "vfio-vmm did not run as uid 1000"
grep -q "^CapEff:	0000000000000000$" "$RIG_TMP/killed.status" || rig_fail "vfio-vmm had capabilities: $(grep CapEff "$RIG_TMP/killed.status")"
rig_saw busy "RIG-L2: busy:" || rig_fail "L2's DMA and disk loops never got going"
RUST_LOG=info guest after check || rig_fail "run 2 right after the SIGKILL: $RIG_WHY"
rig_saw after "edu-probe: all checks passed" || rig_fail "run 2: edu-probe did not pass"
rig_saw after "RIG-L2: disk ok $token" || rig_fail "run 2: the image was not usable"
rig_saw after "$bdf BAR0: 32-bit memory BAR, 1 MiB mapped in 1 slot(s), trapped accesses: 0 reads, 0 writes" ||
    rig_fail "run 2: BAR0 of $bdf was not fully mmapped: $(grep "^$bdf BAR0" "$RIG_TMP/after.out")"
