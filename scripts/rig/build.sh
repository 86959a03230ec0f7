#!/bin/bash
# Build the nested test rig: kernels, cached initramfs parts and a static vfio-vmm.
# Everything lands in ${RIG_DIR:-target/rig}; a second run with nothing changed
# only re-checks and takes a few seconds. See scripts/rig/README.md.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RIG_DIR=${RIG_DIR:-$ROOT/target/rig}
PROFILE=${RIG_CARGO_PROFILE:-release}
TRIPLE=x86_64-unknown-linux-gnu

# Kernel modules (plus their dependencies) put into each initramfs.
L1_MODULES=(vfio vfio_iommu_type1 vfio_pci kvm_amd virtio_pci virtio_net virtio_blk e1000e e1000 nvme
            uio_pci_generic tun bridge veth)
# L2 gets a module for every device vfio-vmm offers (modprobe --show-depends
# resolves each one's dependencies and softdeps from modules.dep).
L2_MODULES=(e1000e e1000 virtio_pci virtio_net uio_pci_generic snd_hda_intel snd_hda_codec_generic
            virtio_blk virtio_rng vmw_vsock_virtio_transport nvme ext4 button evdev)

say() { echo "rig-build: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -q "$@"; }

# --- 1. host packages --------------------------------------------------------
install_packages() {
    local p missing=()
    for p in qemu-system-x86 busybox-static cpio kmod gcc libc6-dev iperf3 socat xz-utils binutils e2fsprogs fio; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]}"
    apt_get install -y --no-install-recommends "${missing[@]}" ||
        { apt_get update && apt_get install -y --no-install-recommends "${missing[@]}"; }
}

# --- 2. kernel: the linux-image-* that linux-image-amd64 points to ------------
download() { apt-get -q -o APT::Sandbox::User=root download "$1"; }
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }

