//! Type 0 configuration space of one PCI function: the 256 register bytes, a
//! write mask and a write-1-to-clear mask per byte, the standard header fields
//! and the BAR registers (declaration, sizing through the write mask, decoding).
//!
//! Guest accesses go through [`PciConfig::read`] / [`PciConfig::write`], which
//! accept any offset and length and never panic: bytes past the 256-byte
//! conventional space read as zero (an empty PCIe extended space) and writes
//! there are dropped. Device-side updates that must bypass the guest write
//! mask (pending bits, interrupt status) use [`PciConfig::write_internal`].
//! The capability list builder lives in [`crate::capability`].

use thiserror::Error;

use crate::bar::{BarDef, BarError, BarKind, NUM_BARS, NUM_BAR_SLOTS, ROM_BAR, ROM_ENABLE};
use crate::interrupt::IntxPin;

/// Size of conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Size of PCIe (ECAM) configuration space per function.
pub const EXT_CONFIG_SPACE_SIZE: usize = 4096;

/// Vendor ID register offset.
pub const VENDOR_ID: usize = 0x00;
/// Device ID register offset.
pub const DEVICE_ID: usize = 0x02;
/// Command register offset.
pub const COMMAND: usize = 0x04;
/// Status register offset.
pub const STATUS: usize = 0x06;
/// Revision ID register offset.
pub const REVISION_ID: usize = 0x08;
/// Class code (programming interface, subclass, base class) offset.
pub const CLASS_CODE: usize = 0x09;
/// Cache line size register offset.
pub const CACHE_LINE_SIZE: usize = 0x0c;
/// Latency timer register offset.
pub const LATENCY_TIMER: usize = 0x0d;
/// Header type register offset.
pub const HEADER_TYPE: usize = 0x0e;
/// First BAR register offset.
pub const BAR0: usize = 0x10;
/// Subsystem vendor ID register offset.
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
/// Subsystem ID register offset.
pub const SUBSYSTEM_ID: usize = 0x2e;
/// Expansion ROM BAR offset.
pub const ROM_BAR_OFFSET: usize = 0x30;
/// Capabilities pointer offset.
pub const CAPABILITIES_POINTER: usize = 0x34;
/// Interrupt line register offset.
pub const INTERRUPT_LINE: usize = 0x3c;
/// Interrupt pin register offset.
pub const INTERRUPT_PIN: usize = 0x3d;

/// Command register: respond to I/O space accesses.
pub const COMMAND_IO_SPACE: u16 = 1 << 0;
/// Command register: respond to memory space accesses.
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
/// Command register: the function may master DMA and send MSIs.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: parity error response.
pub const COMMAND_PARITY_ERROR_RESPONSE: u16 = 1 << 6;
/// Command register: SERR# enable.
pub const COMMAND_SERR_ENABLE: u16 = 1 << 8;
/// Command register: INTx emulation disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Command bits the guest may change.
pub const COMMAND_WRITABLE: u16 = COMMAND_IO_SPACE
    | COMMAND_MEMORY_SPACE
    | COMMAND_BUS_MASTER
    | COMMAND_PARITY_ERROR_RESPONSE
    | COMMAND_SERR_ENABLE
    | COMMAND_INTX_DISABLE;

/// Status register: an INTx interrupt is pending.
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status register: the capability list at 0x34 is valid.
pub const STATUS_CAPABILITIES_LIST: u16 = 1 << 4;
/// Status register error bits the guest clears by writing one
/// (master data parity error, signaled/received target abort, received
/// master abort, signaled system error, detected parity error).
pub const STATUS_RW1C: u16 = (1 << 8) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15);

/// Errors building a configuration space.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A BAR definition is invalid.
    #[error("invalid BAR {index}: {source}")]
    InvalidBar {
        /// BAR index.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: BarError,
    },
    /// No BAR is declared at this index.
    #[error("BAR {0} is not declared")]
    NoSuchBar(usize),
    /// The base address is not aligned to the BAR size or does not fit its register.
    #[error("base {base:#x} is not valid for a {kind} of size {size:#x}")]
    BadBarBase {
        /// Requested base.
        base: u64,
        /// Kind of BAR.
        kind: BarKind,
        /// BAR size.
        size: u64,
    },
}

/// Identity fields of a type 0 header, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciHeader {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision_id: u8,
    /// 24-bit class code: base class << 16 | subclass << 8 | programming interface.
    pub class_code: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// INTx pin the function uses, if any.
    pub interrupt_pin: Option<IntxPin>,
}

/// Configuration space of one type 0 function.
#[derive(Debug, Clone)]
pub struct PciConfig {
    /// Register contents.
    bytes: [u8; CONFIG_SPACE_SIZE],
    /// Bits the guest may write.
    write_mask: [u8; CONFIG_SPACE_SIZE],
    /// Bits the guest clears by writing one.
    rw1c_mask: [u8; CONFIG_SPACE_SIZE],
    /// Declared BARs; index [`ROM_BAR`] is the expansion ROM.
    bars: [Option<BarDef>; NUM_BAR_SLOTS],
    /// Where the next capability will be placed.
    pub(crate) next_capability: usize,
    /// Offset of the last capability in the chain (0 when the list is empty).
    pub(crate) last_capability: usize,
}

