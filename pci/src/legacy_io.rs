//! Legacy configuration mechanism #1: the address latch at port 0xCF8 and
//! the data window at 0xCFC..0xCFF.
//!
//! Only a 4-byte access at 0xCF8 reaches the latch (bit 31 enable, bits
//! 23:16 bus, 15:11 device, 10:8 function, 7:2 register); other accesses to
//! 0xCF8..0xCFB read all ones and are ignored (0xCF9 reset control is the
//! VMM's business). Data accesses of any size at 0xCFC + n reach register
//! byte `reg + n`; bytes past 0xCFF read as ones and are dropped on write.
//! With the enable bit clear, or for an absent function, reads return ones.

use crate::bar::BarMove;
use crate::bus::PciBus;
use crate::device::PciAddress;

/// First port of the mechanism (the address latch).
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// Number of ports the mechanism decodes (0xCF8..=0xCFF).
pub const CONFIG_PORTS_LEN: u16 = 8;
/// Offset of the data window from [`CONFIG_ADDRESS_PORT`].
const DATA_OFFSET: u64 = 4;
/// Latch bit enabling configuration cycles.
const ENABLE: u32 = 1 << 31;
/// Latch bits that read back (enable, bus, device, function, register).
const LATCH_MASK: u32 = ENABLE | 0x00ff_fffc;

/// Where the latch points: function and dword-aligned register.
fn decode_latch(latch: u32) -> Option<(PciAddress, usize)> {
    if latch & ENABLE == 0 {
        return None;
    }
    // Each field is masked to its width before the conversion.
    let bus = ((latch >> 16) & 0xff) as u8;
    let device = ((latch >> 11) & 0x1f) as u8;
    let function = ((latch >> 8) & 0x7) as u8;
    let register = (latch & 0xfc) as usize;
    PciAddress::new(bus, device, function)
        .ok()
        .map(|a| (a, register))
}

impl PciBus {
    /// Guest read of `data.len()` bytes at `offset` from port 0xCF8.
    pub fn config_port_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&self.config_address.to_le_bytes());
            return;
        }
        let Some((address, register, inside)) = self.data_window(offset, data.len()) else {
            return;
        };
        if let Some(chunk) = data.get_mut(..inside) {
            self.config_read(address, register, chunk);
        }
    }

    /// Guest write of `data` at `offset` from port 0xCF8; returns the BAR
    /// moves the write caused.
    pub fn config_port_write(&mut self, offset: u64, data: &[u8]) -> Vec<BarMove> {
        if offset == 0 {
            if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                self.config_address = u32::from_le_bytes(bytes) & LATCH_MASK;
            }
            return Vec::new();
        }
        let Some((address, register, inside)) = self.data_window(offset, data.len()) else {
            return Vec::new();
        };
        match data.get(..inside) {
            Some(chunk) => self.config_write(address, register, chunk),
            None => Vec::new(),
        }
    }

    /// For a data-window access at `offset` of `len` bytes: the function,
    /// the config offset of its first byte and how many bytes fall inside
    /// the window. `None` for latch-port accesses or a disabled latch.
    fn data_window(&self, offset: u64, len: usize) -> Option<(PciAddress, usize, usize)> {
        let byte = offset.checked_sub(DATA_OFFSET)?;
        let room = u64::from(CONFIG_PORTS_LEN).checked_sub(offset)?;
        let inside = usize::try_from(room).ok()?.min(len);
        let (address, register) = decode_latch(self.config_address)?;
        let register = register.checked_add(usize::try_from(byte).ok()?)?;
        Some((address, register, inside))
    }
}
