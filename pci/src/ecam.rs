//! PCI Express enhanced configuration access (ECAM / MMCONFIG): a memory
//! region where config byte `reg` of bus/device/function sits at offset
//! `bus << 20 | device << 15 | function << 12 | reg`, 4 KiB per function.
//!
//! Accesses of any size and alignment are accepted; one that crosses a
//! function's 4 KiB boundary is split. Absent functions (and buses other
//! than 0) read all ones; bytes 256..4096 of a present function read as zero
//! (no extended capabilities) unless the device says otherwise.

use crate::bar::BarMove;
use crate::bus::PciBus;
use crate::config::EXT_CONFIG_SPACE_SIZE;
use crate::device::PciAddress;

/// Size of the ECAM region for one bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Bytes per function in ECAM.
const FUNCTION_SIZE: u64 = EXT_CONFIG_SPACE_SIZE as u64;

/// Splits an ECAM offset into function and register.
fn decode(offset: u64) -> Option<(PciAddress, usize)> {
    let bus = u8::try_from(offset >> 20).ok()?;
    // Masked to their widths before conversion.
    let device = ((offset >> 15) & 0x1f) as u8;
    let function = ((offset >> 12) & 0x7) as u8;
    let register = (offset & (FUNCTION_SIZE - 1)) as usize;
    PciAddress::new(bus, device, function)
        .ok()
        .map(|a| (a, register))
}

/// Length of the piece of an access at `offset` that stays in one function.
fn piece_len(offset: u64, remaining: usize) -> usize {
    let room = FUNCTION_SIZE - (offset & (FUNCTION_SIZE - 1));
    usize::try_from(room).map_or(remaining, |room| room.min(remaining))
}

impl PciBus {
    /// Guest read of `data.len()` bytes at `offset` into the ECAM region.
    pub fn ecam_read(&mut self, offset: u64, data: &mut [u8]) {
        let mut done = 0;
        while done < data.len() {
            let Some(at) = offset.checked_add(done as u64) else {
                data[done..].fill(0xff);
                return;
            };
            let len = piece_len(at, data.len() - done);
            let piece = &mut data[done..done + len];
            match decode(at) {
                Some((address, register)) => self.config_read(address, register, piece),
                None => piece.fill(0xff),
            }
            done += len;
        }
    }

    /// Guest write of `data` at `offset` into the ECAM region; returns the
    /// BAR moves the write caused.
    pub fn ecam_write(&mut self, offset: u64, data: &[u8]) -> Vec<BarMove> {
        let mut moves = Vec::new();
        let mut done = 0;
        while done < data.len() {
            let Some(at) = offset.checked_add(done as u64) else {
                break;
            };
            let len = piece_len(at, data.len() - done);
            if let Some((address, register)) = decode(at) {
                moves.extend(self.config_write(address, register, &data[done..done + len]));
            }
            done += len;
        }
        moves
    }
}
