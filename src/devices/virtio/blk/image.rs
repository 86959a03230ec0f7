//! The host side of a virtio-blk disk: opening an image (a raw file, a block
//! device, or a qcow2 file through the `imago` crate in its synchronous
//! mode; which one is `format.rs`'s choice), checking it before the guest
//! starts, locking it as QEMU does, and I/O at byte offsets (read, write,
//! flush, discard, write zeroes).
//!
//! Raw images use pread/pwrite, fdatasync and fallocate (punch hole, zero
//! range) directly. qcow2 goes through imago, built with its `sync` feature:
//! plain blocking calls, no async runtime, which is what a per-disk worker
//! thread wants. imago gets a file we opened and locked ourselves; qcow2
//! backing files and external data files are refused (imago would open them
//! behind our locks), with a message saying how to flatten the image.
//!
//! Locking: an OFD lock over the whole file, exclusive (write lock) for a
//! writable image and shared (read lock) for `readonly`, taken on an open
//! file description this module keeps for as long as the image is open. OFD
//! locks conflict between open file descriptions even within one process and
//! go away with the process, so a VMM killed with SIGKILL leaves the image
//! usable at once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use imago::qcow2::Qcow2;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use nix::errno::Errno;
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, OFlag};
use nix::sys::uio::{pread, pwrite};
use nix::unistd::fdatasync;
use thiserror::Error;

use super::format;
pub use super::format::{Format, FormatError};

/// Bytes in a sector, the unit of virtio-blk addresses.
pub const SECTOR_SIZE: u64 = 512;
/// Alignment of buffers, offsets and lengths for `direct` (O_DIRECT) I/O.
pub const DIRECT_ALIGN: usize = 4096;

nix::ioctl_read!(
    /// BLKGETSIZE64: the size of a block device in bytes.
    blkgetsize64,
    0x12,
    114,
    u64
);

/// Errors opening a disk image; each says what to do about it.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The path names nothing.
    #[error("disk image {0}: no such file; check the path")]
    NotFound(PathBuf),
    /// The path names a directory.
    #[error("disk image {0} is a directory; give a raw or qcow2 image file or a block device")]
    IsDirectory(PathBuf),
    /// The path names something that holds no disk (a FIFO, a socket, a character device).
    #[error("disk image {0} is not a regular file or a block device")]
    NotADisk(PathBuf),
    /// The user may not open the image as asked.
    #[error("disk image {path}: permission denied opening it {}; fix its permissions or ownership{}",
        if *.write { "for writing" } else { "for reading" },
        if *.write { ", or add readonly=on" } else { "" })]
    Permission {
        /// The image.
        path: PathBuf,
        /// Whether it was opened for writing.
        write: bool,
    },
    /// The image lives on a read-only filesystem but was asked for writing.
    #[error("disk image {0} is on a read-only filesystem; add readonly=on")]
    ReadOnlyFs(PathBuf),
    /// The filesystem refuses O_DIRECT (tmpfs does).
    #[error("disk image {0}: its filesystem does not support O_DIRECT; drop direct=on or move the image")]
    DirectUnsupported(PathBuf),
    /// Another open file description (another VMM) holds a conflicting lock.
    #[error("disk image {path} is in use: another VMM (vfio-vmm, QEMU) has it open{}; stop it first{}",
        if *.write { "" } else { " for writing" },
        if *.write { ", or give readonly=on to every user" } else { "" })]
    Locked {
        /// The image.
        path: PathBuf,
        /// Whether we wanted to write it.
        write: bool,
    },
    /// The image size is not a whole number of sectors.
    #[error("disk image {path} is {size} bytes, not a multiple of 512: the guest sees whole sectors; resize it (truncate -s or qemu-img resize)")]
    NotSectorMultiple {
        /// The image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The format stated does not fit the image, or its header cannot be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// imago could not open the qcow2 image (corrupt, a backing file, an unsupported feature).
    #[error("qcow2 image {path}: {source}; vfio-vmm opens no qcow2 backing or data files (they would go unlocked): check it with `qemu-img check`, or flatten it with `qemu-img convert -O raw {path} OUT.raw`")]
    Qcow2 {
        /// The image.
        path: PathBuf,
        /// What imago said.
        #[source]
        source: io::Error,
    },
    /// Any other system call failure while opening, sizing or locking.
    #[error("disk image {path}: {what}: {source}")]
    Os {
        /// The image.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What serves the I/O.
enum Backend {
    /// pread/pwrite on the file or device.
    Raw(File),
    /// imago's qcow2 driver.
    Qcow2(Box<FormatAccess<imago::file::File>>),
}

/// An open, locked disk image.
pub struct DiskImage {
    /// The path it was opened by.
    path: PathBuf,
    /// The I/O backend.
    backend: Backend,
    /// The open file description holding the OFD lock (never O_DIRECT: it
    /// also reads the header for the block-0 guard).
    lock_file: File,
    /// Guest-visible size in bytes (a multiple of [`SECTOR_SIZE`]).
    size: u64,
    /// Opened read-only.
    readonly: bool,
    /// Opened with O_DIRECT.
    direct: bool,
    /// Whether the image is a block device.
    block_device: bool,
    /// The format.
    format: Format,
    /// Raw by probing: writes that would make block 0 look like qcow2 are refused.
    probed_raw: bool,
}

impl std::fmt::Debug for DiskImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskImage")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("readonly", &self.readonly)
            .field("direct", &self.direct)
            .field("format", &self.format)
            .finish()
    }
}

