//! BAR placement as firmware does it: the PCI address windows the VMM gives
//! the guest (32-bit MMIO, 64-bit MMIO, I/O ports) and a [`BarAllocator`]
//! that hands out naturally aligned ranges from them, with errors that say
//! which BAR of which function did not fit where.
//!
//! The same windows bound where the guest may later move a BAR
//! ([`PciWindows::accepts`]).

use std::fmt;

use thiserror::Error;
use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

use iommu::size::format_size;

use crate::bar::{BarDef, BarKind};
use crate::device::PciAddress;

/// Errors placing BARs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BarAllocError {
    /// A window is empty or wraps around the address space.
    #[error("invalid {kind}: base {base:#x} size {size:#x}")]
    InvalidWindow {
        /// Which window.
        kind: WindowKind,
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// No window is configured for this kind of BAR.
    #[error("BAR {bar} of {address} is an {kind} but there is no {window}")]
    NoWindow {
        /// Function owning the BAR.
        address: PciAddress,
        /// BAR index.
        bar: usize,
        /// Kind of BAR.
        kind: BarKind,
        /// The window it would need.
        window: WindowKind,
    },
    /// The BAR is larger than the whole window.
    #[error("BAR {bar} of {address} needs {} but the {window} has {}", format_size(*size), format_size(*window_size))]
    TooLarge {
        /// Function owning the BAR.
        address: PciAddress,
        /// BAR index.
        bar: usize,
        /// BAR size.
        size: u64,
        /// The window.
        window: WindowKind,
        /// The window's size.
        window_size: u64,
    },
    /// The window has no naturally aligned free range left for the BAR.
    #[error("BAR {bar} of {address} needs {} but the {window} has no aligned free range that large left", format_size(*size))]
    WindowFull {
        /// Function owning the BAR.
        address: PciAddress,
        /// BAR index.
        bar: usize,
        /// BAR size.
        size: u64,
        /// The window.
        window: WindowKind,
    },
}

/// The three PCI address windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// MMIO below 4 GiB.
    Mmio32,
    /// MMIO above 4 GiB.
    Mmio64,
    /// I/O ports.
    Io,
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::Mmio32 => write!(f, "32-bit window"),
            WindowKind::Mmio64 => write!(f, "64-bit window"),
            WindowKind::Io => write!(f, "I/O window"),
        }
    }
}

/// One address window: `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Window {
    /// Whether `[base, base + size)` lies inside the window.
    pub fn contains(&self, base: u64, size: u64) -> bool {
        let (Some(end), Some(window_end)) =
            (base.checked_add(size), self.base.checked_add(self.size))
        else {
            return false;
        };
        base >= self.base && end <= window_end
    }
}

/// The windows the VMM describes to the guest (ACPI _CRS of the host bridge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PciWindows {
    /// MMIO below 4 GiB, for 32-bit BARs and the ROM.
    pub mmio32: Option<Window>,
    /// MMIO above 4 GiB, for 64-bit BARs.
    pub mmio64: Option<Window>,
    /// I/O ports, for I/O BARs.
    pub io: Option<Window>,
}

impl PciWindows {
    /// The window a BAR of `kind` is placed in: 64-bit BARs go to the
    /// 64-bit window, or to the 32-bit one when there is no 64-bit window.
    pub fn window_for(&self, kind: BarKind) -> WindowKind {
        match kind {
            BarKind::Io => WindowKind::Io,
            BarKind::Memory64 { .. } if self.mmio64.is_some() => WindowKind::Mmio64,
            BarKind::Memory32 { .. } | BarKind::Memory64 { .. } | BarKind::Rom => {
                WindowKind::Mmio32
            }
        }
    }

    /// The window of `kind`, if configured.
    pub fn get(&self, kind: WindowKind) -> Option<Window> {
        match kind {
            WindowKind::Mmio32 => self.mmio32,
            WindowKind::Mmio64 => self.mmio64,
            WindowKind::Io => self.io,
        }
    }

