#!/bin/sh
# Scenario vsock: vfio-vmm's virtio-vsock (hybrid UNIX socket). 8 connections
# at once each way; on each, the client sends 2 MiB of random data and shuts
# down its side, the server sends them all back after that EOF (2 MiB each way,
# half-closes both ways), and the client compares md5s. L1 -> L2 through $sock
# ("CONNECT 5000", "OK N") to L2's socat server; L2 -> L1 (CID 2 port 6000) to
# ${sock}_6000, a socat server here. L2 (vsock.l2.sh) checks its side; L1 tells
# it its own result on port 5001. (A plain echo can deadlock socat: it blocks
# writing while its peer's buffers are full, and then reads nothing.)
. /rig/lib.sh
sock=$RIG_TMP/v.sock
dd if=/dev/urandom of="$RIG_TMP/data" bs=1M count=2 2> /dev/null
want=$(md5sum < "$RIG_TMP/data")
# shellcheck disable=SC2016 # for the server's sh
socat -t 120 UNIX-LISTEN:"${sock}_6000",fork,backlog=16 SYSTEM:'f=$(mktemp); cat > $f; cat $f; rm $f' &
h2g() { # h2g PORT N [FILE]: connection N to L2's PORT, sends FILE; what comes back in $RIG_TMP/h2g.PORT.N.raw
    _d=$RIG_TMP/h2g.$1.$2
    mkfifo "$_d.in"
    socat -t 120 UNIX-CONNECT:"$sock" STDIO < "$_d.in" > "$_d.raw" 2> "$_d.err" &
    {
        echo "CONNECT $1"
        _i=0
        until head -n1 "$_d.raw" | grep -q '^OK [0-9]*$'; do
            [ $_i -lt 300 ] || { echo "no OK line: $(head -c 80 "$_d.raw")" > "$_d.err"; return 1; }
            sleep 0.1; _i=$((_i + 1))
        done
        [ -z "$3" ] || cat "$3"
    } > "$_d.in"
    wait $!
}
rig_on_sample() { # L2's echo server listens: 8 connections to it at once
    pids=""
    for i in 1 2 3 4 5 6 7 8; do
        h2g 5000 "$i" "$RIG_TMP/data" &
        pids="$pids $!"
    done
    # shellcheck disable=SC2086 # pids: words
    wait $pids
    ok=0
    for i in 1 2 3 4 5 6 7 8; do
        r=$RIG_TMP/h2g.5000.$i.raw
        n=$(head -n1 "$r" | wc -c)
        got=$(tail -c +$((n + 1)) "$r" | md5sum)
        rig_say "L1 -> L2 connection $i: $(head -n1 "$r"), $(($(wc -c < "$r") - n)) bytes back, $(cat "$RIG_TMP/h2g.5000.$i.err")"
        [ "$got" != "$want" ] || ok=$((ok + 1))
    done
    echo "$ok" > "$RIG_TMP/h2g.ok"
    echo "h2g $ok" > "$RIG_TMP/result"
    h2g 5001 result "$RIG_TMP/result" || rig_say "sending the result to L2 failed: $(cat "$RIG_TMP/h2g.5001.result.err")"
    rig_say "sent L2 the result: $(cat "$RIG_TMP/result")"
}
cmdline="console=ttyS0 panic=-1${RIG_L2_KARGS:+ $RIG_L2_KARGS}"
rig_vmm vfio-vmm vfio-vmm run --kernel "$RIG_L2_KERNEL" --initramfs "$RIG_L2_INITRD" \
    --cpus 2 --memory 256M --vsock cid=3,socket="$sock" --cmdline "$cmdline" || rig_fail "$RIG_WHY"
[ "$(cat "$RIG_TMP/h2g.ok" 2> /dev/null)" = 8 ] ||
    rig_fail "L1 -> L2: $(cat "$RIG_TMP/h2g.ok" 2> /dev/null || echo no) of 8 connections echoed 2 MiB intact"
[ ! -e "$sock" ] || rig_fail "vfio-vmm left its socket $sock behind"
rig_say "vsock: 8 + 8 connections echoed 2 MiB each intact"