/// Maps an open(2) failure to the error the user should see.
pub(super) fn open_error(path: &Path, write: bool, e: io::Error) -> ImageError {
    let path = path.to_path_buf();
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => ImageError::NotFound(path),
        (io::ErrorKind::PermissionDenied, _) => ImageError::Permission { path, write },
        (_, Some(libc::EROFS)) => ImageError::ReadOnlyFs(path),
        (_, Some(libc::EISDIR)) => ImageError::IsDirectory(path),
        _ => ImageError::Os {
            path,
            what: "open",
            source: e,
        },
    }
}

/// Opens `path` for reading, and writing unless `readonly`, adding `flags`.
fn open_file(path: &Path, readonly: bool, flags: OFlag) -> Result<File, ImageError> {
    OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| open_error(path, !readonly, e))
}

/// Takes the OFD lock on the whole of `file`: exclusive if `write`, shared otherwise.
pub fn lock(file: &File, write: bool) -> nix::Result<()> {
    let lock_type = if write { libc::F_WRLCK } else { libc::F_RDLCK };
    let flock = libc::flock {
        // Constants that fit in a short.
        l_type: lock_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // to the end of the file, however it grows
        l_pid: 0, // must be 0 for OFD locks
    };
    fcntl(file, FcntlArg::F_OFD_SETLK(&flock)).map(drop)
}

/// The size in bytes of an open regular file or block device.
fn size_of(file: &File, block_device: bool) -> io::Result<u64> {
    if !block_device {
        return Ok(file.metadata()?.len());
    }
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // to `size`, alive and writable for the whole call.
    unsafe { blkgetsize64(std::os::fd::AsRawFd::as_raw_fd(file), &mut size) }?;
    Ok(size)
}

impl DiskImage {
    /// Opens, checks and locks the image at `path`, probing its format (see
    /// [`DiskImage::open_as`]).
    pub fn open(path: &Path, readonly: bool, direct: bool) -> Result<Self, ImageError> {
        Self::open_as(path, readonly, direct, None)
    }

