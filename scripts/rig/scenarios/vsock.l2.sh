#!/bin/sh
# Scenario vsock (L2 side, see vsock.l1.sh): a server on vsock port 5000 for
# L1's 8 connections, 8 connections of our own to L1 (CID 2, port 6000) at
# once, each 2 MiB each way; then L1's result arrives on port 5001.
. /rig/lib.sh
{ modprobe virtio_pci && modprobe vmw_vsock_virtio_transport; } || fail "cannot load the virtio vsock transport"
wait_until 50 test -e /dev/vsock || fail "no /dev/vsock"
# shellcheck disable=SC2016 # for the server's sh
socat -t 120 VSOCK-LISTEN:5000,fork,backlog=16 SYSTEM:'f=$(mktemp); cat > $f; cat $f; rm $f' &
socat -u VSOCK-LISTEN:5001 CREATE:/tmp/result &
dd if=/dev/urandom of=/tmp/data bs=1M count=2 2> /dev/null
want=$(md5sum < /tmp/data)
sleep 0.5
echo "RIG-L2: sample" # L1 connects now
pids=""
for i in 1 2 3 4 5 6 7 8; do
    socat -t 120 VSOCK-CONNECT:2:6000 STDIO < /tmp/data > "/tmp/g2h.$i" 2> "/tmp/g2h.$i.err" &
    pids="$pids $!"
done
all_done() { for p in $pids; do [ ! -d "/proc/$p" ] || grep -q '^State:.*Z' "/proc/$p/status" || return 1; done; }
wait_until 900 all_done || echo "RIG-L2: L2 -> L1 connections still running after 90 s"
wait_until 1200 grep -q "^h2g [0-9]*$" /tmp/result || fail "L1's result never came (port 5001)"
ok=0
for i in 1 2 3 4 5 6 7 8; do
    echo "RIG-L2: L2 -> L1 connection $i: $(wc -c < "/tmp/g2h.$i") bytes back $(cat "/tmp/g2h.$i.err")"
    [ "$(md5sum < "/tmp/g2h.$i")" != "$want" ] || ok=$((ok + 1))
done
echo "RIG-L2: L1 says: $(cat /tmp/result)"
[ $ok = 8 ] || fail "L2 -> L1: $ok of 8 connections echoed 2 MiB intact"
grep -qx "h2g 8" /tmp/result || fail "L1 -> L2 failed: $(cat /tmp/result)"
