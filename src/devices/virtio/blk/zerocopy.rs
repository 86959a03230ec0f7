//! Zero-copy data transfer for raw images: one preadv/pwritev between the
//! image file and the guest's buffers, with no host buffer in between (as
//! QEMU does). `request.rs` asks here first and falls back to its bounce
//! buffer when this path does not apply: a qcow2 image, a write the
//! probed-raw block-0 guard must see (the guest could change its buffer
//! between a check and the write, so those bytes are copied first), guest
//! buffers O_DIRECT cannot take, or a kernel refusing them (EINVAL).
//!
//! Written by hand on libc: nix's `preadv`/`pwritev` take Rust slices,
//! and guest RAM, which the guest may change at any time, must not be made
//! into `&[u8]`/`&mut [u8]`. vm-memory gives the host addresses
//! (`get_slices`, split at region edges); this module builds the `iovec`s
//! and loops on short transfers and EINTR.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use log::debug;
use vm_memory::volatile_memory::{PtrGuard, PtrGuardMut};
use vm_memory::{GuestMemoryBackend, Permissions};

use super::buffer::Part;
use super::image::DiskImage;
use crate::memory::GuestMemory;

/// Most iovecs one preadv/pwritev takes (IOV_MAX on Linux).
pub const IOV_MAX: usize = 1024;
/// Alignment of guest buffer addresses and lengths O_DIRECT needs here
/// (offsets and total lengths are checked against `DIRECT_ALIGN` before).
pub const DIRECT_MEM_ALIGN: u64 = 512;

/// The host iovecs covering a list of guest buffers.
pub struct GuestIovecs {
    /// One per piece of guest buffer inside one memory region.
    iovs: Vec<libc::iovec>,
    /// Guards keeping the host mappings behind `iovs` valid as long as
    /// they are (a no-op unless vm-memory maps on demand, as with Xen):
    /// guest memory the device reads...
    _read_guards: Vec<PtrGuard>,
    /// ...and guest memory the device writes.
    _write_guards: Vec<PtrGuardMut>,
}

impl GuestIovecs {
    /// The iovecs for `parts` (already checked to lie in guest RAM with
    /// `access`), split at memory region edges; `None` if a part cannot be
    /// mapped or, with `direct`, a piece is not aligned for O_DIRECT.
    pub fn new(
        mem: &GuestMemory,
        parts: &[Part],
        access: Permissions,
        direct: bool,
    ) -> Option<Self> {
        let mut iovs = Vec::with_capacity(parts.len());
        let (mut read_guards, mut write_guards) = (Vec::new(), Vec::new());
        for p in parts {
            let len = usize::try_from(p.len).ok()?;
            for slice in GuestMemoryBackend::get_slices(mem, p.addr, len) {
                let slice = slice.ok()?;
                let ptr = if access == Permissions::Write {
                    let g = slice.ptr_guard_mut();
                    let ptr = g.as_ptr();
                    write_guards.push(g);
                    ptr
                } else {
                    let g = slice.ptr_guard();
                    let ptr = g.as_ptr().cast_mut();
                    read_guards.push(g);
                    ptr
                };
                let aligned = (ptr as u64).is_multiple_of(DIRECT_MEM_ALIGN)
                    && (slice.len() as u64).is_multiple_of(DIRECT_MEM_ALIGN);
                if direct && !aligned {
                    return None;
                }
                iovs.push(libc::iovec {
                    iov_base: ptr.cast(),
                    iov_len: slice.len(),
                });
            }
        }
        Some(GuestIovecs {
            iovs,
            _read_guards: read_guards,
            _write_guards: write_guards,
        })
    }

    /// Number of iovecs.
    pub fn len(&self) -> usize {
        self.iovs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.iovs.is_empty()
    }
}

/// Drops the first `n` transferred bytes from `iovs[*first..]`.
fn advance(iovs: &mut [libc::iovec], first: &mut usize, mut n: usize) {
    while *first < iovs.len() && iovs[*first].iov_len <= n {
        n -= iovs[*first].iov_len;
        *first += 1;
    }
    if n > 0 {
        if let Some(iov) = iovs.get_mut(*first) {
            iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(n).cast();
            iov.iov_len -= n;
        }
    }
}

/// preadv (or pwritev if `write`) of all of `bufs` at `offset` of `file`,
/// IOV_MAX iovecs at a time, until done; end of file first is an error.
fn transfer(file: &File, bufs: &mut GuestIovecs, offset: u64, write: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let mut at = offset;
    let mut first = 0usize;
    while first < bufs.iovs.len() {
        let batch = &bufs.iovs[first..bufs.iovs.len().min(first + IOV_MAX)];
        let pos =
            libc::off_t::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // At most IOV_MAX: fits a c_int.
        let count = batch.len() as libc::c_int;
        let n = if write {
            // SAFETY: every iovec points into guest RAM: ranges check_ram
            // validated, mapped by the regions of `GuestMemory`, which the
            // caller borrows for the whole call (the mappings are Arcs the
            // worker holds for its life, unmapped only when the last goes),
            // with guards alive in `bufs`. The kernel only reads them.
            unsafe { libc::pwritev(fd, batch.as_ptr(), count, pos) }
        } else {
            // SAFETY: as for pwritev; the kernel writes only inside those
            // ranges, which are device-writable guest buffers, never memory
            // Rust holds references to (guest RAM is accessed volatile).
            unsafe { libc::preadv(fd, batch.as_ptr(), count, pos) }
        };
        match n {
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            0 if write => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            // n > 0 and at most the batch's bytes: fits usize and u64.
            n => {
                advance(&mut bufs.iovs, &mut first, n as usize);
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// Runs `transfer` if `image` is raw; `Ok(false)`: use the bounce buffer.
fn run(
    file: Option<&File>,
    image: &DiskImage,
    bufs: Option<GuestIovecs>,
    offset: u64,
    write: bool,
) -> io::Result<bool> {
    let (Some(file), Some(mut bufs)) = (file, bufs) else {
        return Ok(false);
    };
    match transfer(file, &mut bufs, offset, write) {
        Ok(()) => Ok(true),
        // O_DIRECT wants more alignment than we checked (a 4K-sector
        // device): the bounce buffer (aligned to 4096) redoes the whole
        // request, which reads or writes the same bytes again.
        Err(e) if image.direct() && e.raw_os_error() == Some(libc::EINVAL) => {
            debug!(
                "virtio-blk {}: zero-copy refused ({e}), using the bounce buffer",
                image.path().display()
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Reads the disk at `offset` into the guest buffers `parts` (checked
/// writable guest RAM) with no copy; `Ok(false)` if this path does not
/// apply and the caller must use its bounce buffer.
pub fn read(image: &DiskImage, mem: &GuestMemory, parts: &[Part], offset: u64) -> io::Result<bool> {
    let file = image.zero_copy_read_file();
    let bufs = file.and_then(|_| GuestIovecs::new(mem, parts, Permissions::Write, image.direct()));
    run(file, image, bufs, offset, false)
}

/// Writes the guest buffers `parts` (checked readable guest RAM) to the
/// disk at `offset` with no copy; `Ok(false)` as for [`read`].
pub fn write(
    image: &DiskImage,
    mem: &GuestMemory,
    parts: &[Part],
    offset: u64,
) -> io::Result<bool> {
    let file = image.zero_copy_write_file(offset);
    let bufs = file.and_then(|_| GuestIovecs::new(mem, parts, Permissions::Read, image.direct()));
    run(file, image, bufs, offset, true)
}