fetch_kernel() { # prints the cached .deb
    local pkg deb
    pkg=$(kernel_pkg)
    [ -n "$pkg" ] || { apt_get update >&2 || true; pkg=$(kernel_pkg); }
    # no package name (offline, no apt lists): reuse whatever kernel is cached
    deb=$(find "$RIG_DIR/kernel" -name "${pkg:-linux-image-*}_*.deb" | head -n1)
    if [ -z "$deb" ] && [ -n "$pkg" ]; then
        say "fetching $pkg"
        rm -f "$RIG_DIR"/kernel/*.deb # an older ABI
        (cd "$RIG_DIR/kernel" && { download "$pkg" || { apt_get update && download "$pkg"; }; }) >&2
        deb=$(find "$RIG_DIR/kernel" -name "${pkg}_*.deb" | head -n1)
    fi
    [ -n "$deb" ] || die "cannot resolve linux-image-amd64 (apt lists?) and no kernel is cached"
    echo "$deb"
}

# --- helpers for initramfs parts ---------------------------------------------
# up_to_date OUT KEY: true if OUT exists and was built from KEY.
up_to_date() { [ -e "$1" ] && [ "$(cat "$1.key" 2>/dev/null)" = "$2" ]; }
mkcpio() { # mkcpio DIR OUT
    (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$2.tmp"
    mv "$2.tmp" "$2"
}

add_busybox() { # add_busybox DIR
    local a
    mkdir -p "$1"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,root}
    cp /bin/busybox "$1/bin/busybox"
    for a in $(/bin/busybox --list-full); do
        [ -e "$1/$a" ] || ln -s /bin/busybox "$1/$a"
    done
}

add_modules() { # add_modules DIR KTREE KV MODULE...
    local dst=$1 kt=$2 kv=$3 m f
    shift 3
    mkdir -p "$dst/lib/modules/$kv"
    for m in "$@"; do
        modprobe -d "$kt" -S "$kv" --show-depends "$m" | awk '$1 == "insmod" {print $2}' |
            while read -r f; do
                mkdir -p "$dst/$(dirname "${f#"$kt"}")"
                cp "$f" "$dst/${f#"$kt"}"
            done
    done
    cp "$kt/lib/modules/$kv"/modules.{builtin,builtin.modinfo,order} "$dst/lib/modules/$kv/"
    depmod -b "$dst" "$kv"
}

base_cpio() { # base_cpio OUT KTREE KV MODULE...: busybox + modules
    local out=$1 st="$RIG_DIR/stage"
    shift
    say "building $out"
    rm -rf "$st"; add_busybox "$st"; add_modules "$st" "$@"
    mkcpio "$st" "$out"; rm -rf "$st"
}

# extract_vmlinux BZIMAGE OUT: the uncompressed ELF vmlinux inside a bzImage, found
# as the kernel's scripts/extract-vmlinux finds it: try each compressed payload
# magic (xz, zstd, gzip) where it occurs and keep the first output that is ELF.
extract_vmlinux() {
    local img=$1 out=$2 magic tool off
    for magic in '\xfd7zXZ\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -dc' '\x1f\x8b\x08:gzip -dc'; do
        tool=${magic#*:}
        while read -r off; do
            tail -c+$((off + 1)) "$img" | $tool > "$out" 2> /dev/null || true
            [ "$(head -c4 "$out" | od -An -c | tr -d ' ')" = '177ELF' ] && return 0
        done < <(LC_ALL=C grep -obUaP "${magic%%:*}" "$img" | cut -d: -f1)
    done
    rm -f "$out"
    return 1
}

kernel_parts() { # kernel_parts DEB KEY: L1 and L2 vmlinuz and base cpios, L2's vmlinux
    local deb=$1 key=$2 kt=$RIG_DIR/ktree kv st=$RIG_DIR/stage
    [ -e "$RIG_DIR/l2/base.cpio" ] && [ -e "$RIG_DIR/l2/vmlinux.cpio" ] &&
        up_to_date "$RIG_DIR/l1/base.cpio" "$key" && return
    rm -rf "$kt" "$RIG_DIR/l1/base.cpio.key"
    say "extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$kt"
    kv=$(ls "$kt/lib/modules")
    depmod -b "$kt" "$kv"
    cp "$kt/boot/vmlinuz-$kv" "$RIG_DIR/l1/vmlinuz"
    cp "$kt/boot/vmlinuz-$kv" "$RIG_DIR/l2/vmlinuz"
    base_cpio "$RIG_DIR/l1/base.cpio" "$kt" "$kv" "${L1_MODULES[@]}"
    base_cpio "$RIG_DIR/l2/base.cpio" "$kt" "$kv" "${L2_MODULES[@]}"
    # scenario pvh: L2's kernel as an ELF vmlinux (PVH note), at /rig/l2/vmlinux in L1
    say "extracting the vmlinux from vmlinuz-$kv"
    rm -rf "$st"; mkdir -p "$st/rig/l2"
    extract_vmlinux "$kt/boot/vmlinuz-$kv" "$st/rig/l2/vmlinux" || die "no ELF vmlinux found in vmlinuz-$kv"
    readelf -n "$st/rig/l2/vmlinux" | grep -q Xen || die "the vmlinux has no Xen (PVH) ELF note"
    mkcpio "$st" "$RIG_DIR/l2/vmlinux.cpio"; rm -rf "$st"
    rm -rf "$kt"
    echo "$key" > "$RIG_DIR/l1/base.cpio.key"
}

qemu_cpio() { # qemu_cpio OUT KEY: qemu-system-x86_64 + shared libs + firmware
    local out=$1 key=$2 st="$RIG_DIR/stage" q=/usr/bin/qemu-system-x86_64 l f
    up_to_date "$out" "$key" && return
    say "building $out"
    rm -rf "$st"; mkdir -p "$st/usr/bin" "$st/usr/share/qemu" "$st/usr/share/seabios"
    cp "$q" "$st/usr/bin/"
    for l in $(ldd "$q" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'); do
        mkdir -p "$st/$(dirname "$l")"; cp -L "$l" "$st/$l"
    done
    cp -L /usr/share/seabios/bios-256k.bin "$st/usr/share/seabios/"
    for f in linuxboot_dma.bin kvmvapic.bin; do cp -L "/usr/share/qemu/$f" "$st/usr/share/qemu/"; done
    mkcpio "$st" "$out"; rm -rf "$st"
    echo "$key" > "$out.key"
}

tool_cpio() { # tool_cpio OUT KEY BINARY: a Debian binary + its shared libraries (iperf3, socat; L1 and L2)
    local out=$1 key=$2 st="$RIG_DIR/stage" b l
    up_to_date "$out" "$key" && return
    say "building $out"
    b=$(command -v "$3") || die "$3 is not installed"
    rm -rf "$st"; mkdir -p "$st/usr/bin"
    cp -L "$b" "$st/usr/bin/$3"
    for l in $(ldd "$b" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'); do
        mkdir -p "$st/$(dirname "$l")"; cp -L "$l" "$st/$l"
    done
    mkcpio "$st" "$out"; rm -rf "$st"
    echo "$key" > "$out.key"
}

# fio's Debian binary names the libraries of every engine it was built with
# as DT_NEEDED and binds at load (BIND_NOW): ceph (rbd, rados), glusterfs,
# libnbd, rdma and pmem pull in 84 MB. The benchmark uses the psync and libaio
# engines only, which need libaio, libnuma, libz, libm and libc; for the other
# engines' libraries fio gets stubs with the same sonames that define each
# function fio imports from them (in its symbol version) as a trap, so the
# loader is satisfied and those engines, never selected, would stop fio if
# they were. fio and the stubs live in /usr/lib/rig-fio (/usr/bin/fio is a
# wrapper setting LD_LIBRARY_PATH): QEMU in L1 links the real librdmacm,
# libibverbs and libpmem, which the stubs must not shadow.
FIO_STUBBED=(libgfapi.so.0 libnbd.so.0 libibverbs.so.1 librdmacm.so.1 librados.so.2 librbd.so.1
             libpmemblk.so.1 libpmem.so.1)

fio_stub() { # fio_stub SONAME DIR: DIR/SONAME, traps for what fio imports from it
    local so=$1 dir=$2 real name ver c=$RIG_DIR/stage/stub.c map=$RIG_DIR/stage/stub.map
    real=$(ldconfig -p | awk -v so="$so" '$1 == so && /x86-64/ && !f {print $NF; f = 1}')
    [ -n "$real" ] || die "$so (a library fio needs) is not installed"
    echo '/* generated by scripts/rig/build.sh: fio imports these, the benchmark never calls them */' > "$c"
    : > "$map.in"
    # Undefined FUNC symbols of fio that the real library defines: NAME@VERSION or NAME.
    while read -r name ver; do
        echo "void $name(void) { __builtin_trap(); }" >> "$c"
        [ -z "$ver" ] || echo "$ver $name" >> "$map.in"
    done < <(comm -12 <(readelf --dyn-syms -W /usr/bin/fio | awk '$7 == "UND" && $4 == "FUNC" {sub(/ \(.*/, "", $8); print $8}' | sort -u) \
                      <(nm -D --defined-only "$real" | awk '{sub(/@@/, "@", $3); print $3}' | sort -u) |
             tr '@' ' ')
    local args=()
    if [ -s "$map.in" ]; then
        sort "$map.in" | awk '$1 != v {if (v != "") print "};"; v = $1; printf "%s { global:\n", v} {print "  " $2 ";"} END {print "};"}' > "$map"
        args=("-Wl,--version-script=$map") # one gcc argument: the comma is the linker's
    fi
    gcc -shared -fPIC -O2 -nostdlib -Wl,-soname,"$so" "${args[@]}" -o "$dir/$so" "$c" || die "cannot build the $so stub"
}

