//! A bus with windows, reserved ranges and fake devices, shared by the bus tests.

use std::sync::{Arc, Mutex};

use super::fakes::{fake_vectors, DeviceLog, FakeDevice};
use crate::bar::BarKind;
use crate::bar_allocator::{PciWindows, Window};
use crate::bus::PciBus;
use crate::capability::CapabilityPlace;
use crate::device::PciAddress;
use crate::msix::{Msix, MsixCapability};

/// ECAM base used in tests (reserved, outside the windows' allocation order).
pub const ECAM_BASE: u64 = 0xe000_0000;

/// The windows of the test bus.
pub fn windows() -> PciWindows {
    PciWindows {
        mmio32: Some(Window {
            base: 0xc000_0000,
            size: 0x4000_0000,
        }),
        mmio64: Some(Window {
            base: 1 << 36,
            size: 1 << 34,
        }),
        io: Some(Window {
            base: 0xc000,
            size: 0x1000,
        }),
    }
}

/// An empty bus (host bridge only) with ECAM and the config ports reserved.
pub fn bus() -> PciBus {
    let mut bus = PciBus::new(windows()).unwrap();
    bus.reserve_mmio(Window {
        base: ECAM_BASE,
        size: 0x1000_0000,
    });
    bus.reserve_io(Window {
        base: 0xcf8,
        size: 8,
    });
    bus
}

/// A device with a 4 KiB memory BAR 0, a 64-bit 1 MiB BAR 2, a 256-byte
/// I/O BAR 4 and a 32 KiB ROM, plus 2-vector MSI-X in BAR 0 (table at
/// 0x800, PBA at 0xc00).
pub fn rich_device() -> (FakeDevice, Arc<Mutex<DeviceLog>>) {
    let mut dev = FakeDevice::new();
    let c = &mut dev.config;
    c.add_bar(
        0,
        BarKind::Memory32 {
            prefetchable: false,
        },
        0x1000,
    )
    .unwrap();
    c.add_bar(2, BarKind::Memory64 { prefetchable: true }, 0x10_0000)
        .unwrap();
    c.add_bar(4, BarKind::Io, 0x100).unwrap();
    c.add_bar(crate::ROM_BAR, BarKind::Rom, 0x8000).unwrap();
    let cap = MsixCapability::new(2, 0, 0x800, 0, 0xc00).unwrap();
    let (vectors, _) = fake_vectors(2);
    dev.msix = Some(Msix::add(c, CapabilityPlace::Append, cap, vectors).unwrap());
    let log = dev.log.clone();
    (dev, log)
}

/// Address of device `n` on bus 0.
pub fn addr(n: u8) -> PciAddress {
    PciAddress::new(0, n, 0).unwrap()
}

/// Reads a dword of config space through the bus.
pub fn cfg32(bus: &mut PciBus, a: PciAddress, offset: usize) -> u32 {
    let mut d = [0u8; 4];
    bus.config_read(a, offset, &mut d);
    u32::from_le_bytes(d)
}

#[test]
fn a_removed_device_frees_its_slot_and_bar_ranges_for_the_next() {
    let mut bus = bus();
    let (dev, _) = rich_device();
    let addr = bus.add_device(Box::new(dev)).unwrap();
    let first = bus.assign_bars().unwrap();
    assert!(bus.remove_device(0).is_none(), "the host bridge stays");
    assert!(bus.remove_device(addr.device()).is_some());
    assert!(bus.device(addr).is_none());
    assert!(bus.remove_device(addr.device()).is_none());
    let (dev, _) = rich_device();
    let again = bus.add_device(Box::new(dev)).unwrap();
    assert_eq!(again, addr, "the slot is free again");
    let second = bus.assign_bars().unwrap();
    let bases =
        |p: &[crate::bar::BarPlacement]| p.iter().map(|p| (p.bar, p.base)).collect::<Vec<_>>();
    assert_eq!(bases(&first), bases(&second), "the ranges were given back");
    assert!(bus.remove_device(40).is_none());
}
