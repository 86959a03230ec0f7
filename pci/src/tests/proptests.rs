//! Property tests: random guest accesses of every size, offset and value
//! never panic, never change read-only bits, and never leave two routed
//! BARs overlapping or outside the windows.

use proptest::prelude::*;

use super::bus_setup::{addr, bus, cfg32, rich_device};
use super::fakes::{fake_vectors, header};
use crate::bar::{BarKind, NUM_BAR_SLOTS};
use crate::bus::PciBus;
use crate::capability::CapabilityPlace;
use crate::config::PciConfig;
use crate::device::PciAddress;
use crate::interrupt::Delivery;
use crate::msix::{Msix, MsixCapability};

/// One guest config access: offset, data (its length is the size), read or write.
#[derive(Debug, Clone)]
struct Access {
    offset: u64,
    data: Vec<u8>,
    write: bool,
}

fn access(max_offset: u64, max_len: usize) -> impl Strategy<Value = Access> {
    (
        prop_oneof![0..max_offset, any::<u64>()],
        prop::collection::vec(any::<u8>(), 1..=max_len),
        any::<bool>(),
    )
        .prop_map(|(offset, data, write)| Access {
            offset,
            data,
            write,
        })
}

/// The read-only identity of a function: everything a guest must not change.
pub(crate) fn identity(bus: &mut PciBus, a: PciAddress) -> Vec<u32> {
    let mut words: Vec<u32> = [0x00, 0x08, 0x2c, 0x34]
        .iter()
        .map(|o| cfg32(bus, a, *o))
        .collect();
    words.push(cfg32(bus, a, 0x0c) & 0x00ff_0000);
    words.push(cfg32(bus, a, 0x3c) & 0xffff_ff00);
    // Flag bits of the declared BARs (not the upper halves of 64-bit ones).
    let bars: Vec<(usize, BarKind)> = bus
        .device(a)
        .map(|d| d.config().bars().map(|(i, def)| (i, def.kind)).collect())
        .unwrap_or_default();
    for (bar, kind) in bars {
        let flags = if kind == BarKind::Io { 0x3 } else { 0xf };
        if bar < 6 {
            words.push(cfg32(bus, a, 0x10 + 4 * bar) & flags);
        }
    }
    // Capability headers and MSI-X table/PBA registers.
    let caps = bus
        .device(a)
        .map(|d| d.config().capabilities())
        .unwrap_or_default();
    for (offset, _) in caps {
        words.push(cfg32(bus, a, offset) & 0xffff);
        words.push(cfg32(bus, a, offset + 4));
        words.push(cfg32(bus, a, offset + 8));
    }
    words
}

/// Routed BAR ranges `(io, base, size)` of every function.
pub(crate) fn routed(bus: &PciBus) -> Vec<(bool, u64, u64)> {
    let mut out = Vec::new();
    for a in bus.addresses() {
        let Some(dev) = bus.device(a) else { continue };
        for bar in 0..NUM_BAR_SLOTS {
            if let (Some(base), Some(def)) = (bus.routed_bar(a, bar), dev.config().bar(bar)) {
                out.push((def.kind.is_io(), base, def.size));
            }
        }
    }
    out
}

pub(crate) fn two_device_bus() -> PciBus {
    let mut b = bus();
    for _ in 0..2 {
        let (dev, _) = rich_device();
        b.add_device(Box::new(dev)).unwrap();
    }
    b.assign_bars().unwrap();
    b
}

pub(crate) fn check_bus_invariants(
    b: &mut PciBus,
    before: &[(PciAddress, Vec<u32>)],
) -> Result<(), TestCaseError> {
    for (a, ident) in before {
        prop_assert_eq!(&identity(b, *a), ident, "read-only bits of {} changed", a);
        // The guest can never set a status bit.
        prop_assert_eq!(cfg32(b, *a, 0x04) >> 16 & !0x0010, 0);
    }
    check_routing(b)
}

/// Routed BARs lie inside the windows and never overlap.
pub(crate) fn check_routing(b: &PciBus) -> Result<(), TestCaseError> {
    let ranges = routed(b);
    for (i, (io, base, size)) in ranges.iter().enumerate() {
        let kind = if *io {
            BarKind::Io
        } else {
            BarKind::Memory64 {
                prefetchable: false,
            }
        };
        prop_assert!(b.windows().accepts(kind, *base, *size));
        for (io2, base2, size2) in &ranges[i + 1..] {
            let disjoint = base + size <= *base2 || base2 + size2 <= *base;
            prop_assert!(
                io != io2 || disjoint,
                "overlap {:#x}+{:#x} / {:#x}+{:#x}",
                base,
                size,
                base2,
                size2
            );
        }
    }
    Ok(())
}

pub(crate) fn snapshot(b: &mut PciBus) -> Vec<(PciAddress, Vec<u32>)> {
    b.addresses()
        .into_iter()
        .map(|a| (a, identity(b, a)))
        .collect()
}

