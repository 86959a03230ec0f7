//! Placing guest RAM and the 64-bit PCI window around the host IOMMU's
//! limits ([`IovaConstraints`]), since guest physical address = IOVA. With
//! no constraints the result is the VMM's usual layout: RAM at
//! `[0, min(size, low limit))` and from 4 GiB up, the 64-bit window at the
//! first aligned address above RAM. With constraints RAM skips forbidden
//! ranges (split into more regions) and the window moves up; fixed windows
//! (32-bit MMIO, ECAM, interrupt controllers) cannot move, so a conflict
//! there is an error that names both sides.

use crate::size::format_size;
use crate::vfio::iova::{IovaConstraints, IovaRange};

/// Why no layout fits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A fixed window overlaps a forbidden range.
    #[error(
        "the guest's {name} at {start:#x}..{end:#x} overlaps {forbidden} ({why}); vfio-vmm cannot \
         move it, so these devices cannot be assigned on this host"
    )]
    FixedWindow {
        /// Which window.
        name: String,
        /// Its first address.
        start: u64,
        /// Its end (exclusive).
        end: u64,
        /// The forbidden range.
        forbidden: IovaRange,
        /// Why it is forbidden.
        why: String,
    },
    /// The start of RAM (where the kernel and boot structures go) is forbidden.
    #[error(
        "the first {} of guest RAM must be usable for DMA but {forbidden} is {why}; the host IOMMU \
         leaves no room for a bootable guest",
        format_size(*needed)
    )]
    LowRam {
        /// Bytes needed from address 0.
        needed: u64,
        /// The forbidden range.
        forbidden: IovaRange,
        /// Why it is forbidden.
        why: String,
    },
    /// RAM does not fit below the IOMMU's limit.
    #[error(
        "only {} of the {} of guest RAM fit in the IOMMU's usable addresses; use a smaller --memory",
        format_size(*placed),
        format_size(*wanted)
    )]
    NoRoom {
        /// Bytes placed.
        placed: u64,
        /// Bytes wanted.
        wanted: u64,
    },
    /// No place for the 64-bit PCI window.
    #[error(
        "no room for the {} 64-bit PCI window above guest RAM (ending at {ram_end:#x}) within the \
         IOMMU's usable addresses; use a smaller --memory",
        format_size(*size)
    )]
    NoMmio64 {
        /// Window size.
        size: u64,
        /// End of RAM.
        ram_end: u64,
    },
}

/// What the VMM wants to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRequest {
    /// Bytes of guest RAM.
    pub ram_size: u64,
    /// RAM below 4 GiB stops here (start of the MMIO hole).
    pub low_ram_limit: u64,
    /// RAM above the hole starts here (4 GiB).
    pub high_ram_start: u64,
    /// Windows that cannot move: `(name, start, size)`.
    pub fixed: Vec<(String, u64, u64)>,
    /// Size of the 64-bit PCI window.
    pub mmio64_size: u64,
    /// Alignment of the 64-bit window (1 GiB).
    pub mmio64_align: u64,
    /// RAM region granule (2 MiB keeps huge pages usable).
    pub granule: u64,
    /// Bytes that must be usable from address 0 (boot structures, kernel).
    pub min_low_ram: u64,
}

/// Where things go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLayout {
    /// RAM regions `(start, size)`, ascending.
    pub ram: Vec<(u64, u64)>,
    /// Base of the 64-bit PCI window.
    pub mmio64_base: u64,
}