    /// Whether the guest may place a BAR of `kind` at `[base, base + size)`:
    /// I/O BARs in the I/O window, 32-bit BARs and the ROM in the 32-bit
    /// window, 64-bit BARs in either MMIO window.
    pub fn accepts(&self, kind: BarKind, base: u64, size: u64) -> bool {
        let inside = |w: Option<Window>| w.is_some_and(|w| w.contains(base, size));
        match kind {
            BarKind::Io => inside(self.io),
            BarKind::Memory32 { .. } | BarKind::Rom => inside(self.mmio32),
            BarKind::Memory64 { .. } => inside(self.mmio32) || inside(self.mmio64),
        }
    }
}

/// Hands out naturally aligned BAR ranges from the windows.
#[derive(Debug, Clone)]
pub struct BarAllocator {
    /// The windows.
    windows: PciWindows,
    /// Allocator of the 32-bit window.
    mmio32: Option<AddressAllocator>,
    /// Allocator of the 64-bit window.
    mmio64: Option<AddressAllocator>,
    /// Allocator of the I/O window.
    io: Option<AddressAllocator>,
}

impl BarAllocator {
    /// Creates an allocator over `windows`.
    pub fn new(windows: PciWindows) -> Result<Self, BarAllocError> {
        let make = |kind: WindowKind| -> Result<Option<AddressAllocator>, BarAllocError> {
            windows
                .get(kind)
                .map(|w| {
                    AddressAllocator::new(w.base, w.size).map_err(|_| {
                        BarAllocError::InvalidWindow {
                            kind,
                            base: w.base,
                            size: w.size,
                        }
                    })
                })
                .transpose()
        };
        Ok(BarAllocator {
            windows,
            mmio32: make(WindowKind::Mmio32)?,
            mmio64: make(WindowKind::Mmio64)?,
            io: make(WindowKind::Io)?,
        })
    }

    /// The windows.
    pub fn windows(&self) -> &PciWindows {
        &self.windows
    }

    /// Places BAR `bar` of the function at `address` and returns its base.
    pub fn allocate(
        &mut self,
        address: PciAddress,
        bar: usize,
        def: BarDef,
    ) -> Result<u64, BarAllocError> {
        let window = self.windows.window_for(def.kind);
        let window_size = self.windows.get(window).map_or(0, |w| w.size);
        let allocator = match window {
            WindowKind::Mmio32 => self.mmio32.as_mut(),
            WindowKind::Mmio64 => self.mmio64.as_mut(),
            WindowKind::Io => self.io.as_mut(),
        };
        let Some(allocator) = allocator else {
            return Err(BarAllocError::NoWindow {
                address,
                bar,
                kind: def.kind,
                window,
            });
        };
        if def.size > window_size {
            return Err(BarAllocError::TooLarge {
                address,
                bar,
                size: def.size,
                window,
                window_size,
            });
        }
        allocator
            .allocate(def.size, def.size, AllocPolicy::FirstMatch)
            .map(|range| range.start())
            .map_err(|_| BarAllocError::WindowFull {
                address,
                bar,
                size: def.size,
                window,
            })
    }

    /// Gives the range of a BAR of kind and size `def` allocated at `base`
    /// back to its window (a hot-unplugged device's); a range this
    /// allocator did not hand out is ignored.
    pub fn free(&mut self, def: BarDef, base: u64) {
        let allocator = match self.windows.window_for(def.kind) {
            WindowKind::Mmio32 => self.mmio32.as_mut(),
            WindowKind::Mmio64 => self.mmio64.as_mut(),
            WindowKind::Io => self.io.as_mut(),
        };
        let range = base
            .checked_add(def.size.saturating_sub(1))
            .and_then(|end| RangeInclusive::new(base, end).ok());
        if let (Some(allocator), Some(range)) = (allocator, range) {
            let _ = allocator.free(&range);
        }
    }
}
