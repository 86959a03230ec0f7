#!/bin/sh
# Scenario unprivileged (L2 side), in two phases (rig.phase):
#   busy   loops edu-probe (a DMA round trip and one INTx each) and 1 MiB
#          fsynced writes to /dev/vda, says "RIG-L2: sample" once both made
#          progress, and keeps going until L1 SIGKILLs the VMM;
#   check  the run right after: the full edu-probe (DMA, 100 INTx) and a
#          token written to /dev/vda, synced, and read back from the disk.
. /rig/lib.sh
for m in virtio_pci virtio_blk uio_pci_generic; do modprobe $m || fail "cannot load $m"; done
edu=$(find_pci 0x1234 0x11e8)
[ -n "$edu" ] || fail "no edu device on L2's PCI bus"
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id
wait_until 50 test -d "/sys/bus/pci/devices/$edu/uio" || fail "uio_pci_generic did not take $edu"
uio=/dev/$(ls "/sys/bus/pci/devices/$edu/uio")
wait_until 50 test -b /dev/vda || fail "no /dev/vda"
count() { cat "/tmp/$1.n" 2> /dev/null || echo 0; }
busy_enough() { [ "$(count edu)" -ge 3 ] && [ "$(count disk)" -ge 3 ]; }
case $(arg rig.phase) in
busy)
    (
        n=0
        while edu-probe "$edu" "$uio" 1 > /tmp/edu.txt 2>&1; do n=$((n + 1)); echo $n > /tmp/edu.n; done
        echo "RIG-L2: edu loop stopped: $(tail -n1 /tmp/edu.txt)"
    ) &
    (
        n=0
        while dd if=/dev/urandom of=/dev/vda bs=64k count=16 seek=$((n % 16 * 16)) conv=fsync 2> /dev/null; do
            n=$((n + 1))
            echo $n > /tmp/disk.n
        done
        echo "RIG-L2: disk loop stopped"
    ) &
    wait_until 900 busy_enough || fail "the loops made no progress: edu $(count edu), disk $(count disk)"
    echo "RIG-L2: busy: $(count edu) edu DMA rounds, $(count disk) MiB written"
    echo "RIG-L2: sample"
    sleep 120
    fail "still running 120 s after asking L1 to kill the VMM"
    ;;
check)
    edu-probe "$edu" "$uio" 100 > /tmp/edu-probe.txt 2>&1
    rc=$?
    sed 's/^/RIG-L2: /' /tmp/edu-probe.txt
    [ $rc = 0 ] || fail "edu-probe failed"
    token=$(arg rig.token)
    echo "$token" | dd of=/dev/vda bs=512 seek=1000 conv=fsync 2> /dev/null || fail "cannot write to /dev/vda"
    echo 3 > /proc/sys/vm/drop_caches
    back=$(dd if=/dev/vda bs=512 skip=1000 count=1 2> /dev/null | head -n1)
    [ "$back" = "$token" ] || fail "read back '$back' from /dev/vda, wrote '$token'"
    echo "RIG-L2: disk ok $back"
    ;;
*) fail "no rig.phase on the command line" ;;
esac
