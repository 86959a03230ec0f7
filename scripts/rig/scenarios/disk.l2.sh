#!/bin/sh
# Scenario disk (L2 initramfs side): mount root= (ext4 on virtio-blk; ro or rw
# as the command line says) at /newroot; l2-init then switch_roots to it.
. /rig/lib.sh # fail, arg, wait_until, $cmdline
for m in virtio_pci virtio_blk ext4; do modprobe $m || fail "cannot load $m"; done
root=$(arg root)
opts=rw
# shellcheck disable=SC2154 # cmdline: set by lib.sh
case " $cmdline " in *" ro "*) opts=ro ;; esac
wait_until 50 test -b "$root" || fail "no block device $root"
mkdir -p /newroot
mount -t ext4 -o "$opts" "$root" /newroot || fail "cannot mount $root ($opts)"
