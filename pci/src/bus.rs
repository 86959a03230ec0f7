//! The PCI bus of segment 0, bus 0: 32 device slots (function 0 each), the
//! host bridge at 00:00.0, firmware-style BAR assignment and the config
//! access dispatch shared by the legacy port ([`crate::legacy_io`]) and ECAM
//! ([`crate::ecam`]) front ends. Routing of BAR accesses and BAR moves lives
//! in [`crate::bar_routing`].

use thiserror::Error;

use crate::bar::{BarDef, BarMove, BarPlacement, NUM_BAR_SLOTS};
use crate::bar_allocator::{BarAllocError, BarAllocator, PciWindows, Window};
use crate::config::{ConfigError, HEADER_TYPE};
use crate::device::{DeviceError, PciAddress, PciDevice, DEVICES_PER_BUS};
use crate::host_bridge::HostBridge;

/// Header type bit saying the device has more than function 0.
const HEADER_TYPE_MULTIFUNCTION: u8 = 0x80;

/// Errors managing the bus.
#[derive(Debug, Error)]
pub enum BusError {
    /// Every slot is taken.
    #[error("all {DEVICES_PER_BUS} PCI slots are taken: use fewer devices")]
    Full,
    /// The slot number is 32 or more.
    #[error("there is no PCI slot {0}")]
    BadSlot(u8),
    /// The slot already holds a device.
    #[error("PCI slot {0} is already taken")]
    SlotTaken(u8),
    /// A BAR could not be placed.
    #[error("cannot place BARs")]
    Alloc(#[from] BarAllocError),
    /// The allocator's base could not be programmed into the BAR.
    #[error("cannot program BAR {bar} of {address}")]
    Program {
        /// Function owning the BAR.
        address: PciAddress,
        /// BAR index.
        bar: usize,
        /// Why not.
        #[source]
        source: ConfigError,
    },
    /// A device address could not be formed.
    #[error("bad device address")]
    Address(#[from] DeviceError),
}

/// What the bus knows about one BAR of a function.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BarState {
    /// Kind and size, fixed when the device was added.
    pub(crate) def: BarDef,
    /// Last accepted base (what the VMM has mapped), if any.
    pub(crate) placed: Option<u64>,
    /// Whether accesses are routed to the BAR right now.
    pub(crate) active: bool,
    /// Base last refused, to warn only once per bad placement.
    pub(crate) refused: Option<u64>,
    /// Base the allocator handed out, freed when the device leaves the bus.
    pub(crate) allocated: Option<u64>,
}

/// One occupied slot.
pub(crate) struct Slot {
    /// Address of the function.
    pub(crate) address: PciAddress,
    /// The function.
    pub(crate) device: Box<dyn PciDevice>,
    /// Per-BAR routing state; index [`crate::ROM_BAR`] is the ROM.
    pub(crate) bars: [Option<BarState>; NUM_BAR_SLOTS],
}

/// PCI segment 0, bus 0.
pub struct PciBus {
    /// Device slots 0..32 (function 0 only).
    pub(crate) slots: Vec<Option<Slot>>,
    /// BAR placement from the windows.
    pub(crate) allocator: BarAllocator,
    /// MMIO ranges no BAR may overlap (ECAM, interrupt controllers, RAM holes...).
    pub(crate) reserved_mmio: Vec<Window>,
    /// I/O port ranges no BAR may overlap (0xCF8..0xD00, legacy devices).
    pub(crate) reserved_io: Vec<Window>,
    /// The 0xCF8 address latch.
    pub(crate) config_address: u32,
}

impl PciBus {
    /// Creates the bus with the host bridge at 00:00.0 and BARs to be
    /// placed in `windows`.
    pub fn new(windows: PciWindows) -> Result<Self, BusError> {
        let mut bus = PciBus {
            slots: (0..DEVICES_PER_BUS).map(|_| None).collect(),
            allocator: BarAllocator::new(windows)?,
            reserved_mmio: Vec::new(),
            reserved_io: Vec::new(),
            config_address: 0,
        };
        bus.add_device_at(0, Box::new(HostBridge::new()))?;
        Ok(bus)
    }

    /// The windows BARs live in.
    pub fn windows(&self) -> &PciWindows {
        self.allocator.windows()
    }

    /// Forbids BARs in the MMIO range `window` (guest moves there are refused).
    pub fn reserve_mmio(&mut self, window: Window) {
        self.reserved_mmio.push(window);
    }

    /// Forbids BARs in the I/O port range `window`.
    pub fn reserve_io(&mut self, window: Window) {
        self.reserved_io.push(window);
    }

    /// The address of the first free slot: the one search for a free slot, for
    /// devices that must know their address before they are built.
    pub fn free_address(&self) -> Result<PciAddress, BusError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(BusError::Full)?;
        // Fewer than 32 slots: fits a u8.
        Ok(PciAddress::new(0, slot as u8, 0)?)
    }

    /// Plugs `device` into the first free slot and returns its address.
    pub fn add_device(&mut self, device: Box<dyn PciDevice>) -> Result<PciAddress, BusError> {
        let address = self.free_address()?;
        self.add_device_at(address.device(), device)
    }

    /// Plugs `device` into slot `slot` (device number) as function 0.
    pub fn add_device_at(
        &mut self,
        slot: u8,
        device: Box<dyn PciDevice>,
    ) -> Result<PciAddress, BusError> {
        let entry = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(BusError::BadSlot(slot))?;
        if entry.is_some() {
            return Err(BusError::SlotTaken(slot));
        }
        let address = PciAddress::new(0, slot, 0)?;
        let mut bars = [None; NUM_BAR_SLOTS];
        for (index, def) in device.config().bars() {
            if let Some(state) = bars.get_mut(index) {
                *state = Some(BarState {
                    def,
                    placed: None,
                    active: false,
                    refused: None,
                    allocated: None,
                });
            }
        }
        *entry = Some(Slot {
            address,
            device,
            bars,
        });
        Ok(address)
    }