impl GuestLayout {
    /// First address above RAM.
    pub fn ram_end(&self) -> u64 {
        self.ram.last().map_or(0, |(s, n)| s + n)
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two), saturating.
fn align_up(x: u64, align: u64) -> u64 {
    x.checked_add(align - 1)
        .map_or(!(align - 1), |v| v & !(align - 1))
}

/// `space` (inclusive ranges) minus the forbidden ranges.
fn usable(space: &[IovaRange], forbidden: &[(IovaRange, String)]) -> Vec<IovaRange> {
    let mut out: Vec<IovaRange> = space.to_vec();
    for (f, _) in forbidden {
        out = out
            .into_iter()
            .flat_map(|r| {
                let mut parts = Vec::new();
                if !(f.end < r.start || f.start > r.end) {
                    if f.start > r.start {
                        parts.push(IovaRange {
                            start: r.start,
                            end: f.start - 1,
                        });
                    }
                    if f.end < r.end {
                        parts.push(IovaRange {
                            start: f.end + 1,
                            end: r.end,
                        });
                    }
                } else {
                    parts.push(r);
                }
                parts
            })
            .collect();
    }
    out
}

/// Ranges the layout must avoid, with why.
type Forbidden = [(IovaRange, String)];

/// Places RAM and the 64-bit window (see the module doc).
pub fn plan(
    constraints: &IovaConstraints,
    req: &LayoutRequest,
) -> Result<GuestLayout, LayoutError> {
    let forbidden = constraints.forbidden();
    check_fixed(&forbidden, &req.fixed)?;
    let ram = place_ram(&forbidden, req)?;
    let ram_end = ram.last().map_or(0, |(s, n)| s + n);
    let mmio64_base = place_mmio64(&forbidden, req, ram_end)?;
    Ok(GuestLayout { ram, mmio64_base })
}

/// Refuses a fixed window `(name, start, size)` that overlaps a forbidden range.
fn check_fixed(forbidden: &Forbidden, fixed: &[(String, u64, u64)]) -> Result<(), LayoutError> {
    for (name, start, size) in fixed {
        if let Some((range, why)) = forbidden.iter().find(|(r, _)| r.overlaps(*start, *size)) {
            return Err(LayoutError::FixedWindow {
                name: name.clone(),
                start: *start,
                end: start.saturating_add(*size),
                forbidden: *range,
                why: why.clone(),
            });
        }
    }
    Ok(())
}

/// RAM regions, granule-aligned, in the usable parts of `[0, low limit)` and from the
/// high RAM start up; refuses when the start of RAM is unusable or RAM does not fit.
fn place_ram(forbidden: &Forbidden, req: &LayoutRequest) -> Result<Vec<(u64, u64)>, LayoutError> {
    let space = [
        IovaRange {
            start: 0,
            end: req.low_ram_limit.saturating_sub(1),
        },
        IovaRange {
            start: req.high_ram_start,
            end: u64::MAX,
        },
    ];
    let mut ram = Vec::new();
    let mut left = req.ram_size;
    for r in usable(&space, forbidden) {
        if left == 0 {
            break;
        }
        let start = align_up(r.start, req.granule);
        let end = r.end.saturating_add(1) & !(req.granule - 1);
        if end > start {
            let take = left.min(end - start);
            ram.push((start, take));
            left -= take;
        }
    }
    check_low_ram(forbidden, req, &ram)?;
    if left > 0 {
        return Err(LayoutError::NoRoom {
            placed: req.ram_size - left,
            wanted: req.ram_size,
        });
    }
    Ok(ram)
}

/// Refuses a layout whose first RAM region does not cover the bytes needed from address 0.
fn check_low_ram(
    forbidden: &Forbidden,
    req: &LayoutRequest,
    ram: &[(u64, u64)],
) -> Result<(), LayoutError> {
    let needed = req.min_low_ram.min(req.ram_size);
    if ram.first().is_some_and(|(s, n)| *s == 0 && *n >= needed) {
        return Ok(());
    }
    let (forbidden, why) = forbidden
        .iter()
        .find(|(r, _)| r.overlaps(0, needed))
        .cloned()
        .unwrap_or((
            IovaRange {
                start: 0,
                end: needed.saturating_sub(1),
            },
            "unusable".to_string(),
        ));
    Err(LayoutError::LowRam {
        needed,
        forbidden,
        why,
    })
}

/// Base of the 64-bit PCI window: the first aligned, usable place above RAM and the
/// high RAM start.
fn place_mmio64(
    forbidden: &Forbidden,
    req: &LayoutRequest,
    ram_end: u64,
) -> Result<u64, LayoutError> {
    let floor = align_up(ram_end.max(req.high_ram_start), req.mmio64_align);
    let window = [IovaRange {
        start: floor,
        end: u64::MAX,
    }];
    usable(&window, forbidden)
        .into_iter()
        .find_map(|r| {
            let base = align_up(r.start, req.mmio64_align);
            let last = base.checked_add(req.mmio64_size - 1)?;
            (last <= r.end).then_some(base)
        })
        .ok_or(LayoutError::NoMmio64 {
            size: req.mmio64_size,
            ram_end,
        })
}
