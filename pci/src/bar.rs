//! Base Address Registers: what a BAR is (kind, size, prefetchable), how it is
//! encoded in config space (flag bits, sizing masks) and the records the bus
//! hands out when a BAR gets placed or moved.
//!
//! The register storage itself lives in [`crate::config::PciConfig`]; this
//! module only knows the encoding rules so that config space stays generic.

use std::fmt;

use thiserror::Error;

/// Number of regular BARs in a type 0 header.
pub const NUM_BARS: usize = 6;
/// Index used for the expansion ROM BAR (config offset 0x30) wherever a BAR
/// index is expected.
pub const ROM_BAR: usize = 6;
/// Number of BAR slots tracked per function: six BARs plus the expansion ROM.
pub const NUM_BAR_SLOTS: usize = NUM_BARS + 1;

/// Smallest memory BAR the spec allows.
pub const MIN_MEM_BAR_SIZE: u64 = 16;
/// Smallest I/O BAR the spec allows.
pub const MIN_IO_BAR_SIZE: u64 = 4;
/// Largest I/O BAR the spec allows.
pub const MAX_IO_BAR_SIZE: u64 = 256;
/// Smallest expansion ROM the spec allows.
pub const MIN_ROM_SIZE: u64 = 2048;

/// Bit 0 of a BAR: set for I/O space BARs.
pub(crate) const BAR_IO_FLAG: u32 = 0x1;
/// Bits 2:1 of a memory BAR: 0b10 means 64-bit.
pub(crate) const BAR_MEM64_FLAG: u32 = 0x4;
/// Bit 3 of a memory BAR: prefetchable.
pub(crate) const BAR_PREFETCH_FLAG: u32 = 0x8;
/// Address bits of a memory BAR's low dword.
pub(crate) const BAR_MEM_ADDR_MASK: u32 = !0xf;
/// Address bits of an I/O BAR.
pub(crate) const BAR_IO_ADDR_MASK: u32 = !0x3;
/// Address bits of the expansion ROM BAR.
pub(crate) const ROM_ADDR_MASK: u32 = !0x7ff;
/// Enable bit of the expansion ROM BAR.
pub(crate) const ROM_ENABLE: u32 = 0x1;

/// Errors describing a BAR that cannot exist.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BarError {
    /// The BAR size is not a power of two.
    #[error("BAR size {0:#x} is not a power of two")]
    SizeNotPowerOfTwo(u64),
    /// The BAR size is outside what its kind allows.
    #[error("BAR size {size:#x} is out of range for {kind} (allowed {min:#x}..={max:#x})")]
    SizeOutOfRange {
        /// Requested size.
        size: u64,
        /// Kind of BAR.
        kind: BarKind,
        /// Smallest allowed size.
        min: u64,
        /// Largest allowed size.
        max: u64,
    },
    /// The BAR index is not 0..=5 (or 0..=4 for a 64-bit BAR, which uses two slots).
    #[error("BAR index {index} is invalid for {kind}")]
    InvalidIndex {
        /// Requested index.
        index: usize,
        /// Kind of BAR.
        kind: BarKind,
    },
    /// The BAR slot (or the upper half of a 64-bit BAR) is already in use.
    #[error("BAR slot {0} is already in use")]
    SlotInUse(usize),
}

/// The address space and width of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// I/O port space.
    Io,
    /// 32-bit memory space.
    Memory32 {
        /// Reads have no side effects; the guest may map it write-combining.
        prefetchable: bool,
    },
    /// 64-bit memory space; uses this BAR and the next one.
    Memory64 {
        /// Reads have no side effects; the guest may map it write-combining.
        prefetchable: bool,
    },
    /// The expansion ROM BAR at 0x30 (32-bit memory, read-only contents).
    Rom,
}

impl BarKind {
    /// True for I/O port BARs.
    pub fn is_io(self) -> bool {
        matches!(self, BarKind::Io)
    }

    /// True for BARs decoded in memory space (including the ROM).
    pub fn is_memory(self) -> bool {
        !self.is_io()
    }

    /// Size limits `(min, max)` for this kind.
    fn size_limits(self) -> (u64, u64) {
        match self {
            BarKind::Io => (MIN_IO_BAR_SIZE, MAX_IO_BAR_SIZE),
            BarKind::Memory32 { .. } => (MIN_MEM_BAR_SIZE, 1 << 31),
            BarKind::Memory64 { .. } => (MIN_MEM_BAR_SIZE, 1 << 63),
            BarKind::Rom => (MIN_ROM_SIZE, 1 << 31),
        }
    }

    /// Read-only flag bits held in the low bits of the (low) BAR register.
    pub(crate) fn flag_bits(self) -> u32 {
        match self {
            BarKind::Io => BAR_IO_FLAG,
            BarKind::Memory32 { prefetchable } => {
                if prefetchable {
                    BAR_PREFETCH_FLAG
                } else {
                    0
                }
            }
            BarKind::Memory64 { prefetchable } => {
                BAR_MEM64_FLAG | if prefetchable { BAR_PREFETCH_FLAG } else { 0 }
            }
            BarKind::Rom => 0,
        }
    }
}

