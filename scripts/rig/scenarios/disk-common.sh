# shellcheck shell=sh
# Shared by disk-direct and disk-durability (device set l1disk): L1's own
# virtio-blk disk, backed by a file on the host, and how vfio-vmm opened it.

# l1_disk: prints /dev/vdX, L1's disk with serial rig-l1disk (scenarios.table).
l1_disk() {
    modprobe virtio_blk 2> /dev/null
    _i=0
    while [ $_i -lt 50 ]; do
        for _b in /sys/block/vd*; do
            [ "$(cat "$_b/serial" 2> /dev/null)" != rig-l1disk ] || { echo "/dev/${_b##*/}"; return 0; }
        done
        sleep 0.1
        _i=$((_i + 1))
    done
    return 1
}

# fd_flags PID PATH: the octal open flags (/proc/PID/fdinfo) of PID's descriptor of PATH.
fd_flags() {
    for _f in /proc/"$1"/fd/*; do
        [ "$(readlink "$_f")" = "$2" ] || continue
        awk '$1 == "flags:" {print $2}' "/proc/$1/fdinfo/${_f##*/}"
        return 0
    done
    return 1
}

# o_direct FLAGS: are octal open flags O_DIRECT (040000 on x86)?
o_direct() { [ $((0$1 & 040000)) != 0 ]; }
