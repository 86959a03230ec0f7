//! Which parts of a passed-through BAR go straight to the device and how they
//! follow the BAR: [`mmap_areas`] decides the page-aligned pieces that become
//! KVM memory slots (the kernel's sparse-mmap areas, minus the pages holding
//! the MSI-X table and PBA, which are emulated), and [`BarMappings`] owns the
//! host mmaps of those pieces and the guest slots, moving the slots when the
//! guest moves the BAR. Everything else in a BAR is trapped and forwarded.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use log::warn;

use crate::bar::NUM_BAR_SLOTS;
use crate::vfio::ops::{Area, GuestMapper, MapError, MappedArea, RegionInfo, SlotId, PAGE_SIZE};

/// Rounds down to a page boundary.
fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

/// Rounds up to a page boundary, saturating at the last page.
fn page_up(x: u64) -> u64 {
    x.checked_add(PAGE_SIZE - 1)
        .map_or(page_down(u64::MAX), page_down)
}

/// The page-aligned areas of a BAR of `bar_size` bytes that may be mapped
/// into the guest, given the region info and the byte ranges of the BAR that
/// must stay trapped (MSI-X table and PBA). Trapped ranges are widened to
/// whole pages; a BAR smaller than a page, or a region the kernel does not let
/// us mmap, is trapped entirely.
pub fn mmap_areas(region: &RegionInfo, bar_size: u64, trapped: &[Range<u64>]) -> Vec<Area> {
    if !region.mmappable || bar_size < PAGE_SIZE {
        return Vec::new();
    }
    let candidates = match &region.sparse_areas {
        Some(areas) => areas.clone(),
        None => vec![Area {
            offset: 0,
            size: region.size,
        }],
    };
    let holes: Vec<Range<u64>> = trapped
        .iter()
        .filter(|r| r.start < r.end)
        .map(|r| page_down(r.start)..page_up(r.end))
        .collect();
    let mut out = Vec::new();
    for area in candidates {
        let start = page_up(area.offset);
        let end = page_down(area.end().min(bar_size));
        let mut pieces: Vec<Range<u64>> = std::iter::once(start..end).collect();
        for hole in &holes {
            pieces = pieces
                .into_iter()
                .flat_map(|p| {
                    let before = p.start..p.end.min(hole.start);
                    let after = p.start.max(hole.end)..p.end;
                    [before, after]
                })
                .filter(|p| p.start < p.end)
                .collect();
        }
        out.extend(pieces.into_iter().map(|p| Area {
            offset: p.start,
            size: p.end - p.start,
        }));
    }
    out.sort_by_key(|a| a.offset);
    out
}

/// A host mapping of one area of a BAR.
struct Piece {
    /// Offset of the area in the BAR.
    offset: u64,
    /// The host mapping.
    area: Box<dyn MappedArea>,
}

/// One BAR's mapped pieces and where they sit in the guest.
#[derive(Default)]
struct BarState {
    /// Host mappings, fixed at attach.
    pieces: Vec<Piece>,
    /// Guest slots of the pieces, while placed.
    slots: Vec<SlotId>,
    /// Guest base the slots are at.
    base: Option<u64>,
}

/// The direct (exit-free) mappings of a device's BARs.
pub struct BarMappings {
    /// Who creates guest slots.
    mapper: Arc<dyn GuestMapper>,
    /// Per BAR slot (index [`crate::ROM_BAR`] unused: the ROM is trapped).
    bars: [BarState; NUM_BAR_SLOTS],
}

impl BarMappings {
    /// Empty mappings using `mapper` for guest slots.
    pub fn new(mapper: Arc<dyn GuestMapper>) -> Self {
        BarMappings {
            mapper,
            bars: Default::default(),
        }
    }

    /// Adds the host mapping of the area at `offset` of BAR `bar` (before the BAR is placed).
    pub fn add_area(&mut self, bar: usize, offset: u64, area: Box<dyn MappedArea>) {
        if let Some(state) = self.bars.get_mut(bar) {
            state.pieces.push(Piece { offset, area });
        }
    }

    /// Bytes of BAR `bar` mapped directly (not trapped).
    pub fn mapped_bytes(&self, bar: usize) -> u64 {
        self.bars
            .get(bar)
            .map_or(0, |s| s.pieces.iter().map(|p| p.area.size()).sum())
    }

    /// Number of host mappings (future guest slots) of BAR `bar`.
    pub fn pieces(&self, bar: usize) -> usize {
        self.bars.get(bar).map_or(0, |s| s.pieces.len())
    }

    /// Guest base BAR `bar` is mapped at, if placed.
    pub fn base(&self, bar: usize) -> Option<u64> {
        self.bars.get(bar).and_then(|s| s.base)
    }

    /// Puts BAR `bar`'s pieces at guest base `base`, removing them from
    /// wherever they were. On failure nothing of the BAR stays mapped (the
    /// BAR is then served by trapping).
    pub fn place(&mut self, bar: usize, base: u64) -> Result<(), MapError> {
        let mapper = Arc::clone(&self.mapper);
        let Some(state) = self.bars.get_mut(bar) else {
            return Ok(());
        };
        if state.base == Some(base) || state.pieces.is_empty() {
            state.base = Some(base);
            return Ok(());
        }
        Self::clear(mapper.as_ref(), state);
        for piece in &state.pieces {
            let gpa = base.checked_add(piece.offset).ok_or(MapError::Map {
                gpa: base,
                size: piece.area.size(),
                reason: "the address overflows".to_string(),
            })?;
            match mapper.map(gpa, piece.area.size(), piece.area.host_addr()) {
                Ok(slot) => state.slots.push(slot),
                Err(e) => {
                    Self::clear(mapper.as_ref(), state);
                    return Err(e);
                }
            }
        }
        state.base = Some(base);
        Ok(())
    }

    /// Removes BAR `bar` from the guest (its accesses then trap).
    pub fn unplace(&mut self, bar: usize) {
        let mapper = Arc::clone(&self.mapper);
        if let Some(state) = self.bars.get_mut(bar) {
            Self::clear(mapper.as_ref(), state);
        }
    }

    /// Unmaps the slots of one BAR.
    fn clear(mapper: &dyn GuestMapper, state: &mut BarState) {
        for slot in state.slots.drain(..) {
            if let Err(e) = mapper.unmap(slot) {
                warn!("cannot remove BAR mapping slot {}: {e}", slot.0);
            }
        }
        state.base = None;
    }
}

impl Drop for BarMappings {
    /// Guest slots go before the host mappings they point into.
    fn drop(&mut self) {
        let mapper = Arc::clone(&self.mapper);
        for state in &mut self.bars {
            Self::clear(mapper.as_ref(), state);
        }
    }
}

/// Shared handle on a device's [`BarMappings`]: the device moves BARs through
/// it, and the VMM uses it to map the BARs where firmware-style assignment
/// put them (`PciBus::assign_bars` programs config space without telling the
/// device).
#[derive(Clone)]
pub struct BarHandle(Arc<Mutex<BarMappings>>);

impl BarHandle {
    /// Wraps mappings.
    pub fn new(mappings: BarMappings) -> Self {
        BarHandle(Arc::new(Mutex::new(mappings)))
    }

    /// Runs `f` on the mappings (a poisoned lock is recovered: the state is
    /// a list of slots, consistent after every step).
    pub fn with<R>(&self, f: impl FnOnce(&mut BarMappings) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Maps BAR `bar` at guest base `base` (see [`BarMappings::place`]).
    pub fn place(&self, bar: usize, base: u64) -> Result<(), MapError> {
        self.with(|m| m.place(bar, base))
    }
}