impl fmt::Display for BarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BarKind::Io => write!(f, "I/O BAR"),
            BarKind::Memory32 { prefetchable } => {
                write!(
                    f,
                    "32-bit {}memory BAR",
                    if *prefetchable { "prefetchable " } else { "" }
                )
            }
            BarKind::Memory64 { prefetchable } => {
                write!(
                    f,
                    "64-bit {}memory BAR",
                    if *prefetchable { "prefetchable " } else { "" }
                )
            }
            BarKind::Rom => write!(f, "expansion ROM"),
        }
    }
}

/// A BAR as a device declares it: what kind and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarDef {
    /// Address space and width.
    pub kind: BarKind,
    /// Size in bytes, a power of two.
    pub size: u64,
}

impl BarDef {
    /// Validates a BAR definition for slot `index` (use [`ROM_BAR`] for the ROM).
    pub fn new(index: usize, kind: BarKind, size: u64) -> Result<Self, BarError> {
        if !size.is_power_of_two() {
            return Err(BarError::SizeNotPowerOfTwo(size));
        }
        let (min, max) = kind.size_limits();
        if size < min || size > max {
            return Err(BarError::SizeOutOfRange {
                size,
                kind,
                min,
                max,
            });
        }
        let index_ok = match kind {
            BarKind::Rom => index == ROM_BAR,
            BarKind::Memory64 { .. } => index < NUM_BARS - 1,
            BarKind::Io | BarKind::Memory32 { .. } => index < NUM_BARS,
        };
        if !index_ok {
            return Err(BarError::InvalidIndex { index, kind });
        }
        Ok(BarDef { kind, size })
    }

    /// Write mask of the low (or only) BAR register: the address bits above the size.
    pub(crate) fn low_write_mask(&self) -> u32 {
        // Truncation intended: the low dword of the inverted size mask.
        let addr_bits = !(self.size.wrapping_sub(1)) as u32;
        match self.kind {
            BarKind::Io => addr_bits & BAR_IO_ADDR_MASK,
            BarKind::Memory32 { .. } | BarKind::Memory64 { .. } => addr_bits & BAR_MEM_ADDR_MASK,
            BarKind::Rom => (addr_bits & ROM_ADDR_MASK) | ROM_ENABLE,
        }
    }

    /// Address bits of the low (or only) BAR register (the write mask
    /// without the ROM enable bit).
    pub(crate) fn low_address_mask(&self) -> u32 {
        self.low_write_mask()
            & !if self.kind == BarKind::Rom {
                ROM_ENABLE
            } else {
                0
            }
    }

    /// Write mask of the upper register of a 64-bit BAR.
    pub(crate) fn high_write_mask(&self) -> u32 {
        (!(self.size.wrapping_sub(1)) >> 32) as u32
    }

    /// True when the registers hold the all-ones sizing pattern in either
    /// dword (a guest probing the size with decoding left on), which must not
    /// be taken for a placement.
    pub(crate) fn is_sizing(&self, low: u32, high: u32) -> bool {
        let low_addr = self.low_address_mask();
        let low_all_ones = low_addr != 0 && low & low_addr == low_addr;
        let high_all_ones = matches!(self.kind, BarKind::Memory64 { .. })
            && self.high_write_mask() != 0
            && high & self.high_write_mask() == self.high_write_mask();
        low_all_ones || high_all_ones
    }

    /// Decodes the base address from the low and high register values.
    pub(crate) fn decode(&self, low: u32, high: u32) -> u64 {
        match self.kind {
            BarKind::Io => u64::from(low & BAR_IO_ADDR_MASK),
            BarKind::Memory32 { .. } => u64::from(low & BAR_MEM_ADDR_MASK),
            BarKind::Memory64 { .. } => {
                (u64::from(high) << 32) | u64::from(low & BAR_MEM_ADDR_MASK)
            }
            BarKind::Rom => u64::from(low & ROM_ADDR_MASK),
        }
    }
}

/// Where a BAR was first placed by the [`crate::BarAllocator`], as firmware would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarPlacement {
    /// Function owning the BAR.
    pub address: crate::PciAddress,
    /// BAR index (0..=5, or [`ROM_BAR`]).
    pub bar: usize,
    /// Kind and size.
    pub def: BarDef,
    /// Base address (guest physical, or I/O port).
    pub base: u64,
}

/// A BAR the guest reprogrammed to a new base, accepted by the bus.
///
/// `old` is the last accepted base (`None` if the BAR had never been placed);
/// the VMM moves whatever it mapped there (KVM memory slots, ioeventfds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMove {
    /// Function owning the BAR.
    pub address: crate::PciAddress,
    /// BAR index (0..=5, or [`ROM_BAR`]).
    pub bar: usize,
    /// Address space and width.
    pub kind: BarKind,
    /// Previous accepted base.
    pub old: Option<u64>,
    /// New base.
    pub new: u64,
    /// Size in bytes.
    pub size: u64,
}
