//! The host bridge at 00:00.0: a type 0 function with class 0x060000 and no
//! BARs, there so that guests scanning bus 0 find a root like on real hardware.

use crate::config::{PciConfig, PciHeader};
use crate::device::PciDevice;

/// Vendor ID of the host bridge (Intel).
pub const HOST_BRIDGE_VENDOR_ID: u16 = 0x8086;
/// Device ID of the host bridge.
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0d57;
/// Class code: bridge, host bridge.
pub const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;

/// The host bridge function.
#[derive(Debug, Clone)]
pub struct HostBridge {
    /// Its configuration space.
    config: PciConfig,
}

impl HostBridge {
    /// Creates the host bridge.
    pub fn new() -> Self {
        HostBridge {
            config: PciConfig::new(&PciHeader {
                vendor_id: HOST_BRIDGE_VENDOR_ID,
                device_id: HOST_BRIDGE_DEVICE_ID,
                revision_id: 0,
                class_code: HOST_BRIDGE_CLASS,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
                interrupt_pin: None,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        // No BARs: the bus never routes here; behave like an absent target.
        data.fill(0xff);
    }

    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}
