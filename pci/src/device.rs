//! What a PCI function is to the bus: its [`PciAddress`] and the
//! [`PciDevice`] trait every emulated or passed-through function implements.
//!
//! A device owns its [`PciConfig`]; the bus reads BAR programming and the
//! command register from it to route BAR accesses, so a device that serves
//! some config reads elsewhere (VFIO) must still keep BARs and the command
//! register up to date in its `PciConfig`.

use std::fmt;

use thiserror::Error;

use crate::bar::BarMove;
use crate::config::PciConfig;

/// Devices per bus.
pub const DEVICES_PER_BUS: u8 = 32;
/// Functions per device.
pub const FUNCTIONS_PER_DEVICE: u8 = 8;

/// Errors of PCI devices towards the bus.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// Device or function number out of range.
    #[error("invalid PCI address {bus:02x}:{device:02x}.{function}")]
    BadAddress {
        /// Bus number.
        bus: u8,
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// The device could not follow a BAR to its new base.
    #[error("cannot move BAR {bar} to {new:#x}: {reason}")]
    BarMoveFailed {
        /// BAR index.
        bar: usize,
        /// Requested base.
        new: u64,
        /// Why not.
        reason: String,
    },
}

/// Bus/device/function of a PCI function (segment 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// Bus number.
    bus: u8,
    /// Device number, 0..32.
    device: u8,
    /// Function number, 0..8.
    function: u8,
}

impl PciAddress {
    /// Builds an address, checking device < 32 and function < 8.
    pub fn new(bus: u8, device: u8, function: u8) -> Result<Self, DeviceError> {
        if device >= DEVICES_PER_BUS || function >= FUNCTIONS_PER_DEVICE {
            return Err(DeviceError::BadAddress {
                bus,
                device,
                function,
            });
        }
        Ok(PciAddress {
            bus,
            device,
            function,
        })
    }

    /// Bus number.
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// Device number.
    pub fn device(&self) -> u8 {
        self.device
    }

    /// Function number.
    pub fn function(&self) -> u8 {
        self.function
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// A PCI function as the bus sees it.
///
/// Offsets handed to the config methods are below 4096 and `offset +
/// data.len()` never exceeds 4096; BAR accesses lie inside the BAR. Data is
/// little-endian, 1 to 8 bytes. None of these may panic on guest values.
pub trait PciDevice: Send {
    /// The function's configuration space.
    fn config(&self) -> &PciConfig;

    /// The function's configuration space, mutable.
    fn config_mut(&mut self) -> &mut PciConfig;

    /// Guest config read. The default serves it from [`Self::config`].
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }

    /// Guest config write. The default applies it to [`Self::config_mut`];
    /// devices with MSI/MSI-X override it to also call their
    /// `config_written` hooks.
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config_mut().write(offset, data);
    }

    /// Guest read at `offset` inside BAR `bar` (0..=5, or [`crate::ROM_BAR`]).
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);

    /// Guest write at `offset` inside BAR `bar`.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);

    /// The guest moved a BAR and the bus accepted the new place; an error
    /// makes the bus stop routing the BAR until the guest places it again.
    fn move_bar(&mut self, mv: &BarMove) -> Result<(), DeviceError> {
        let _ = mv;
        Ok(())
    }
}
