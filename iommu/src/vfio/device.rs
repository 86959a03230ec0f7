//! One open VFIO device: region info (with sparse-mmap areas and the
//! MSI-X-mappable flag), region reads and writes that report errors, mmap
//! of region areas, interrupt wiring with eventfds, reset with its outcome,
//! and the release at exit (interrupts off, then reset). Thin: the logic
//! that uses it lives in the pci crate's `vfio` module.

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use log::debug;
use nix::errno::Errno;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::uio::{pread, pwrite};
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioDevice, VfioError, VfioRegionInfoCap};
use vmm_sys_util::eventfd::EventFd;

use crate::bdf::Bdf;
use crate::vfio::ioctl;

/// A region access, kept as numbers and formatted only for an error: trapped
/// BAR accesses are a hot path and must not allocate.
#[derive(Clone, Copy)]
struct Access {
    verb: &'static str,
    index: u32,
    offset: u64,
    size: Option<u64>,
}

impl Access {
    fn new(verb: &'static str, index: u32, offset: u64) -> Self {
        Access {
            verb,
            index,
            offset,
            size: None,
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} region {} at {:#x}",
            self.verb, self.index, self.offset
        )?;
        match self.size {
            Some(size) => write!(f, "+{size:#x}"),
            None => Ok(()),
        }
    }
}

/// Errors of device operations.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A read, write or mmap of a region failed or was out of range.
    #[error("{bdf}: {op}: {source}")]
    Io {
        /// The device.
        bdf: Bdf,
        /// What was being done.
        op: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An interrupt ioctl failed.
    #[error("{bdf}: {op}")]
    Irq {
        /// The device.
        bdf: Bdf,
        /// What was being done.
        op: String,
        /// The crate's error.
        #[source]
        source: VfioError,
    },
}

/// What the kernel says about a region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionDesc {
    /// Size in bytes.
    pub size: u64,
    /// Offset of the region in the device file.
    pub offset: u64,
    /// Readable.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// Mmappable.
    pub mmappable: bool,
    /// Sparse mmap areas `(offset, size)`, if the kernel restricts mmap.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// The MSI-X table and PBA may be mmapped.
    pub msix_mappable: bool,
}

/// A host mapping of part of a region; unmapped on drop.
#[derive(Debug)]
pub struct RegionMmap {
    /// Start of the mapping.
    addr: NonNull<c_void>,
    /// Length in bytes.
    size: usize,
}

// SAFETY: the mapping is device memory owned by this value; it is only ever
// accessed by the guest (through a KVM memory slot) or by address, never
// through Rust references, so moving or sharing the owner across threads is sound.
unsafe impl Send for RegionMmap {}
// SAFETY: as above; `&RegionMmap` only exposes the address and size.
unsafe impl Sync for RegionMmap {}

impl RegionMmap {
    /// Host virtual address.
    pub fn addr(&self) -> u64 {
        self.addr.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.size as u64
    }
}

impl Drop for RegionMmap {
    fn drop(&mut self) {
        // SAFETY: `addr`/`size` are exactly a mapping this value created and owns.
        if let Err(errno) = unsafe { munmap(self.addr, self.size) } {
            debug!("munmap of a BAR mapping failed: {}", io::Error::from(errno));
        }
    }
}

/// An open VFIO device.
pub struct DeviceHandle {
    /// The crate's device.
    device: VfioDevice,
    /// Its address.
    bdf: Bdf,
}

impl DeviceHandle {
    /// Wraps an opened device.
    pub(crate) fn new(device: VfioDevice, bdf: Bdf) -> Self {
        DeviceHandle { device, bdf }
    }

    /// The device's address.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// Region `index`, `None` if absent (size 0).
    pub fn region(&self, index: u32) -> Option<RegionDesc> {
        let size = self.device.get_region_size(index);
        if size == 0 {
            return None;
        }
        let flags = self.device.get_region_flags(index);
        let mut desc = RegionDesc {
            size,
            offset: self.device.get_region_offset(index),
            readable: flags & VFIO_REGION_INFO_FLAG_READ != 0,
            writable: flags & VFIO_REGION_INFO_FLAG_WRITE != 0,
            mmappable: flags & VFIO_REGION_INFO_FLAG_MMAP != 0,
            ..Default::default()
        };
        for cap in self.device.get_region_caps(index) {
            match cap {
                VfioRegionInfoCap::SparseMmap(s) => {
                    desc.sparse = Some(s.areas.iter().map(|a| (a.offset, a.size)).collect());
                }
                VfioRegionInfoCap::MsixMappable => desc.msix_mappable = true,
                _ => {}
            }
        }
        Some(desc)
    }

    /// The device file, borrowed for as long as `self` is.
    fn file(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is `self.device`'s, which keeps it open while `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.device.as_raw_fd()) }
    }

    /// File offset of `[offset, offset + len)` of region `index`, checked, in the type the
    /// system calls take.
    fn file_offset<T: TryFrom<u64>>(
        &self,
        access: Access,
        len: usize,
    ) -> Result<(RegionDesc, T), DeviceError> {
        let Access { index, offset, .. } = access;
        let err =
            |msg: String| self.io_error(access, io::Error::new(io::ErrorKind::InvalidInput, msg));
        let region = self
            .region(index)
            .ok_or_else(|| err(format!("no region {index}")))?;
        let end = offset.checked_add(len as u64).filter(|e| *e <= region.size);
        if end.is_none() {
            return Err(err(format!(
                "{offset:#x}+{len} is outside region {index} ({:#x} bytes)",
                region.size
            )));
        }
        let at = region.offset + offset;
        let at = T::try_from(at).map_err(|_| err(format!("file offset {at:#x} is too large")))?;
        Ok((region, at))
    }

