# shellcheck shell=sh
# Shared by disk-direct and disk-durability (device set l1disk): L1's own
# virtio-blk disk, backed by a file on the host, and how vfio-vmm opened it.

# l1_disk: prints /dev/vdX, L1's disk with serial rig-l1disk (scenarios.table).
# L1 has no udev: its drivers are loaded here.
l1_disk() {
    modprobe virtio_pci && modprobe virtio_blk || return 1
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

# fd_flags PID PATH: the octal open flags (/proc/PID/fdinfo) of each of PID's
# descriptors of PATH, on one line; fails if there is none. vfio-vmm holds
# two: the lock holder (never O_DIRECT) and the one it does I/O on.
fd_flags() {
    _all=""
    for _f in /proc/"$1"/fd/*; do
        [ "$(readlink "$_f")" = "$2" ] || continue
        _all="$_all $(awk '$1 == "flags:" {print $2}' "/proc/$1/fdinfo/${_f##*/}")"
    done
    [ -n "$_all" ] && echo "${_all# }"
}

# o_direct FLAGS: are octal open flags O_DIRECT (040000 on x86)?
o_direct() { [ $((0$1 & 040000)) != 0 ]; }