proptest! {
    #[test]
    fn ecam_accesses_never_panic_or_break_invariants(
        accesses in prop::collection::vec(access(3 << 15, 8), 1..64)
    ) {
        let mut b = two_device_bus();
        let before = snapshot(&mut b);
        for acc in accesses {
            let mut acc = acc;
            if acc.write {
                b.ecam_write(acc.offset, &acc.data);
            } else {
                b.ecam_read(acc.offset, &mut acc.data);
            }
        }
        check_bus_invariants(&mut b, &before)?;
    }

    #[test]
    fn port_accesses_never_panic_or_break_invariants(
        steps in prop::collection::vec(
            (0u32..3, 0u32..64, access(10, 4)), 1..64)
    ) {
        let mut b = two_device_bus();
        let before = snapshot(&mut b);
        for (dev, reg, acc) in steps {
            let latch = 0x8000_0000 | dev << 11 | reg << 2;
            b.config_port_write(0, &latch.to_le_bytes());
            let mut acc = acc;
            if acc.write {
                b.config_port_write(acc.offset, &acc.data);
            } else {
                b.config_port_read(acc.offset, &mut acc.data);
            }
        }
        check_bus_invariants(&mut b, &before)?;
    }

    #[test]
    fn bar_and_command_writes_keep_routing_sane(
        writes in prop::collection::vec(
            (1u8..3, prop_oneof![Just(0x04usize), 0x10usize..0x28, Just(0x30)], any::<u32>(),
             prop::sample::select(vec![0xc000_0000u32, 0xc000_1000, 0xc010_0000, 0xc001, 0xc100, 0x10, 0x7]),
             any::<bool>()),
            1..64)
    ) {
        let mut b = two_device_bus();
        let before = snapshot(&mut b);
        for (dev, offset, random, plausible, use_random) in writes {
            let value = if use_random { random } else { plausible };
            let offset = if offset == 0x04 { offset } else { offset & !3 };
            b.config_write(addr(dev), offset, &value.to_le_bytes());
            check_bus_invariants(&mut b, &before)?;
        }
    }

    #[test]
    fn bar_space_accesses_never_panic(
        accesses in prop::collection::vec((any::<u64>(), 1usize..=8, any::<bool>(), any::<bool>()), 1..64)
    ) {
        let mut b = two_device_bus();
        for a in [addr(1), addr(2)] {
            b.config_write(a, 0x04, &[0x07]);
        }
        let bases: Vec<u64> = routed(&b).iter().map(|r| r.1).collect();
        for (raw, len, io, near) in accesses {
            let at = if near { bases[(raw % bases.len() as u64) as usize].wrapping_add(raw % 0x2000) } else { raw };
            let mut data = vec![0u8; len];
            if io {
                b.pio_read(at, &mut data);
                b.pio_write(at, &data);
            } else {
                b.mmio_read(at, &mut data);
                b.mmio_write(at, &data);
            }
        }
    }

    #[test]
    fn config_writes_keep_read_only_bits(
        writes in prop::collection::vec((0usize..300, prop::collection::vec(any::<u8>(), 1..8)), 1..64)
    ) {
        let mut c = PciConfig::new(&header());
        c.add_bar(0, BarKind::Memory64 { prefetchable: true }, 0x4000).unwrap();
        c.add_bar(2, BarKind::Io, 0x40).unwrap();
        let before = c.clone();
        for (offset, data) in writes {
            c.write(offset, &data);
        }
        for o in [0x00, 0x08, 0x2c, 0x34, 0x3d, 0x0e, 0x0f] {
            prop_assert_eq!(c.read_u8(o), before.read_u8(o));
        }
        prop_assert_eq!(c.read_u32(0x10) & 0xfff, 0xc);
        prop_assert_eq!(c.read_u32(0x18) & 0x3f, 0x1);
        prop_assert_eq!(c.read_u32(0x1c), 0, "unused BAR stays zero");
        prop_assert_eq!(c.command() & !crate::config::COMMAND_WRITABLE, 0);
        prop_assert_eq!(c.status(), 0);
        prop_assert_eq!(c.read_u32(0x100), 0);
    }

    #[test]
    fn msix_pending_only_while_undeliverable(
        ops in prop::collection::vec((0u8..4, any::<u64>(), prop::collection::vec(any::<u8>(), 1..=8)), 1..128)
    ) {
        let mut c = PciConfig::new(&header());
        c.add_bar(0, BarKind::Memory32 { prefetchable: false }, 0x1000).unwrap();
        let cap = MsixCapability::new(4, 0, 0, 0, 0x800).unwrap();
        let (vectors, _) = fake_vectors(4);
        let mut msix = Msix::add(&mut c, CapabilityPlace::Append, cap, vectors).unwrap();
        let off = msix.offset();
        for (op, raw, data) in ops {
            match op {
                0 => { let _ = msix.bar_write(0, raw % 0x1000, &data); }
                1 => { let mut d = data.clone(); msix.bar_read(0, raw % 0x1000, &mut d); }
                2 => {
                    let at = off + (raw % 12) as usize;
                    c.write(at, &data);
                    msix.config_written(&c, at, data.len()).unwrap();
                }
                _ => {
                    let outcome = msix.trigger((raw % 4) as usize).unwrap();
                    prop_assert_ne!(outcome == Delivery::Dropped, msix.enabled());
                }
            }
            for i in 0..4 {
                let entry = msix.entry(i).unwrap();
                let deliverable = msix.enabled() && !msix.function_masked() && !entry.masked();
                prop_assert!(!(deliverable && msix.pending(i)), "vector {} pending while deliverable", i);
            }
        }
    }
}
