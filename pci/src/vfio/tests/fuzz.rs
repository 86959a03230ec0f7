//! Fuzz target of the VFIO device's shadow config space: the fake NIC on a
//! bus, driven by random guest accesses (config space by every path, BAR
//! sizing and moves, the emulated MSI-X table, trapped BAR accesses).

use arbitrary::Unstructured;

use super::device::{nic, Rig};
use crate::bar::BarKind;
use crate::bar_allocator::PciWindows;
use crate::bus::PciBus;
use crate::device::PciAddress;
use crate::tests::bus_setup::bus;
use crate::tests::bus_setup::cfg32;
use crate::tests::fuzz_pci::{bus_op, BusOp};
use crate::tests::fuzz_support::run;
use crate::tests::proptests::check_routing;

/// What the VMM's shadow owns and the guest must not change: the
/// capability pointer, the interrupt pin, the BARs' flag bits, every
/// capability's next pointer, and the MSI and MSI-X capabilities' fixed
/// registers. (The rest is the device's, behind the kernel's vfio-pci.)
fn shadow_identity(b: &mut PciBus, a: PciAddress) -> Vec<u32> {
    let mut words = vec![cfg32(b, a, 0x34) & 0xff, cfg32(b, a, 0x3c) & 0xff00];
    let dev = b.device(a).unwrap();
    let bars: Vec<_> = dev.config().bars().map(|(i, d)| (i, d.kind)).collect();
    let caps = dev.config().capabilities();
    for (bar, kind) in bars.into_iter().filter(|(bar, _)| *bar < 6) {
        let flags = if kind == BarKind::Io { 0x3 } else { 0xf };
        words.push(cfg32(b, a, 0x10 + 4 * bar) & flags);
    }
    for (offset, id) in caps {
        words.push(cfg32(b, a, offset) & 0xff00);
        if id == 0x05 || id == 0x11 {
            words.push(cfg32(b, a, offset) & 0xffff);
        }
        if id == 0x11 {
            words.push(cfg32(b, a, offset + 4));
            words.push(cfg32(b, a, offset + 8));
        }
    }
    words
}

/// Whether `[base, base + size)` lies inside one of the memory windows.
fn in_windows(w: &PciWindows, base: u64, size: u64) -> bool {
    [w.mmio32, w.mmio64]
        .iter()
        .flatten()
        .any(|win| base >= win.base && base.saturating_add(size) <= win.base + win.size)
}

/// The VFIO NIC's config space through the bus: read-only bits and the
/// device's identity stay, BARs stay in the windows and apart, and every
/// guest mapping of a BAR stays inside a window.
#[test]
fn fuzz_vfio_config() {
    run("fuzz_vfio_config", 1000, |u: &mut Unstructured| {
        let rig = Rig::new(nic());
        let dev = rig.attach();
        let handle = dev.bar_handle();
        let mut b = bus();
        b.add_device(Box::new(dev)).unwrap();
        for p in b.assign_bars().unwrap() {
            handle.place(p.bar, p.base).unwrap();
        }
        let a = b.addresses()[1];
        let before = shadow_identity(&mut b, a);
        let ops: Vec<BusOp> = (0..32).map_while(|_| u.arbitrary().ok()).collect();
        for op in ops {
            bus_op(&mut b, op);
        }
        assert_eq!(shadow_identity(&mut b, a), before, "the shadow changed");
        check_routing(&b).unwrap();
        for (gpa, size, _) in rig.mapper.mappings() {
            assert!(
                in_windows(b.windows(), gpa, size),
                "mapping {gpa:#x}+{size:#x}"
            );
        }
        Ok(())
    });
}