    /// Opens, checks and locks the image at `path`: a raw file or block
    /// device, or qcow2, as `format` says, or as its first bytes say when
    /// `format` is `None` (see `format.rs`). `direct` opens it O_DIRECT.
    pub fn open_as(
        path: &Path,
        readonly: bool,
        direct: bool,
        format: Option<Format>,
    ) -> Result<Self, ImageError> {
        let os = |what: &'static str| {
            move |source: io::Error| ImageError::Os {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        let meta = std::fs::metadata(path).map_err(|e| open_error(path, !readonly, e))?;
        if meta.is_dir() {
            return Err(ImageError::IsDirectory(path.to_path_buf()));
        }
        let block_device = meta.file_type().is_block_device();
        if !meta.is_file() && !block_device {
            return Err(ImageError::NotADisk(path.to_path_buf()));
        }
        // The lock holder, opened without O_DIRECT so that it can also read the magic.
        let lock_file = open_file(path, readonly, OFlag::empty())?;
        lock(&lock_file, !readonly).map_err(|e| match e {
            Errno::EAGAIN | Errno::EACCES => ImageError::Locked {
                path: path.to_path_buf(),
                write: !readonly,
            },
            e => os("lock")(e.into()),
        })?;
        let (format, probed) = format::choose(path, &lock_file, format)?;
        let io_file = if direct {
            open_file(path, readonly, OFlag::O_DIRECT).map_err(|e| match e {
                ImageError::Os { source, .. } if source.raw_os_error() == Some(libc::EINVAL) => {
                    ImageError::DirectUnsupported(path.to_path_buf())
                }
                e => e,
            })?
        } else {
            lock_file.try_clone().map_err(os("dup"))?
        };
        let (backend, size) = match format {
            Format::Raw => {
                let size = size_of(&io_file, block_device).map_err(os("size"))?;
                (Backend::Raw(io_file), size)
            }
            Format::Qcow2 => open_qcow2(path, io_file, readonly, direct)?,
        };
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(ImageError::NotSectorMultiple {
                path: path.to_path_buf(),
                size,
            });
        }
        if probed {
            format::say_probed(path, format, readonly);
        }
        Ok(DiskImage {
            path: path.to_path_buf(),
            backend,
            lock_file,
            size,
            readonly,
            direct,
            block_device,
            format,
            probed_raw: probed && format == Format::Raw,
        })
    }

