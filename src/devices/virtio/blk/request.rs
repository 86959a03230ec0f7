//! Serving one virtio-blk request: walking its descriptor chain, checking
//! it, doing the I/O on the image and writing the status byte.
//!
//! rust-vmm publishes no virtio-blk crate (only the queue), so this parsing
//! is written here by hand on `virtio-queue`'s descriptor chains, after
//! section 5.2.6 of the virtio 1.2 specification: a 16-byte device-readable
//! header (`type`, `reserved`, `sector`), the data (device-readable for
//! writes, device-writable for reads), and one device-writable status byte,
//! the chain's last.
//!
//! Everything the guest controls is checked before any I/O: the number of
//! descriptors, their order, that each lies in guest RAM, lengths (summed
//! with checked arithmetic), the sector range against the disk's end, the
//! request type and flags. A bad request gets IOERR (or UNSUPP for a type or
//! flag we do not know); only a chain without a writable status byte in
//! guest RAM is returned with no status (used length 0). Reads and writes
//! of raw images go straight between the file and guest RAM (`zerocopy.rs`);
//! otherwise guest buffers are copied through one bounded host buffer,
//! aligned for O_DIRECT, in chunks.

use std::io;

use log::{debug, warn};
use thiserror::Error;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, Permissions};

use super::image::{AlignedBuf, DiskImage, DIRECT_ALIGN, SECTOR_SIZE};
use super::zerocopy;
use crate::memory::GuestMemory;

/// Length of the request header.
pub const HEADER_LEN: u64 = 16;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;
/// Data segments we advertise (`seg_max`): the queue size less the header and status.
pub const SEG_MAX: u32 = 254;
/// Descriptors we accept in one chain (direct or indirect).
pub const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 2;
/// Sectors in one discard or write-zeroes segment (just under 2 GiB, as QEMU).
pub const MAX_ZERO_SECTORS: u32 = (i32::MAX as u32) >> 9;
/// Segments in one discard or write-zeroes request.
pub const MAX_ZERO_SEGMENTS: u32 = 1;
/// Size of the host buffer guest data goes through.
pub const CHUNK: usize = 1 << 20;
/// Length of one discard / write-zeroes segment.
const SEGMENT_LEN: u64 = 16;

