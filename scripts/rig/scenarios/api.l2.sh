#!/bin/sh
# Scenario api (L2 side): the edu passed through (edu-probe as in edu.l2.sh),
# the read-only disk and the rng are there; then serve vsock port 1024
# ("api-ok TOKEN edu-ok"), print a tick every 0.5 s (L1 checks that they stop
# while the VM is paused), and power off on the ACPI power button's KEY_POWER
# (vm.power-button); otherwise wait for L1's vmm.shutdown.
. /rig/lib.sh
edu=$(find_pci 0x1234 0x11e8)
[ -n "$edu" ] || fail "no edu device on L2's PCI bus"
for m in uio_pci_generic virtio_pci virtio_blk virtio_rng virtio_net vmw_vsock_virtio_transport button evdev; do
    modprobe $m || fail "cannot load $m"
done
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id
wait_until 50 test -d "/sys/bus/pci/devices/$edu/uio" || fail "uio_pci_generic did not take $edu"
edu-probe "$edu" "/dev/$(ls "/sys/bus/pci/devices/$edu/uio")" 20 > /tmp/edu.txt 2>&1 || fail "edu-probe: $(tail -n1 /tmp/edu.txt)"
echo "RIG-L2: edu-probe: $(tail -n1 /tmp/edu.txt)"
wait_until 50 test -e /sys/block/vda/ro || fail "no /dev/vda"
[ "$(cat /sys/block/vda/ro)" = 1 ] || fail "/dev/vda is not read-only"
grep -q virtio_rng /sys/class/misc/hw_random/rng_current || fail "no virtio_rng"
wait_until 50 test -e /sys/class/net/eth0 || fail "no eth0 (vm.add-net)"
# The power button (PNP0C0C, notified by the GED's _EVT) as an input device.
button=""
# shellcheck disable=SC2317 # called through wait_until
find_button() {
    for i in /sys/class/input/input*; do
        [ "$(cat "$i/name")" = "Power Button" ] || continue
        for e in "$i"/event*; do [ -e "$e" ] && button=/dev/input/${e##*/}; done
    done
    [ -n "$button" ] && [ -c "$button" ]
}
wait_until 50 find_button || fail "no Power Button input device (button, evdev, the GED)"
echo "RIG-L2: power button at $button"
socat VSOCK-LISTEN:1024 SYSTEM:"echo api-ok $(arg rig.token) edu-ok" &
(n=0; while :; do n=$((n + 1)); echo "RIG-L2: tick $n"; sleep 0.5; done) &
sleep 0.5
echo "RIG-L2: api guest ready"
# One input_event (x86-64: 16-byte time, u16 type, u16 code, s32 value):
# EV_KEY (1), KEY_POWER (116), pressed.
while :; do
    ev=$(dd if="$button" bs=24 count=1 2> /dev/null | od -An -tu2 -j16 -N4 | tr -s ' ')
    [ "$ev" = " 1 116" ] && break
done
echo "RIG-L2: KEY_POWER: powering off"
exit 0 # /init powers off