impl PciConfig {
    /// Creates the configuration space of a function with the given identity.
    pub fn new(header: &PciHeader) -> Self {
        let mut config = PciConfig {
            bytes: [0; CONFIG_SPACE_SIZE],
            write_mask: [0; CONFIG_SPACE_SIZE],
            rw1c_mask: [0; CONFIG_SPACE_SIZE],
            bars: [None; NUM_BAR_SLOTS],
            next_capability: 0x40,
            last_capability: 0,
        };
        config.write_internal(VENDOR_ID, &header.vendor_id.to_le_bytes());
        config.write_internal(DEVICE_ID, &header.device_id.to_le_bytes());
        config.write_internal(REVISION_ID, &[header.revision_id]);
        config.write_internal(CLASS_CODE, &header.class_code.to_le_bytes()[..3]);
        config.write_internal(
            SUBSYSTEM_VENDOR_ID,
            &header.subsystem_vendor_id.to_le_bytes(),
        );
        config.write_internal(SUBSYSTEM_ID, &header.subsystem_id.to_le_bytes());
        let pin = header.interrupt_pin.map_or(0, IntxPin::register_value);
        config.write_internal(INTERRUPT_PIN, &[pin]);
        config.set_write_mask(COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        config.set_rw1c_mask(STATUS, &STATUS_RW1C.to_le_bytes());
        config.set_write_mask(CACHE_LINE_SIZE, &[0xff, 0xff]);
        config.set_write_mask(INTERRUPT_LINE, &[0xff]);
        config
    }

    /// Guest read of `data.len()` bytes at `offset` (any size, any alignment).
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, out) in data.iter_mut().enumerate() {
            *out = offset
                .checked_add(i)
                .and_then(|o| self.bytes.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Guest write of `data` at `offset`: read-only bits keep their value and
    /// write-1-to-clear bits are cleared where a one is written.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, value) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i).filter(|o| *o < CONFIG_SPACE_SIZE) else {
                break;
            };
            let mask = self.write_mask[o];
            let clear = self.rw1c_mask[o] & value;
            self.bytes[o] = ((self.bytes[o] & !mask) | (value & mask)) & !clear;
        }
    }

    /// Device-side write that ignores the guest write mask (for status bits,
    /// pending bits, capability contents). Bytes past 256 are dropped.
    pub fn write_internal(&mut self, offset: usize, data: &[u8]) {
        copy_into(&mut self.bytes, offset, data);
    }

    /// Sets which bits of the bytes at `offset` the guest may write.
    pub fn set_write_mask(&mut self, offset: usize, mask: &[u8]) {
        copy_into(&mut self.write_mask, offset, mask);
    }

    /// Sets which bits of the bytes at `offset` are write-1-to-clear.
    pub fn set_rw1c_mask(&mut self, offset: usize, mask: &[u8]) {
        copy_into(&mut self.rw1c_mask, offset, mask);
    }

    /// Byte at `offset` (zero past the conventional space).
    pub fn read_u8(&self, offset: usize) -> u8 {
        let mut b = [0u8; 1];
        self.read(offset, &mut b);
        b[0]
    }

    /// Little-endian word at `offset`.
    pub fn read_u16(&self, offset: usize) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    /// Little-endian dword at `offset`.
    pub fn read_u32(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(COMMAND)
    }

    /// The status register.
    pub fn status(&self) -> u16 {
        self.read_u16(STATUS)
    }

    /// True when the guest enabled bus mastering (DMA and MSI).
    pub fn bus_master(&self) -> bool {
        self.command() & COMMAND_BUS_MASTER != 0
    }

    /// True when the guest disabled INTx in the command register.
    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }

    /// Sets or clears the Interrupt Status bit (INTx pending) in the status register.
    pub fn set_interrupt_status(&mut self, pending: bool) {
        let status = self.status();
        let status = if pending {
            status | STATUS_INTERRUPT
        } else {
            status & !STATUS_INTERRUPT
        };
        self.write_internal(STATUS, &status.to_le_bytes());
    }

    /// Sets the interrupt line register (the IRQ the VMM wired INTx to).
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.write_internal(INTERRUPT_LINE, &[line]);
    }

    /// Declares BAR `index` (0..=5, or [`ROM_BAR`] with [`BarKind::Rom`]).
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u64) -> Result<(), ConfigError> {
        let def = BarDef::new(index, kind, size)
            .map_err(|source| ConfigError::InvalidBar { index, source })?;
        let upper = matches!(kind, BarKind::Memory64 { .. }).then_some(index + 1);
        for slot in std::iter::once(index).chain(upper) {
            if self.slot_used(slot) {
                return Err(ConfigError::InvalidBar {
                    index,
                    source: BarError::SlotInUse(slot),
                });
            }
        }
        let offset = bar_offset(index);
        self.write_internal(offset, &kind.flag_bits().to_le_bytes());
        self.set_write_mask(offset, &def.low_write_mask().to_le_bytes());
        if let Some(upper) = upper {
            let high = bar_offset(upper);
            self.write_internal(high, &[0; 4]);
            self.set_write_mask(high, &def.high_write_mask().to_le_bytes());
        }
        self.bars[index] = Some(def);
        Ok(())
    }

    /// Whether BAR register slot `slot` is taken (also by the upper half of a 64-bit BAR).
    fn slot_used(&self, slot: usize) -> bool {
        if self.bars.get(slot).copied().flatten().is_some() {
            return true;
        }
        slot > 0
            && slot < NUM_BARS
            && matches!(
                self.bars[slot - 1],
                Some(BarDef {
                    kind: BarKind::Memory64 { .. },
                    ..
                })
            )
    }

    /// The BAR declared at `index`, if any.
    pub fn bar(&self, index: usize) -> Option<BarDef> {
        self.bars.get(index).copied().flatten()
    }

    /// All declared BARs as `(index, definition)`.
    pub fn bars(&self) -> impl Iterator<Item = (usize, BarDef)> + '_ {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.map(|d| (i, d)))
    }

    /// The base address the guest (or firmware) programmed into BAR `index`.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let def = self.bar(index)?;
        let offset = bar_offset(index);
        let low = self.read_u32(offset);
        let high = match def.kind {
            BarKind::Memory64 { .. } => self.read_u32(offset + 4),
            _ => 0,
        };
        Some(def.decode(low, high))
    }

    /// True when BAR `index` holds the all-ones sizing pattern (in either
    /// dword of a 64-bit BAR): the guest is probing its size.
    pub fn bar_sizing(&self, index: usize) -> bool {
        let Some(def) = self.bar(index) else {
            return false;
        };
        let offset = bar_offset(index);
        let high = match def.kind {
            BarKind::Memory64 { .. } => self.read_u32(offset + 4),
            _ => 0,
        };
        def.is_sizing(self.read_u32(offset), high)
    }

    /// Programs BAR `index` to `base` as firmware would (keeps the ROM enable bit).
    pub fn set_bar_address(&mut self, index: usize, base: u64) -> Result<(), ConfigError> {
        let def = self.bar(index).ok_or(ConfigError::NoSuchBar(index))?;
        let bad = ConfigError::BadBarBase {
            base,
            kind: def.kind,
            size: def.size,
        };
        let fits_32 = u32::try_from(base).is_ok();
        if !base.is_multiple_of(def.size)
            || (!matches!(def.kind, BarKind::Memory64 { .. }) && !fits_32)
        {
            return Err(bad);
        }
        let offset = bar_offset(index);
        // Address bits only: flag bits and the ROM enable bit keep their value.
        let addr_mask = def.low_address_mask();
        let old = self.read_u32(offset);
        // Truncation intended: the low dword of the base.
        let low = (old & !addr_mask) | (base as u32 & addr_mask);
        self.write_internal(offset, &low.to_le_bytes());
        if let BarKind::Memory64 { .. } = def.kind {
            self.write_internal(offset + 4, &((base >> 32) as u32).to_le_bytes());
        }
        Ok(())
    }

    /// True when the guest set the enable bit of the expansion ROM BAR.
    pub fn rom_enabled(&self) -> bool {
        self.bar(ROM_BAR).is_some() && self.read_u32(ROM_BAR_OFFSET) & ROM_ENABLE != 0
    }

    /// True when the function decodes accesses to BAR `index` right now
    /// (command register space enable, plus the ROM enable bit for the ROM).
    pub fn bar_decoding(&self, index: usize) -> bool {
        let Some(def) = self.bar(index) else {
            return false;
        };
        let command = self.command();
        match def.kind {
            BarKind::Io => command & COMMAND_IO_SPACE != 0,
            BarKind::Rom => command & COMMAND_MEMORY_SPACE != 0 && self.rom_enabled(),
            BarKind::Memory32 { .. } | BarKind::Memory64 { .. } => {
                command & COMMAND_MEMORY_SPACE != 0
            }
        }
    }
}

/// Config space offset of BAR slot `index` ([`ROM_BAR`] maps to 0x30).
pub(crate) fn bar_offset(index: usize) -> usize {
    if index >= NUM_BARS {
        ROM_BAR_OFFSET
    } else {
        BAR0 + 4 * index
    }
}

/// Copies `src` into `dst` at `offset`, dropping whatever falls outside.
fn copy_into(dst: &mut [u8], offset: usize, src: &[u8]) {
    for (i, value) in src.iter().enumerate() {
        match offset.checked_add(i).and_then(|o| dst.get_mut(o)) {
            Some(slot) => *slot = *value,
            None => break,
        }
    }
}
