//! Which format a disk image is opened as. A format the user stated
//! (`--disk format=`, JSON `image_type`) is never probed: `raw` opens the
//! bytes as they are, whatever block 0 holds, and `qcow2` refuses a file
//! without the qcow2 magic. With no format stated the image's first bytes
//! decide, as QEMU does, with QEMU's warning for a probed raw image: its
//! guest could write a qcow2 header into block 0 and the next start would
//! open the image as qcow2, with metadata the guest wrote. So, as QEMU does,
//! writes to a probed raw image that would put the qcow2 magic at its start
//! are refused.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use log::{info, warn};
use nix::sys::uio::pread;
use thiserror::Error;

pub use crate::config::ImageFormat as Format;

/// Errors choosing an image's format.
#[derive(Debug, Error)]
pub enum FormatError {
    /// The user said qcow2 but the file does not start with the qcow2 magic.
    #[error("disk image {0} is not a qcow2 image (it does not start with the qcow2 magic QFI\\xfb); give format=raw (JSON: \"image_type\": \"Raw\") if it is a raw image")]
    NotQcow2(PathBuf),
    /// The first bytes could not be read.
    #[error("disk image {path}: read the header: {source}")]
    Header {
        /// The image.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The first bytes of a qcow2 file.
pub(super) const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Whether `file` starts with the qcow2 magic.
fn has_qcow2_magic(file: &File) -> io::Result<bool> {
    let mut magic = [0u8; QCOW2_MAGIC.len()];
    let n = pread(file, &mut magic, 0)?;
    Ok(n == magic.len() && magic == QCOW2_MAGIC)
}

/// The format to open `file` (the image at `path`) as, given the format
/// the user `stated`; `Ok((format, probed))`, `probed` telling that the
/// image's bytes chose it (see [`say_probed`]). `file` must not be O_DIRECT
/// (it reads 4 bytes).
pub(super) fn choose(
    path: &Path,
    file: &File,
    stated: Option<Format>,
) -> Result<(Format, bool), FormatError> {
    let header = |source| FormatError::Header {
        path: path.to_path_buf(),
        source,
    };
    match stated {
        Some(Format::Raw) => Ok((Format::Raw, false)),
        Some(Format::Qcow2) if has_qcow2_magic(file).map_err(header)? => Ok((Format::Qcow2, false)),
        Some(Format::Qcow2) => Err(FormatError::NotQcow2(path.to_path_buf())),
        None if has_qcow2_magic(file).map_err(header)? => Ok((Format::Qcow2, true)),
        None => Ok((Format::Raw, true)),
    }
}

/// Logs that the image at `path`, opened, had its format probed: QEMU's
/// warning for a writable raw image, a note otherwise (a guest cannot
/// write the header of a read-only one).
pub(super) fn say_probed(path: &Path, format: Format, readonly: bool) {
    match format {
        Format::Raw if readonly => info!(
            "disk image {}: probed raw (read-only); give format=raw to skip probing",
            path.display()
        ),
        Format::Qcow2 => info!(
            "disk image {}: probed qcow2; give format=qcow2 to skip probing",
            path.display()
        ),
        Format::Raw => warn!(
            "disk image {}: no format given, probed raw; specify format=raw (JSON: \
             \"image_type\": \"Raw\") to make writes to block 0 safe: until then, guest \
             writes that would put a qcow2 header there are refused",
            path.display()
        ),
    }
}

/// Whether writing `buf` at byte `offset` of the raw image `file` would make
/// it start with the qcow2 magic, so that the next probe took it for qcow2.
/// Reads the bytes the write leaves in place; `file` must not be O_DIRECT.
pub(super) fn write_makes_qcow2(file: &File, offset: u64, buf: &[u8]) -> io::Result<bool> {
    let head_len = QCOW2_MAGIC.len() as u64;
    if offset >= head_len || buf.is_empty() {
        return Ok(false);
    }
    let mut head = [0u8; QCOW2_MAGIC.len()];
    // A shorter image keeps zeroes past its end, which are not the magic.
    pread(file, &mut head, 0)?;
    // offset < 4: the casts cannot truncate.
    for (i, byte) in head.iter_mut().enumerate().skip(offset as usize) {
        if let Some(new) = buf.get(i - offset as usize) {
            *byte = *new;
        }
    }
    Ok(head == QCOW2_MAGIC)
}

/// The error a write that [`write_makes_qcow2`] caught gets (the guest sees IOERR).
pub(super) fn refused_header() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the write would put a qcow2 header into block 0 of a raw image whose format was \
         probed; give format=raw to allow it",
    )
}