    /// Unplugs the device in slot `slot` (hot-unplug): its BARs stop being
    /// routed and their ranges go back to the windows. The host bridge (slot
    /// 0) stays. Returns the device, for the caller to release.
    pub fn remove_device(&mut self, slot: u8) -> Option<Box<dyn PciDevice>> {
        if slot == 0 {
            return None;
        }
        let removed = self.slots.get_mut(usize::from(slot))?.take()?;
        for state in removed.bars.iter().flatten() {
            if let Some(base) = state.allocated {
                self.allocator.free(state.def, base);
            }
        }
        Some(removed.device)
    }

    /// The function at `address`, if present.
    pub fn device(&self, address: PciAddress) -> Option<&dyn PciDevice> {
        self.slot(address).map(|s| s.device.as_ref())
    }

    /// The function at `address`, mutable (for the VMM to reach its own device).
    pub fn device_mut(&mut self, address: PciAddress) -> Option<&mut (dyn PciDevice + 'static)> {
        self.slot_mut(address).map(|s| s.device.as_mut())
    }

    /// Addresses of all present functions.
    pub fn addresses(&self) -> Vec<PciAddress> {
        self.slots.iter().flatten().map(|s| s.address).collect()
    }

    /// The slot holding `address`.
    pub(crate) fn slot(&self, address: PciAddress) -> Option<&Slot> {
        if address.bus() != 0 || address.function() != 0 {
            return None;
        }
        self.slots.get(usize::from(address.device()))?.as_ref()
    }

    /// The slot holding `address`, mutable.
    pub(crate) fn slot_mut(&mut self, address: PciAddress) -> Option<&mut Slot> {
        if address.bus() != 0 || address.function() != 0 {
            return None;
        }
        self.slots.get_mut(usize::from(address.device()))?.as_mut()
    }

    /// Places every BAR not yet placed, largest first as firmware does, and
    /// programs the bases into config space (decoding stays off until the
    /// guest enables it). Returns the new placements for the VMM to map.
    pub fn assign_bars(&mut self) -> Result<Vec<BarPlacement>, BusError> {
        let mut wanted: Vec<(usize, usize, PciAddress, BarDef)> = Vec::new();
        for (slot_index, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            for (bar, state) in slot.bars.iter().enumerate() {
                if let Some(state) = state.filter(|s| s.placed.is_none()) {
                    wanted.push((slot_index, bar, slot.address, state.def));
                }
            }
        }
        // Largest first keeps natural alignment from fragmenting the windows.
        wanted.sort_by(|a, b| {
            b.3.size
                .cmp(&a.3.size)
                .then(a.0.cmp(&b.0))
                .then(a.1.cmp(&b.1))
        });
        let mut placements = Vec::with_capacity(wanted.len());
        for (slot_index, bar, address, def) in wanted {
            let base = self.allocator.allocate(address, bar, def)?;
            let Some(slot) = self.slots.get_mut(slot_index).and_then(Option::as_mut) else {
                continue;
            };
            slot.device
                .config_mut()
                .set_bar_address(bar, base)
                .map_err(|source| BusError::Program {
                    address,
                    bar,
                    source,
                })?;
            if let Some(state) = slot.bars.get_mut(bar).and_then(Option::as_mut) {
                state.placed = Some(base);
                state.allocated = Some(base);
            }
            placements.push(BarPlacement {
                address,
                bar,
                def,
                base,
            });
        }
        Ok(placements)
    }

    /// Guest config read of function `address`: absent functions read all
    /// ones; the multifunction bit is masked since only function 0 exists.
    /// `offset + data.len()` beyond 4096 reads as ones for the excess.
    pub fn config_read(&mut self, address: PciAddress, offset: usize, data: &mut [u8]) {
        let Some(slot) = self.slot_mut(address) else {
            data.fill(0xff);
            return;
        };
        let (inside, outside) = split_at_config_end(offset, data);
        slot.device.config_read(offset, inside);
        outside.fill(0xff);
        if let Some(byte) = HEADER_TYPE
            .checked_sub(offset)
            .and_then(|i| inside.get_mut(i))
        {
            *byte &= !HEADER_TYPE_MULTIFUNCTION;
        }
    }

    /// Guest config write to function `address`; returns the BAR moves the
    /// write caused (already applied to routing and told to the device).
    pub fn config_write(
        &mut self,
        address: PciAddress,
        offset: usize,
        data: &[u8],
    ) -> Vec<BarMove> {
        let Some(slot) = self.slot_mut(address) else {
            return Vec::new();
        };
        let end = offset
            .saturating_add(data.len())
            .min(crate::config::EXT_CONFIG_SPACE_SIZE);
        let inside = data.get(..end.saturating_sub(offset)).unwrap_or(&[]);
        if !inside.is_empty() {
            slot.device.config_write(offset, inside);
        }
        self.refresh_after_write(usize::from(address.device()))
    }
}

/// Splits `data` into the part that lies below 4096 when starting at
/// `offset` and the excess.
fn split_at_config_end(offset: usize, data: &mut [u8]) -> (&mut [u8], &mut [u8]) {
    let room = crate::config::EXT_CONFIG_SPACE_SIZE.saturating_sub(offset);
    let at = room.min(data.len());
    data.split_at_mut(at)
}
