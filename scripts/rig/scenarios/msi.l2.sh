#!/bin/sh
# Scenario msi (L2 side): snd_hda_intel binds the passed-through HD Audio
# controller with MSI and finds its codec by interrupt-driven responses (it
# falls back to polling, and says so, when interrupts do not arrive).
. /rig/lib.sh
modprobe snd_hda_codec_generic && modprobe snd_hda_intel || fail "cannot load snd_hda_intel"
i=0
while [ ! -e /proc/asound/card0/codec#0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 1
grep snd_hda /proc/interrupts | sed 's/^/RIG-L2: irq /'
dmesg | grep -iE "hda|msi|polling" | sed 's/^/RIG-L2: dmesg: /'
[ -e /proc/asound/card0/codec#0 ] || fail "no codec found on the controller"
dmesg | grep -qiE "switching to polling|disabling MSI|No response from codec" && fail "interrupts did not arrive (polling)"
line=$(grep snd_hda_intel /proc/interrupts)
echo "$line" | grep -q MSI || fail "snd_hda_intel is not on an MSI vector"
count=$(echo "$line" | awk '{for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i} END {print s + 0}')
[ "$count" -gt 0 ] || fail "the MSI vector never fired"
echo "RIG-L2: msi checks passed ($count interrupts)"
