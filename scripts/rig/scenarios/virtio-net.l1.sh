#!/bin/sh
# Scenario virtio-net (L1 side): vfio-vmm gives L2 a virtio-net on tap vtap0;
# L1 (169.254.1.1) and L2 (169.254.1.2) ping each other 1000 times, no loss.
. /rig/lib.sh
modprobe tun || rig_fail "modprobe tun failed"
(
    i=0
    while [ ! -e /sys/class/net/vtap0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    ip addr add 169.254.1.1/16 dev vtap0 && ip link set vtap0 up && rig_say "vtap0 up as 169.254.1.1"
) &
# L2 prints "RIG-L2: sample" once its NIC is up: ping it from here then.
rig_on_sample() {
    ping -c 1000 -A -q -W 5 -w 90 169.254.1.2 > "$RIG_TMP/l1-ping.txt" 2>&1
    sed 's/^/RIG-L1: ping L2: /' "$RIG_TMP/l1-ping.txt"
}
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS} rig.addr=169.254.1.2 rig.peer=169.254.1.1"
rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 2 --memory 256M --net tap=vtap0,mac=02:00:00:00:00:02 --cmdline "$cmdline" || rig_fail "$RIG_WHY"
grep -q "1000 packets received, 0% packet loss" "$RIG_TMP/l1-ping.txt" ||
    rig_fail "L1 -> L2 ping: $(grep -h 'packet' "$RIG_TMP/l1-ping.txt" || echo 'no result')"
rig_say "L1 -> L2: $(grep -h 'round-trip' "$RIG_TMP/l1-ping.txt")"