/// Why a request failed; [`RequestError::status`] says what the guest reads.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The chain has more descriptors than the device accepts.
    #[error("chain of {count} descriptors, more than {max}")]
    TooManyDescriptors {
        /// Descriptors seen.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A device-readable descriptor follows a device-writable one.
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    /// A buffer lies (partly) outside guest RAM.
    #[error("buffer {addr:#x}+{len:#x} is outside guest RAM")]
    OutsideRam {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The device-readable part is shorter than the header.
    #[error("{len} device-readable bytes, fewer than the 16-byte header")]
    ShortHeader {
        /// Bytes there were.
        len: u64,
    },
    /// The request type is not one we serve.
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    /// A read or write whose data is not whole sectors.
    #[error("data of {0} bytes is not a multiple of 512")]
    NotSectorMultiple(u64),
    /// The request reaches past the end of the disk (or overflows).
    #[error("sector {sector} + {len} bytes is past the end of the {size}-byte disk")]
    PastEnd {
        /// First sector.
        sector: u64,
        /// Bytes.
        len: u64,
        /// Disk size.
        size: u64,
    },
    /// A write, discard or write zeroes on a read-only disk.
    #[error("the disk is read-only")]
    ReadOnly,
    /// Offset or length not aligned for O_DIRECT.
    #[error("offset {offset} / length {len} not aligned to 4096 as direct=on needs")]
    Misaligned {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
    },
    /// Discard or write-zeroes data that is not whole 16-byte segments.
    #[error("{0} bytes of discard/write-zeroes segments, not a positive multiple of 16")]
    BadSegments(u64),
    /// More discard or write-zeroes segments than advertised.
    #[error("{count} discard/write-zeroes segments, more than {max}")]
    TooManySegments {
        /// Segments given.
        count: u64,
        /// Limit.
        max: u32,
    },
    /// A discard or write-zeroes segment larger than advertised.
    #[error("{sectors} sectors in one segment, more than {max}")]
    TooManySectors {
        /// Sectors given.
        sectors: u32,
        /// Limit.
        max: u32,
    },
    /// Discard or write-zeroes flags we do not know (or UNMAP on a discard).
    #[error("unsupported flags {0:#x}")]
    UnsupportedFlags(u32),
    /// The host I/O failed.
    #[error("host I/O: {0}")]
    Io(#[from] io::Error),
}

impl RequestError {
    /// The status byte the guest gets.
    pub fn status(&self) -> u8 {
        // The status constants are 0..=2.
        match self {
            RequestError::Unsupported(_) | RequestError::UnsupportedFlags(_) => {
                VIRTIO_BLK_S_UNSUPP as u8
            }
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

pub use super::buffer::Part;

/// The buffers of one chain, split as virtio-blk wants them.
#[derive(Debug, Default)]
pub struct Parts {
    /// Device-readable buffers: header, then data for writes.
    pub readable: Vec<Part>,
    /// Device-writable buffers without the status byte: data for reads.
    pub data_in: Vec<Part>,
    /// Where the status byte goes: the chain's last writable byte.
    pub status: Option<GuestAddress>,
    /// Non-empty descriptors in the chain (all counted, at most
    /// [`MAX_DESCRIPTORS`] kept).
    pub count: usize,
    /// Whether every readable descriptor came before every writable one.
    pub ordered: bool,
}

impl Parts {
    /// Walks `chain` (virtio-queue bounds it by the table size and 4 GiB).
    pub fn collect<I: Iterator<Item = virtio_queue::desc::split::Descriptor>>(chain: I) -> Self {
        let mut parts = Parts {
            ordered: true,
            ..Parts::default()
        };
        let mut last_writable = None;
        for desc in chain.filter(|d| d.len() > 0) {
            parts.count += 1;
            let part = Part {
                addr: desc.addr(),
                len: u64::from(desc.len()),
            };
            let keep = parts.count <= MAX_DESCRIPTORS;
            if desc.is_write_only() {
                last_writable = Some(part);
                if keep {
                    parts.data_in.push(part);
                }
            } else {
                parts.ordered &= last_writable.is_none();
                if keep {
                    parts.readable.push(part);
                }
            }
        }
        // The last writable byte is the status, not data.
        if let Some(last) = last_writable {
            parts.status = last.addr.checked_add(last.len - 1);
            if parts.data_in.last() == Some(&last) {
                parts.data_in.pop();
                if last.len > 1 {
                    parts.data_in.push(Part {
                        addr: last.addr,
                        len: last.len - 1,
                    });
                }
            }
        }
        parts
    }
}

/// Sum of the lengths of `parts` (saturating; each is below 4 GiB and there
/// are at most [`MAX_DESCRIPTORS`]).
fn total(parts: &[Part]) -> u64 {
    parts.iter().fold(0u64, |sum, p| sum.saturating_add(p.len))
}

/// Checks that `parts` lie inside guest RAM.
fn check_ram(mem: &GuestMemory, parts: &[Part], access: Permissions) -> Result<(), RequestError> {
    for p in parts {
        let fits = usize::try_from(p.len).is_ok_and(|len| mem.check_range(p.addr, len, access));
        if !fits {
            return Err(RequestError::OutsideRam {
                addr: p.addr.0,
                len: p.len,
            });
        }
    }
    Ok(())
}

/// `parts` without their first `n` bytes.
fn skip(parts: &[Part], mut n: u64) -> Vec<Part> {
    let mut rest = Vec::with_capacity(parts.len());
    for p in parts {
        if n >= p.len {
            n -= p.len;
            continue;
        }
        // n < p.len, and the part lies in guest RAM: no overflow.
        rest.push(Part {
            addr: p.addr.unchecked_add(n),
            len: p.len - n,
        });
        n = 0;
    }
    rest
}

/// Visits the pieces of `parts` covering bytes `skip..skip + len` of their
/// concatenation: `f(guest address, range in the host buffer)`.
fn walk(
    parts: &[Part],
    mut skip: u64,
    len: usize,
    mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> Result<(), RequestError>,
) -> Result<(), RequestError> {
    let mut done = 0usize;
    for p in parts {
        if done == len {
            break;
        }
        if skip >= p.len {
            skip -= p.len;
            continue;
        }
        let n = usize::try_from(p.len - skip).map_or(len - done, |room| room.min(len - done));
        let addr = p.addr.checked_add(skip).ok_or(RequestError::OutsideRam {
            addr: p.addr.0,
            len: p.len,
        })?;
        f(addr, done..done + n)?;
        done += n;
        skip = 0;
    }
    if done < len {
        // Callers size `len` from the parts: this is a bug, not a guest error.
        return Err(io::Error::other("request data shorter than its buffers").into());
    }
    Ok(())
}

/// Copies bytes `skip..skip + out.len()` of the guest buffers `parts` into `out`.
fn read_guest(
    mem: &GuestMemory,
    parts: &[Part],
    skip: u64,
    out: &mut [u8],
) -> Result<(), RequestError> {
    walk(parts, skip, out.len(), |addr, range| {
        let len = range.len() as u64;
        mem.read_slice(&mut out[range], addr)
            .map_err(|_| RequestError::OutsideRam { addr: addr.0, len })
    })
}

/// Copies `data` into bytes `skip..` of the guest buffers `parts`.
fn write_guest(
    mem: &GuestMemory,
    parts: &[Part],
    skip: u64,
    data: &[u8],
) -> Result<(), RequestError> {
    walk(parts, skip, data.len(), |addr, range| {
        let len = range.len() as u64;
        mem.write_slice(&data[range], addr)
            .map_err(|_| RequestError::OutsideRam { addr: addr.0, len })
    })
}

/// Reads a little-endian u32 / u64 at `at` of `bytes` (16 bytes long).
fn le_u32(bytes: &[u8; 16], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// See [`le_u32`].
fn le_u64(bytes: &[u8; 16], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// What serves the requests of one device: the image, the serial, the buffer.
pub struct Handler {
    /// The image.
    pub(super) image: DiskImage,
    /// The GET_ID answer.
    serial: [u8; ID_LEN],
    /// The host buffer guest data goes through.
    buf: AlignedBuf,
    /// More of them, one per I/O thread of a batch (`batch.rs`), made
    /// when first needed.
    pub(super) spare: Vec<AlignedBuf>,
}

impl Handler {
    /// A handler for `image` answering GET_ID with `serial`.
    pub fn new(image: DiskImage, serial: [u8; ID_LEN]) -> Self {
        Handler {
            image,
            serial,
            buf: AlignedBuf::new(CHUNK),
            spare: Vec::new(),
        }
    }

    /// Serves the request in `chain`; returns its head and the used length
    /// (bytes written to guest buffers, status included).
    pub fn serve<'m>(
        &mut self,
        mem: &'m GuestMemory,
        chain: DescriptorChain<&'m GuestMemory>,
    ) -> (u16, u32) {
        let head = chain.head_index();
        self.serve_parts(mem, head, &Parts::collect(chain))
    }

    /// Serves the request of chain `head` made of `parts`.
    pub(super) fn serve_parts(
        &mut self,
        mem: &GuestMemory,
        head: u16,
        parts: &Parts,
    ) -> (u16, u32) {
        let Some(status_at) = self.status_at(mem, head, parts) else {
            return (head, 0);
        };
        let result = self
            .check(mem, parts)
            .and_then(|(kind, sector)| self.execute(mem, parts, kind, sector));
        self.finish(mem, head, status_at, result)
    }

    /// Where the status byte of chain `head` goes, if it is in guest RAM.
    pub(super) fn status_at(
        &self,
        mem: &GuestMemory,
        head: u16,
        parts: &Parts,
    ) -> Option<GuestAddress> {
        let at = parts
            .status
            .filter(|at| mem.check_range(*at, 1, Permissions::Write));
        if at.is_none() {
            debug!(
                "virtio-blk {}: chain {head} has no status byte in guest RAM",
                self.image.path().display()
            );
        }
        at
    }

    /// Writes the status of `result` at `status_at`; returns the head and
    /// the used length.
    pub(super) fn finish(
        &self,
        mem: &GuestMemory,
        head: u16,
        status_at: GuestAddress,
        result: Result<u64, RequestError>,
    ) -> (u16, u32) {
        let (status, written) = match result {
            Ok(written) => (VIRTIO_BLK_S_OK as u8, written),
            Err(e) => {
                // Host failures matter to the operator; guest mistakes only when debugging.
                let path = self.image.path().display();
                match &e {
                    RequestError::Io(_) => warn!("virtio-blk {path}: {e}"),
                    _ => debug!("virtio-blk {path}: {e}"),
                }
                (e.status(), 0)
            }
        };
        if mem.write_obj(status, status_at).is_err() {
            return (head, 0);
        }
        (
            head,
            u32::try_from(written).unwrap_or(u32::MAX).saturating_add(1),
        )
    }

    /// Checks the chain and reads its header; returns the request type and sector.
    pub(super) fn check(
        &self,
        mem: &GuestMemory,
        parts: &Parts,
    ) -> Result<(u32, u64), RequestError> {
        if parts.count > MAX_DESCRIPTORS {
            return Err(RequestError::TooManyDescriptors {
                count: parts.count,
                max: MAX_DESCRIPTORS,
            });
        }
        if !parts.ordered {
            return Err(RequestError::ReadableAfterWritable);
        }
        check_ram(mem, &parts.readable, Permissions::Read)?;
        check_ram(mem, &parts.data_in, Permissions::Write)?;
        let readable = total(&parts.readable);
        if readable < HEADER_LEN {
            return Err(RequestError::ShortHeader { len: readable });
        }
        let mut header = [0u8; 16];
        read_guest(mem, &parts.readable, 0, &mut header)?;
        Ok((le_u32(&header, 0), le_u64(&header, 8)))
    }

    /// Runs a checked request; returns the data bytes written to the guest.
    fn execute(
        &mut self,
        mem: &GuestMemory,
        parts: &Parts,
        kind: u32,
        sector: u64,
    ) -> Result<u64, RequestError> {
        match kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
                let mut buf = std::mem::take(&mut self.buf);
                let result = self.data(&mut buf, mem, parts, kind, sector);
                self.buf = buf;
                result
            }
            VIRTIO_BLK_T_FLUSH => Ok(self.image.flush().map(|()| 0)?),
            VIRTIO_BLK_T_GET_ID => {
                let n = total(&parts.data_in).min(ID_LEN as u64);
                write_guest(mem, &parts.data_in, 0, &self.serial[..n as usize])?;
                Ok(n)
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => self
                .zero(mem, parts, kind == VIRTIO_BLK_T_DISCARD)
                .map(|()| 0),
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// A checked read (`VIRTIO_BLK_T_IN`) or write, through `buf` if it
    /// cannot go zero-copy; needs only `&self`, so several run at once.
    pub(super) fn data(
        &self,
        buf: &mut AlignedBuf,
        mem: &GuestMemory,
        parts: &Parts,
        kind: u32,
        sector: u64,
    ) -> Result<u64, RequestError> {
        if kind == VIRTIO_BLK_T_IN {
            self.read(buf, mem, parts, sector)
        } else {
            self.write(buf, mem, parts, sector).map(|()| 0)
        }
    }

    /// Byte offset of `len` bytes at `sector`, checked against the disk's end.
    fn range(&self, sector: u64, len: u64) -> Result<u64, RequestError> {
        let size = self.image.size();
        sector
            .checked_mul(SECTOR_SIZE)
            .filter(|offset| offset.checked_add(len).is_some_and(|end| end <= size))
            .ok_or(RequestError::PastEnd { sector, len, size })
    }

    /// Checks a read or write of `len` bytes at `sector`; returns its offset.
    fn data_range(&self, sector: u64, len: u64) -> Result<u64, RequestError> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::NotSectorMultiple(len));
        }
        let offset = self.range(sector, len)?;
        let align = DIRECT_ALIGN as u64;
        if self.image.direct() && (!offset.is_multiple_of(align) || !len.is_multiple_of(align)) {
            return Err(RequestError::Misaligned { offset, len });
        }
        Ok(offset)
    }

    /// VIRTIO_BLK_T_IN: disk to the guest, a chunk at a time.
    fn read(
        &self,
        buf: &mut AlignedBuf,
        mem: &GuestMemory,
        parts: &Parts,
        sector: u64,
    ) -> Result<u64, RequestError> {
        let len = total(&parts.data_in);
        let offset = self.data_range(sector, len)?;
        if zerocopy::read(&self.image, mem, &parts.data_in, offset)? {
            return Ok(len);
        }
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).map_or(CHUNK, |rest| rest.min(CHUNK));
            let buf = buf.get_mut(n);
            self.image.read_at(offset + done, buf)?;
            write_guest(mem, &parts.data_in, done, buf)?;
            done += n as u64;
        }
        Ok(len)
    }

    /// VIRTIO_BLK_T_OUT: the guest to the disk, a chunk at a time.
    fn write(
        &self,
        buf: &mut AlignedBuf,
        mem: &GuestMemory,
        parts: &Parts,
        sector: u64,
    ) -> Result<(), RequestError> {
        if self.image.readonly() {
            return Err(RequestError::ReadOnly);
        }
        let len = total(&parts.readable) - HEADER_LEN;
        let offset = self.data_range(sector, len)?;
        if zerocopy::write(&self.image, mem, &skip(&parts.readable, HEADER_LEN), offset)? {
            return Ok(());
        }
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).map_or(CHUNK, |rest| rest.min(CHUNK));
            let buf = buf.get_mut(n);
            read_guest(mem, &parts.readable, HEADER_LEN + done, buf)?;
            self.image.write_at(offset + done, buf)?;
            done += n as u64;
        }
        Ok(())
    }

    /// VIRTIO_BLK_T_DISCARD (`discard`) or VIRTIO_BLK_T_WRITE_ZEROES.
    fn zero(
        &mut self,
        mem: &GuestMemory,
        parts: &Parts,
        discard: bool,
    ) -> Result<(), RequestError> {
        if self.image.readonly() {
            return Err(RequestError::ReadOnly);
        }
        let len = total(&parts.readable) - HEADER_LEN;
        if len == 0 || !len.is_multiple_of(SEGMENT_LEN) {
            return Err(RequestError::BadSegments(len));
        }
        let count = len / SEGMENT_LEN;
        if count > u64::from(MAX_ZERO_SEGMENTS) {
            return Err(RequestError::TooManySegments {
                count,
                max: MAX_ZERO_SEGMENTS,
            });
        }
        for i in 0..count {
            let mut seg = [0u8; 16];
            read_guest(mem, &parts.readable, HEADER_LEN + i * SEGMENT_LEN, &mut seg)?;
            let (sector, sectors, flags) = (le_u64(&seg, 0), le_u32(&seg, 8), le_u32(&seg, 12));
            let known = if discard {
                0
            } else {
                VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
            };
            if flags & !known != 0 {
                return Err(RequestError::UnsupportedFlags(flags));
            }
            if sectors > MAX_ZERO_SECTORS {
                return Err(RequestError::TooManySectors {
                    sectors,
                    max: MAX_ZERO_SECTORS,
                });
            }
            let bytes = u64::from(sectors) * SECTOR_SIZE;
            let offset = self.range(sector, bytes)?;
            if discard {
                self.image.discard(offset, bytes)?;
            } else {
                let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
                let scratch = self.buf.as_mut_slice();
                self.image.write_zeroes(offset, bytes, unmap, scratch)?;
            }
        }
        Ok(())
    }
}
