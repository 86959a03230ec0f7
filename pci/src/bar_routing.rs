//! Routing guest MMIO and port I/O to BARs, and following BAR moves.
//!
//! After every config write the bus re-reads the function's BARs and command
//! register. A BAR is routed only while its function decodes it (memory or
//! I/O space enable, plus the ROM enable bit for the ROM) and is not being
//! sized (all-ones pattern written with decoding left on). A new base is
//! accepted when it lies inside a suitable window and overlaps neither a
//! reserved range nor another routed BAR; the device hears about it through
//! [`crate::PciDevice::move_bar`] and the caller gets a [`BarMove`]. A
//! refused base leaves the BAR unrouted (the last accepted base stays what
//! the VMM has mapped) until the guest programs an acceptable one.

use log::warn;
use thiserror::Error;

use crate::bar::{BarDef, BarMove, NUM_BAR_SLOTS};
use crate::bus::PciBus;
use crate::device::PciAddress;

/// Why a BAR placement is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// The range is not inside a window suitable for the BAR.
    #[error("{base:#x}+{size:#x} is outside the PCI windows")]
    OutsideWindows {
        /// Requested base.
        base: u64,
        /// BAR size.
        size: u64,
    },
    /// The range overlaps a reserved range.
    #[error("{base:#x}+{size:#x} overlaps reserved range {reserved_base:#x}+{reserved_size:#x}")]
    Reserved {
        /// Requested base.
        base: u64,
        /// BAR size.
        size: u64,
        /// Reserved range base.
        reserved_base: u64,
        /// Reserved range size.
        reserved_size: u64,
    },
    /// The range overlaps a BAR that is routed.
    #[error("{base:#x}+{size:#x} overlaps BAR {bar} of {address}")]
    Overlap {
        /// Requested base.
        base: u64,
        /// BAR size.
        size: u64,
        /// Function owning the other BAR.
        address: PciAddress,
        /// The other BAR.
        bar: usize,
    },
}

/// Whether `[a, a + a_len)` and `[b, b + b_len)` intersect (no overflow).
fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    let a_end = a.saturating_add(a_len);
    let b_end = b.saturating_add(b_len);
    a < b_end && b < a_end
}

impl PciBus {
    /// Checks whether BAR `bar` of slot `slot_index` may sit at `base`.
    fn check_placement(
        &self,
        slot_index: usize,
        bar: usize,
        def: BarDef,
        base: u64,
    ) -> Result<(), PlacementError> {
        let size = def.size;
        if !self.windows().accepts(def.kind, base, size) {
            return Err(PlacementError::OutsideWindows { base, size });
        }
        let reserved = if def.kind.is_io() {
            &self.reserved_io
        } else {
            &self.reserved_mmio
        };
        if let Some(r) = reserved
            .iter()
            .find(|r| overlaps(base, size, r.base, r.size))
        {
            return Err(PlacementError::Reserved {
                base,
                size,
                reserved_base: r.base,
                reserved_size: r.size,
            });
        }
        for (other_index, other) in self.slots.iter().enumerate() {
            let Some(other) = other else { continue };
            for (other_bar, state) in other.bars.iter().enumerate() {
                let Some(state) = state else { continue };
                if (other_index, other_bar) == (slot_index, bar)
                    || !state.active
                    || state.def.kind.is_io() != def.kind.is_io()
                {
                    continue;
                }
                let Some(other_base) = state.placed else {
                    continue;
                };
                if overlaps(base, size, other_base, state.def.size) {
                    return Err(PlacementError::Overlap {
                        base,
                        size,
                        address: other.address,
                        bar: other_bar,
                    });
                }
            }
        }
        Ok(())
    }