    /// The error of a failed region access, named only now that it failed.
    fn io_error(&self, access: Access, source: io::Error) -> DeviceError {
        DeviceError::Io {
            bdf: self.bdf,
            op: access.to_string(),
            source,
        }
    }

    /// Reads region `index` at `offset` (pread on the device file).
    pub fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), DeviceError> {
        let access = Access::new("read", index, offset);
        let (_, at) = self.file_offset(access, data.len())?;
        let want = data.len();
        self.complete(pread(self.file(), data, at), want, access)
    }

    /// Writes region `index` at `offset` (pwrite on the device file).
    pub fn write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let access = Access::new("write", index, offset);
        let (_, at) = self.file_offset(access, data.len())?;
        self.complete(pwrite(self.file(), data, at), data.len(), access)
    }

    /// Turns a pread/pwrite result into an error unless all bytes moved.
    fn complete(
        &self,
        moved: nix::Result<usize>,
        want: usize,
        access: Access,
    ) -> Result<(), DeviceError> {
        let source = match moved {
            Err(errno) => io::Error::from(errno),
            Ok(n) if n != want => {
                io::Error::new(io::ErrorKind::UnexpectedEof, format!("{n} of {want} bytes"))
            }
            Ok(_) => return Ok(()),
        };
        Err(self.io_error(access, source))
    }

    /// Maps `[offset, offset + size)` of region `index` shared, read-write.
    pub fn mmap(&self, index: u32, offset: u64, size: u64) -> Result<RegionMmap, DeviceError> {
        let access = Access {
            size: Some(size),
            ..Access::new("mmap", index, offset)
        };
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let (region, at) = self.file_offset(access, len)?;
        if !region.mmappable {
            let why = "the kernel does not allow mmap of this region";
            return Err(self.io_error(access, io::Error::new(io::ErrorKind::Unsupported, why)));
        }
        // An empty mapping is refused by mmap(2) itself with EINVAL.
        let length = NonZeroUsize::new(len)
            .ok_or_else(|| self.io_error(access, io::Error::from(Errno::EINVAL)))?;
        // SAFETY: a new shared mapping chosen by the kernel (no fixed
        // address), of the device's region; nothing else refers to it.
        let addr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.file(),
                at,
            )
        }
        .map_err(|errno| self.io_error(access, errno.into()))?;
        Ok(RegionMmap { addr, size: len })
    }

    /// Vectors of interrupt `index` (0 when absent).
    pub fn irq_count(&self, index: u32) -> u32 {
        self.device.get_irq_info(index).map_or(0, |i| i.count)
    }

    /// Wires vectors `0..fds.len()` of interrupt `index` to `fds`.
    pub fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> Result<(), DeviceError> {
        self.device
            .enable_irq(index, fds.to_vec())
            .map_err(|source| DeviceError::Irq {
                bdf: self.bdf,
                op: format!("enable interrupt {index} with {} eventfd(s)", fds.len()),
                source,
            })
    }

    /// Disables interrupt `index`.
    pub fn disable_irq(&self, index: u32) -> Result<(), DeviceError> {
        self.device
            .disable_irq(index)
            .map_err(|source| DeviceError::Irq {
                bdf: self.bdf,
                op: format!("disable interrupt {index}"),
                source,
            })
    }

    /// Makes the kernel unmask INTx when `fd` is signalled.
    pub fn set_intx_resample(&self, fd: &EventFd) -> Result<(), DeviceError> {
        self.device
            .set_irq_resample_fd(VFIO_PCI_INTX_IRQ_INDEX, vec![fd])
            .map_err(|source| DeviceError::Irq {
                bdf: self.bdf,
                op: "set the INTx resample eventfd".into(),
                source,
            })
    }

    /// Resets the device; `Ok(false)` when it has no reset mechanism.
    pub fn reset(&self) -> Result<bool, DeviceError> {
        let fd = &self.device;
        let io = |op: &str, source| DeviceError::Io {
            bdf: self.bdf,
            op: op.to_string(),
            source,
        };
        if !ioctl::device_can_reset(fd).map_err(|e| io("query reset support", e))? {
            return Ok(false);
        }
        ioctl::device_reset(fd).map_err(|e| io("reset (VFIO_DEVICE_RESET)", e))?;
        Ok(true)
    }

    /// Releases the device at exit: interrupts off, then reset, so the next
    /// user finds it quiet. Failures are logged, not returned: the VM is
    /// going away regardless.
    pub fn release(&self) {
        for index in [
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_PCI_MSI_IRQ_INDEX,
            VFIO_PCI_INTX_IRQ_INDEX,
        ] {
            if self.irq_count(index) > 0 {
                // Fails harmlessly (EINVAL) for the indices not in use.
                if let Err(e) = self.disable_irq(index) {
                    debug!("{e}");
                }
            }
        }
        match self.reset() {
            Ok(true) => debug!("{}: reset at exit", self.bdf),
            Ok(false) => {}
            Err(e) => log::warn!("{e}"),
        }
    }
}