fio_cpio() { # fio_cpio OUT KEY: fio, its engines' libraries (real or stubbed), a wrapper
    local out=$1 key=$2 st="$RIG_DIR/stage" b=/usr/bin/fio l so
    up_to_date "$out" "$key" && return
    say "building $out"
    rm -rf "$st"; mkdir -p "$st/usr/bin" "$st/usr/lib/rig-fio"
    cp -L "$b" "$st/usr/lib/rig-fio/fio"
    printf '#!/bin/sh\nLD_LIBRARY_PATH=/usr/lib/rig-fio exec /usr/lib/rig-fio/fio "$@"\n' > "$st/usr/bin/fio"
    chmod 755 "$st/usr/bin/fio"
    for so in "${FIO_STUBBED[@]}"; do fio_stub "$so" "$st/usr/lib/rig-fio"; done
    rm -f "$st/stub.c" "$st/stub.map" "$st/stub.map.in"
    # The real libraries: those fio needs that are not stubbed, and theirs.
    for so in $(objdump -p "$b" | awk '$1 == "NEEDED" {print $2}'); do
        [[ " ${FIO_STUBBED[*]} " == *" $so "* ]] && continue
        l=$(ldconfig -p | awk -v so="$so" '$1 == so && /x86-64/ && !f {print $NF; f = 1}')
        [ -n "$l" ] || die "$so (needed by fio) is not installed"
        echo "$l"
        ldd "$l" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'
    done | sort -u | while read -r l; do
        mkdir -p "$st/$(dirname "$l")"; cp -L "$l" "$st/$l"
    done
    LD_LIBRARY_PATH="$st/usr/lib/rig-fio" "$st/usr/lib/rig-fio/fio" --version > /dev/null ||
        die "fio does not start with the stubbed engine libraries"
    mkcpio "$st" "$out"; rm -rf "$st"
    echo "$key" > "$out.key"
}