    /// Re-evaluates the BARs of slot `slot_index` after a config write; if
    /// that freed address space (a BAR moved or stopped decoding), BARs of
    /// other functions that were refused get another chance.
    pub(crate) fn refresh_after_write(&mut self, slot_index: usize) -> Vec<BarMove> {
        let active_before = self.active_bars(slot_index);
        let mut moves = self.refresh_bars(slot_index);
        let active_after = self.active_bars(slot_index);
        let freed = !moves.is_empty()
            || active_before
                .iter()
                .zip(&active_after)
                .any(|(before, after)| *before && !*after);
        if freed {
            for other in 0..self.slots.len() {
                let waiting = self
                    .slots
                    .get(other)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| {
                        s.bars
                            .iter()
                            .flatten()
                            .any(|b| !b.active && b.refused.is_some())
                    });
                if other != slot_index && waiting {
                    moves.extend(self.refresh_bars(other));
                }
            }
        }
        moves
    }

    /// Which BARs of slot `slot_index` are routed.
    fn active_bars(&self, slot_index: usize) -> [bool; NUM_BAR_SLOTS] {
        let mut active = [false; NUM_BAR_SLOTS];
        if let Some(slot) = self.slots.get(slot_index).and_then(Option::as_ref) {
            for (flag, state) in active.iter_mut().zip(&slot.bars) {
                *flag = state.is_some_and(|s| s.active);
            }
        }
        active
    }

    /// Re-evaluates every BAR of slot `slot_index` after a config write and
    /// returns the accepted moves.
    fn refresh_bars(&mut self, slot_index: usize) -> Vec<BarMove> {
        let mut moves = Vec::new();
        for bar in 0..NUM_BAR_SLOTS {
            // Read the guest's programming without holding a mutable borrow.
            let Some(slot) = self.slots.get(slot_index).and_then(Option::as_ref) else {
                return moves;
            };
            let Some(state) = slot.bars.get(bar).copied().flatten() else {
                continue;
            };
            let config = slot.device.config();
            let wanted = config
                .bar_address(bar)
                .filter(|_| config.bar_decoding(bar) && !config.bar_sizing(bar));
            let address = slot.address;
            let verdict =
                wanted.map(|base| (base, self.check_placement(slot_index, bar, state.def, base)));

            let Some(slot) = self.slots.get_mut(slot_index).and_then(Option::as_mut) else {
                return moves;
            };
            let Some(state) = slot.bars.get_mut(bar).and_then(Option::as_mut) else {
                continue;
            };
            match verdict {
                None => state.active = false,
                Some((base, Err(why))) => {
                    state.active = false;
                    if state.refused != Some(base) {
                        warn!("{address}: refusing to place BAR {bar} at {base:#x}: {why}");
                        state.refused = Some(base);
                    }
                }
                Some((base, Ok(()))) if state.placed == Some(base) => {
                    state.active = true;
                    state.refused = None;
                }
                Some((base, Ok(()))) => {
                    let mv = BarMove {
                        address,
                        bar,
                        kind: state.def.kind,
                        old: state.placed,
                        new: base,
                        size: state.def.size,
                    };
                    match slot.device.move_bar(&mv) {
                        Ok(()) => {
                            state.placed = Some(base);
                            state.active = true;
                            state.refused = None;
                            moves.push(mv);
                        }
                        Err(e) => {
                            state.active = false;
                            if state.refused != Some(base) {
                                warn!(
                                    "{address}: device refused to move BAR {bar} to {base:#x}: {e}"
                                );
                                state.refused = Some(base);
                            }
                        }
                    }
                }
            }
        }
        moves
    }

    /// The routed BAR containing `[addr, addr + len)` in memory (`io` false)
    /// or I/O space: `(slot index, bar, offset in BAR)`.
    fn find_bar(&self, io: bool, addr: u64, len: usize) -> Option<(usize, usize, u64)> {
        let len = u64::try_from(len).ok()?;
        let end = addr.checked_add(len)?;
        self.slots
            .iter()
            .enumerate()
            .find_map(|(slot_index, slot)| {
                let slot = slot.as_ref()?;
                slot.bars.iter().enumerate().find_map(|(bar, state)| {
                    let state = state
                        .as_ref()
                        .filter(|s| s.active && s.def.kind.is_io() == io)?;
                    let base = state.placed?;
                    let bar_end = base.checked_add(state.def.size)?;
                    (addr >= base && end <= bar_end).then(|| (slot_index, bar, addr - base))
                })
            })
    }

    /// Serves a guest MMIO read at `addr` if a routed BAR contains it.
    /// Returns false when no BAR claims the access (`data` untouched).
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        self.bar_access(false, addr, data.len(), |dev, bar, off| {
            dev.bar_read(bar, off, data)
        })
    }

    /// Serves a guest MMIO write at `addr` if a routed BAR contains it.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        self.bar_access(false, addr, data.len(), |dev, bar, off| {
            dev.bar_write(bar, off, data)
        })
    }

    /// Serves a guest port read at `port` if a routed I/O BAR contains it.
    pub fn pio_read(&mut self, port: u64, data: &mut [u8]) -> bool {
        self.bar_access(true, port, data.len(), |dev, bar, off| {
            dev.bar_read(bar, off, data)
        })
    }

    /// Serves a guest port write at `port` if a routed I/O BAR contains it.
    pub fn pio_write(&mut self, port: u64, data: &[u8]) -> bool {
        self.bar_access(true, port, data.len(), |dev, bar, off| {
            dev.bar_write(bar, off, data)
        })
    }

    /// Finds the BAR for an access and runs `f` on its device.
    fn bar_access(
        &mut self,
        io: bool,
        addr: u64,
        len: usize,
        f: impl FnOnce(&mut dyn crate::PciDevice, usize, u64),
    ) -> bool {
        let Some((slot_index, bar, offset)) = self.find_bar(io, addr, len) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(slot_index).and_then(Option::as_mut) else {
            return false;
        };
        f(slot.device.as_mut(), bar, offset);
        true
    }

    /// The base BAR `bar` of `address` is routed at right now, if it is.
    pub fn routed_bar(&self, address: PciAddress, bar: usize) -> Option<u64> {
        let state = self.slot(address)?.bars.get(bar).copied().flatten()?;
        state.placed.filter(|_| state.active)
    }
}
