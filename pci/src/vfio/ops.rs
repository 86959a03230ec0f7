//! The seams between the VFIO PCI device and the outside world, so its logic
//! runs against fakes in tests: [`VfioDeviceOps`] (one VFIO device: regions,
//! mmap, interrupts, reset), [`MappedArea`] (a host mapping of part of a
//! region) and [`GuestMapper`] (placing host memory into guest physical
//! space, i.e. KVM memory slots). The VMM implements them over
//! `vfio-ioctls` and KVM; this crate never makes a system call.

use std::io;

use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

/// VFIO region index of BAR 0 (BARs 1..=5 follow).
pub const BAR0_REGION: u32 = 0;
/// VFIO region index of the expansion ROM (the same number as [`crate::ROM_BAR`]).
pub const ROM_REGION: u32 = 6;
/// VFIO region index of configuration space.
pub const CONFIG_REGION: u32 = 7;

/// VFIO interrupt index of INTx.
pub const INTX_IRQ: u32 = 0;
/// VFIO interrupt index of MSI.
pub const MSI_IRQ: u32 = 1;
/// VFIO interrupt index of MSI-X.
pub const MSIX_IRQ: u32 = 2;

/// Size of a host page: the granule of mmap and of KVM memory slots.
pub const PAGE_SIZE: u64 = 4096;

/// Errors of a VFIO device backend.
#[derive(Debug, Error)]
pub enum VfioOpsError {
    /// A system call on the VFIO device failed.
    #[error("{op}: {source}")]
    Os {
        /// What was being done ("read config space at 0x40", "enable MSI-X").
        op: String,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The request does not fit what the device offers (no such region or interrupt).
    #[error("{op}: {reason}")]
    Unsupported {
        /// What was being done.
        op: String,
        /// Why it cannot be done.
        reason: String,
    },
}

/// Errors placing host memory into guest physical space.
#[derive(Debug, Error)]
pub enum MapError {
    /// The hypervisor refused the mapping.
    #[error("cannot map {size:#x} bytes at guest address {gpa:#x}: {reason}")]
    Map {
        /// Guest physical address.
        gpa: u64,
        /// Length in bytes.
        size: u64,
        /// Why not.
        reason: String,
    },
    /// No memory slot is left.
    #[error("no KVM memory slot left for a BAR mapping ({used} in use): pass fewer devices")]
    NoSlot {
        /// Slots in use.
        used: usize,
    },
}

/// A piece of a region: `[offset, offset + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Area {
    /// Start, relative to the region.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Area {
    /// End offset (exclusive), saturating.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// What the kernel says about one region (VFIO_DEVICE_GET_REGION_INFO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size in bytes (0: the region does not exist).
    pub size: u64,
    /// The region can be read.
    pub readable: bool,
    /// The region can be written.
    pub writable: bool,
    /// The region can be mmapped.
    pub mmappable: bool,
    /// Areas that may be mmapped, when the kernel restricts mmap to parts of
    /// the region (sparse mmap capability); `None` means the whole region.
    pub sparse_areas: Option<Vec<Area>>,
    /// The MSI-X table and PBA in this region may be mmapped too
    /// (VFIO_REGION_INFO_CAP_MSIX_MAPPABLE).
    pub msix_mappable: bool,
}

/// Outcome of a reset request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOutcome {
    /// The device was reset.
    Done,
    /// The device offers no reset mechanism (FLR, PM, bus reset); it keeps its state.
    Unsupported,
}

/// A host mapping of part of a VFIO region; unmapped when dropped.
pub trait MappedArea: Send + Sync {
    /// Host virtual address of the first byte.
    fn host_addr(&self) -> u64;
    /// Length in bytes.
    fn size(&self) -> u64;
}

/// One VFIO PCI device as the kernel offers it.
///
/// Offsets are relative to the region; implementations check them against
/// the region size and report violations as errors, never panic.
pub trait VfioDeviceOps: Send + Sync {
    /// Info about region `index`, `None` when the device has no such region.
    fn region(&self, index: u32) -> Option<RegionInfo>;
    /// Reads `data.len()` bytes of region `index` at `offset`.
    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), VfioOpsError>;
    /// Writes `data` to region `index` at `offset`.
    fn write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), VfioOpsError>;
    /// Maps `area` of region `index` into this process.
    fn mmap(&self, index: u32, area: Area) -> Result<Box<dyn MappedArea>, VfioOpsError>;
    /// Number of vectors of interrupt `index` (0 when absent).
    fn irq_count(&self, index: u32) -> u32;
    /// Makes the device signal `fds[i]` for vector `i` of interrupt `index`
    /// (VFIO_DEVICE_SET_IRQS, DATA_EVENTFD | ACTION_TRIGGER).
    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioOpsError>;
    /// Stops interrupt `index` altogether.
    fn disable_irq(&self, index: u32) -> Result<(), VfioOpsError>;
    /// Makes the kernel unmask INTx when `fd` is signalled (ACTION_UNMASK with an eventfd).
    fn set_intx_resample(&self, fd: &EventFd) -> Result<(), VfioOpsError>;
    /// Resets the device (VFIO_DEVICE_RESET) if it has a reset mechanism.
    fn reset(&self) -> Result<ResetOutcome, VfioOpsError>;
}

/// A memory slot handed out by a [`GuestMapper`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u32);

/// Places host memory into guest physical space (KVM memory slots), so
/// guest accesses to it cause no exit.
pub trait GuestMapper: Send + Sync {
    /// Maps `size` bytes at host virtual `host_addr` to guest physical `gpa`.
    /// Both addresses and the size are page aligned.
    fn map(&self, gpa: u64, size: u64, host_addr: u64) -> Result<SlotId, MapError>;
    /// Removes a mapping made by [`GuestMapper::map`].
    fn unmap(&self, slot: SlotId) -> Result<(), MapError>;
}