disk_cpio() { # disk_cpio OUT KEY: /rig/disk.img, an ext4 image of busybox and disk-init as /sbin/init (scenario disk)
    local out=$1 key=$2 st="$RIG_DIR/stage"
    up_to_date "$out" "$key" && return
    say "building $out"
    rm -rf "$st"; mkdir -p "$st/root/sbin" "$st/img/rig"
    install -m 755 "$HERE/disk-init" "$st/root/sbin/init"
    add_busybox "$st/root"
    mke2fs -q -F -t ext4 -L rigdisk -d "$st/root" "$st/img/rig/disk.img" 16M || die "mke2fs failed"
    mkcpio "$st/img" "$out"; rm -rf "$st"
    echo "$key" > "$out.key"
}

guest_tools() { # guest_tools OUT: scripts/rig/guest/*.c, static, in /usr/bin of L2 (and of L1: tapfd)
    local out=$1 key st="$RIG_DIR/stage" c
    key=$(cat "$HERE"/guest/*.c "$HERE/build.sh" | sha256sum | cut -c1-16)
    up_to_date "$out" "$key" && return
    say "building guest tools"
    rm -rf "$st"; mkdir -p "$st/usr/bin"
    for c in "$HERE"/guest/*.c; do
        gcc -O2 -static -Wall -Wextra -o "$st/usr/bin/$(basename "$c" .c)" "$c" || die "gcc $c failed"
    done
    mkcpio "$st" "$out"; rm -rf "$st"
    echo "$key" > "$out.key"
}

# --- 3. vfio-vmm, static -------------------------------------------------------
vmm_binary() { # prints the path of the static binary
    local bin
    if [ -n "${RIG_VMM_BIN:-}" ]; then
        bin=$RIG_VMM_BIN
        say "using RIG_VMM_BIN=$bin instead of building"
    else
        say "cargo build --profile $PROFILE --target $TRIPLE (static)"
        (cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
            cargo build --profile "$PROFILE" --target "$TRIPLE" -p vfio-vmm --bin vfio-vmm >&2) ||
            die "cargo build of vfio-vmm failed (see above); set RIG_VMM_BIN=PATH to use a prebuilt static binary"
        local pdir=$PROFILE
        [ "$PROFILE" = dev ] && pdir=debug
        bin=${CARGO_TARGET_DIR:-$ROOT/target}/$TRIPLE/$pdir/vfio-vmm
    fi
    [ -x "$bin" ] || die "vfio-vmm binary $bin not found"
    grep -qE 'statically linked|not a dynamic executable' <<< "$(ldd "$bin" 2>&1 || true)" ||
        die "$bin is dynamically linked; the L1 initramfs needs a static binary"
    echo "$bin"
}

main() {
    mkdir -p "$RIG_DIR"/{kernel,l1,l2,logs}
    RIG_DIR=$(cd "$RIG_DIR" && pwd)
    install_packages
    local deb bb self bin
    deb=$(fetch_kernel)
    bb=$(dpkg-query -W -f='${Version}' busybox-static)
    self=$(sha256sum "$HERE/build.sh" | cut -c1-16)

    kernel_parts "$deb" "$(basename "$deb") $bb $self"
    qemu_cpio "$RIG_DIR/l1/qemu.cpio" "$(dpkg-query -W -f='${Version}' qemu-system-x86) $self"
    guest_tools "$RIG_DIR/l2/tools.cpio"
    tool_cpio "$RIG_DIR/l1/iperf.cpio" "$(dpkg-query -W -f='${Version}' iperf3) $self" iperf3
    tool_cpio "$RIG_DIR/l1/socat.cpio" "$(dpkg-query -W -f='${Version}' socat) $self" socat
    fio_cpio "$RIG_DIR/l1/fio.cpio" "$(dpkg-query -W -f='${Version}' fio) $self"
    disk_cpio "$RIG_DIR/l1/disk.cpio" "$bb $self $(sha256sum "$HERE/disk-init" | cut -c1-16)"

    bin=$(vmm_binary)
    if ! cmp -s "$bin" "$RIG_DIR/l1/vfio-vmm" || [ ! -e "$RIG_DIR/l1/vmm.cpio" ]; then
        say "packing $bin"
        rm -rf "$RIG_DIR/stage"; mkdir -p "$RIG_DIR/stage/rig/bin"
        cp "$bin" "$RIG_DIR/stage/rig/bin/vfio-vmm"
        mkcpio "$RIG_DIR/stage" "$RIG_DIR/l1/vmm.cpio"; rm -rf "$RIG_DIR/stage"
        cp "$bin" "$RIG_DIR/l1/vfio-vmm"
    fi
    say "ready in $RIG_DIR: $(basename "$deb"), L1 parts $(du -sh "$RIG_DIR/l1" | cut -f1)"
}

main "$@"