    /// The path the image was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes, a multiple of [`SECTOR_SIZE`].
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether writes are refused.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Whether I/O bypasses the host page cache (buffers, offsets and
    /// lengths must then be multiples of [`DIRECT_ALIGN`]).
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Whether the image is a block device.
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The raw file zero-copy reads may use (`None` for qcow2).
    pub(super) fn zero_copy_read_file(&self) -> Option<&File> {
        match &self.backend {
            Backend::Raw(file) => Some(file),
            Backend::Qcow2(_) => None,
        }
    }

    /// The raw file a zero-copy write at `offset` may use: `None` for
    /// qcow2, a read-only image, or a write the block-0 guard of a probed
    /// raw image must see (those go through [`DiskImage::write_at`]).
    pub(super) fn zero_copy_write_file(&self, offset: u64) -> Option<&File> {
        let guarded = self.probed_raw && offset < format::QCOW2_MAGIC.len() as u64;
        if self.readonly || guarded {
            return None;
        }
        self.zero_copy_read_file()
    }

    /// Fills `buf` from byte `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.backend {
            Backend::Raw(file) => read_exact_at(file, offset, buf),
            Backend::Qcow2(q) => q.read(&mut *buf, offset),
        }
    }

    /// Writes `buf` at byte `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.readonly {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        if self.probed_raw && format::write_makes_qcow2(&self.lock_file, offset, buf)? {
            return Err(format::refused_header());
        }
        match &self.backend {
            Backend::Raw(file) => write_all_at(file, offset, buf),
            Backend::Qcow2(q) => q.write(buf, offset),
        }
    }

    /// Makes everything written so far durable (fdatasync).
    pub fn flush(&mut self) -> io::Result<()> {
        match &self.backend {
            Backend::Raw(file) => Ok(fdatasync(file)?),
            Backend::Qcow2(q) => {
                q.flush()?;
                q.sync()
            }
        }
    }

    /// Lets the host drop `len` bytes at `offset` (punch a hole). Advisory:
    /// a filesystem that cannot punch holes keeps the data.
    pub fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.readonly {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        match &mut self.backend {
            Backend::Raw(file) => match punch_hole(file, offset, len) {
                Err(Errno::EOPNOTSUPP) => Ok(()),
                r => Ok(r?),
            },
            Backend::Qcow2(q) => match q.discard_to_any(offset, len) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(()),
                r => r,
            },
        }
    }

    /// Makes `len` bytes at `offset` read as zeroes, deallocating them if
    /// `unmap` allows and the host can; `scratch` is a zeroed-on-demand
    /// buffer for hosts that can only write zeroes.
    pub fn write_zeroes(
        &mut self,
        offset: u64,
        len: u64,
        unmap: bool,
        scratch: &mut [u8],
    ) -> io::Result<()> {
        if self.readonly {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let file = match &self.backend {
            Backend::Raw(file) => file,
            Backend::Qcow2(q) => return q.write_zeroes(offset, len),
        };
        if unmap && punch_hole(file, offset, len).is_ok() {
            return Ok(());
        }
        let range = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        if fallocate_range(file, range, offset, len).is_ok() {
            return Ok(());
        }
        scratch.fill(0);
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).map_or(scratch.len(), |r| r.min(scratch.len()));
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            }
            write_all_at(file, offset + done, &scratch[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Opens `file` (already locked through another description) as qcow2; returns the driver and the virtual size.
fn open_qcow2(
    path: &Path,
    file: File,
    readonly: bool,
    direct: bool,
) -> Result<(Backend, u64), ImageError> {
    let qcow2_error = |source| ImageError::Qcow2 {
        path: path.to_path_buf(),
        source,
    };
    let opts = StorageOpenOptions::new()
        .filename(path)
        .write(!readonly)
        .direct(direct);
    let storage = imago::file::File::from_open_file(file, opts).map_err(qcow2_error)?;
    // Backing files and external data files would be opened without our
    // locks: refuse them (DenyImplicitOpenGate).
    let q: Qcow2<imago::file::File> = Qcow2::builder(storage)
        .write(!readonly)
        .open(DenyImplicitOpenGate::default())
        .map_err(qcow2_error)?;
    let access = FormatAccess::new(q);
    let size = access.size();
    Ok((Backend::Qcow2(Box::new(access)), size))
}

/// Converts an offset or length to `off_t`, refusing what does not fit.
fn off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// fallocate(2) over `len` bytes at `offset` with `flags`.
fn fallocate_range(file: &File, flags: FallocateFlags, offset: u64, len: u64) -> nix::Result<()> {
    let (offset, len) = (
        off(offset).map_err(|_| Errno::EINVAL)?,
        off(len).map_err(|_| Errno::EINVAL)?,
    );
    fallocate(file.as_fd(), flags, offset, len)
}

/// Deallocates `len` bytes at `offset`; they read back as zeroes.
fn punch_hole(file: &File, offset: u64, len: u64) -> nix::Result<()> {
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    fallocate_range(file, flags, offset, len)
}

/// pread until `buf` is full; end of file first is an error.
fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = off(offset.saturating_add(done as u64))?;
        match pread(file, &mut buf[done..], at) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// pwrite until all of `buf` is written.
fn write_all_at(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = off(offset.saturating_add(done as u64))?;
        match pwrite(file, &buf[done..], at) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A byte buffer whose start is aligned to [`DIRECT_ALIGN`], as O_DIRECT
/// wants; built on a slightly larger `Vec`, no `unsafe`.
pub struct AlignedBuf {
    /// The allocation.
    raw: Vec<u8>,
    /// Where the aligned part starts in `raw`.
    start: usize,
    /// Its length.
    len: usize,
}

impl Default for AlignedBuf {
    /// An empty buffer, allocating nothing.
    fn default() -> Self {
        AlignedBuf {
            raw: Vec::new(),
            start: 0,
            len: 0,
        }
    }
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf { raw, start, len }
    }

    /// The first `n` bytes (at most the whole buffer).
    pub fn get_mut(&mut self, n: usize) -> &mut [u8] {
        let n = n.min(self.len);
        &mut self.raw[self.start..self.start + n]
    }

    /// The whole buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.get_mut(self.len)
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
