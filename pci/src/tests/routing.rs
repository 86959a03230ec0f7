//! BAR assignment, routing of MMIO/PIO to BARs and BAR moves through the bus.

use super::bus_setup::{addr, bus, cfg32, rich_device, ECAM_BASE};
use super::fakes::FakeDevice;
use crate::bar::{BarKind, BarMove, ROM_BAR};
use crate::bus::{BusError, PciBus};
use crate::config::{COMMAND, COMMAND_IO_SPACE, COMMAND_MEMORY_SPACE};
use crate::device::PciAddress;

fn command(bus: &mut PciBus, a: PciAddress, bits: u16) -> Vec<BarMove> {
    bus.config_write(a, COMMAND, &bits.to_le_bytes())
}

fn write32(bus: &mut PciBus, a: PciAddress, offset: usize, value: u32) -> Vec<BarMove> {
    bus.config_write(a, offset, &value.to_le_bytes())
}

fn routed(bus: &mut PciBus, addr: u64) -> bool {
    bus.mmio_read(addr, &mut [0u8; 4])
}

/// A bus with the rich device at 00:01.0, BARs assigned.
fn assigned() -> (
    PciBus,
    PciAddress,
    std::sync::Arc<std::sync::Mutex<super::fakes::DeviceLog>>,
) {
    let mut b = bus();
    let (dev, log) = rich_device();
    let a = b.add_device(Box::new(dev)).unwrap();
    b.assign_bars().unwrap();
    (b, a, log)
}

#[test]
fn assignment_is_aligned_in_windows_and_programmed() {
    let mut b = bus();
    let (dev, _) = rich_device();
    let a = b.add_device(Box::new(dev)).unwrap();
    let placements = b.assign_bars().unwrap();
    assert_eq!(placements.len(), 4);
    // Largest first.
    let sizes: Vec<u64> = placements.iter().map(|p| p.def.size).collect();
    assert_eq!(sizes, vec![0x10_0000, 0x8000, 0x1000, 0x100]);
    for p in &placements {
        assert_eq!(p.base % p.def.size, 0);
        assert!(b.windows().accepts(p.def.kind, p.base, p.def.size));
        assert_eq!(
            b.device(a).unwrap().config().bar_address(p.bar),
            Some(p.base)
        );
    }
    let bar2 = placements.iter().find(|p| p.bar == 2).unwrap();
    assert_eq!(bar2.base, 1 << 36, "64-bit BAR in the 64-bit window");
    // Running it again places nothing new.
    assert!(b.assign_bars().unwrap().is_empty());
}

#[test]
fn routing_requires_decode_enable() {
    let (mut b, a, log) = assigned();
    let bar0 = b.device(a).unwrap().config().bar_address(0).unwrap();
    let io = b.device(a).unwrap().config().bar_address(4).unwrap();
    assert!(!routed(&mut b, bar0));
    assert!(b.routed_bar(a, 0).is_none());
    assert!(
        command(&mut b, a, COMMAND_MEMORY_SPACE).is_empty(),
        "no move, just decode"
    );
    assert_eq!(b.routed_bar(a, 0), Some(bar0));
    let mut d = [0u8; 4];
    assert!(b.mmio_read(bar0 + 0x10, &mut d));
    assert_eq!(d, [0x10, 0x11, 0x12, 0x13]);
    assert!(b.mmio_write(bar0 + 0x20, &[1, 2]));
    assert!(!b.pio_read(io, &mut d), "I/O space still off");
    command(&mut b, a, COMMAND_MEMORY_SPACE | COMMAND_IO_SPACE);
    assert!(b.pio_write(io + 4, &[7]));
    assert!(b.pio_read(io + 0xfc, &mut d));
    let l = log.lock().unwrap();
    assert_eq!(l.reads, vec![(0, 0x10, 4), (4, 0xfc, 4)]);
    assert_eq!(l.writes, vec![(0, 0x20, vec![1, 2]), (4, 4, vec![7])]);
    drop(l);
    // Straddling the end of the BAR is not claimed.
    assert!(!b.mmio_read(bar0 + 0xffe, &mut d));
    assert!(!b.mmio_read(u64::MAX - 1, &mut d));
    // Disabling stops routing.
    command(&mut b, a, 0);
    assert!(!routed(&mut b, bar0));
}

#[test]
fn moving_a_bar_reports_and_reroutes() {
    let (mut b, a, log) = assigned();
    let old = b.device(a).unwrap().config().bar_address(0).unwrap();
    command(&mut b, a, COMMAND_MEMORY_SPACE);
    let new = 0xd000_0000;
    let moves = write32(&mut b, a, 0x10, new as u32);
    let expected = BarMove {
        address: a,
        bar: 0,
        kind: BarKind::Memory32 {
            prefetchable: false,
        },
        old: Some(old),
        new,
        size: 0x1000,
    };
    assert_eq!(moves, vec![expected]);
    assert_eq!(log.lock().unwrap().moves, vec![expected]);
    assert!(!routed(&mut b, old));
    assert!(routed(&mut b, new + 0xffc));
}

#[test]
fn sizing_with_decode_on_does_not_move() {
    let (mut b, a, log) = assigned();
    let base = b.device(a).unwrap().config().bar_address(0).unwrap();
    command(&mut b, a, COMMAND_MEMORY_SPACE);
    assert!(write32(&mut b, a, 0x10, u32::MAX).is_empty());
    assert_eq!(cfg32(&mut b, a, 0x10), 0xffff_f000);
    assert!(!routed(&mut b, base), "refused placement is not routed");
    assert!(write32(&mut b, a, 0x10, base as u32).is_empty());
    assert!(routed(&mut b, base));
    assert!(log.lock().unwrap().moves.is_empty());
}

#[test]
fn move_while_disabled_is_reported_on_enable() {
    let (mut b, a, _) = assigned();
    let old = b.device(a).unwrap().config().bar_address(0).unwrap();
    assert!(write32(&mut b, a, 0x10, 0xd100_0000).is_empty());
    let moves = command(&mut b, a, COMMAND_MEMORY_SPACE);
    assert_eq!(moves.len(), 1);
    assert_eq!((moves[0].old, moves[0].new), (Some(old), 0xd100_0000));
}

#[test]
fn moving_a_64bit_bar_by_its_high_dword() {
    let (mut b, a, _) = assigned();
    command(&mut b, a, COMMAND_MEMORY_SPACE);
    let moves = write32(&mut b, a, 0x1c, 0x11);
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].new, 0x11_0000_0000);
    assert_eq!(moves[0].old, Some(0x10_0000_0000));
    assert!(routed(&mut b, 0x11_000f_fff0));
    // Into the 32-bit window is fine for a 64-bit BAR too.
    write32(&mut b, a, 0x1c, 0);
    let moves = write32(&mut b, a, 0x18, 0xd800_000c);
    assert_eq!(moves.last().map(|m| m.new), Some(0xd800_0000));
}

#[test]
fn overlapping_placements_are_refused() {
    let (mut b, a, _) = assigned();
    let (dev2, log2) = rich_device();
    let a2 = b.add_device(Box::new(dev2)).unwrap();
    b.assign_bars().unwrap();
    command(&mut b, a, COMMAND_MEMORY_SPACE | COMMAND_IO_SPACE);
    command(&mut b, a2, COMMAND_MEMORY_SPACE | COMMAND_IO_SPACE);
    let target = b.routed_bar(a, 0).unwrap();
    let mine = b.routed_bar(a2, 0).unwrap();
    // Onto device 1's BAR 0: refused, device 2's BAR 0 stops routing.
    assert!(write32(&mut b, a2, 0x10, target as u32).is_empty());
    assert!(b.routed_bar(a2, 0).is_none());
    assert!(routed(&mut b, target));
    assert!(!routed(&mut b, mine));
    assert!(log2.lock().unwrap().reads.is_empty());
    // Onto its own BAR 2 (64-bit, moved low first): refused as well.
    let io1 = b.routed_bar(a, 4).unwrap();
    assert!(write32(&mut b, a2, 0x20, io1 as u32).is_empty());
    assert!(b.routed_bar(a2, 4).is_none());
    // Back to a free place: accepted, reported from the last accepted base.
    let moves = write32(&mut b, a2, 0x10, 0xd200_0000);
    assert_eq!((moves[0].old, moves[0].new), (Some(mine), 0xd200_0000));
}

#[test]
fn reserved_and_out_of_window_placements_are_refused() {
    let (mut b, a, _) = assigned();
    command(&mut b, a, COMMAND_MEMORY_SPACE | COMMAND_IO_SPACE);
    assert!(write32(&mut b, a, 0x10, ECAM_BASE as u32).is_empty());
    assert!(!routed(&mut b, ECAM_BASE));
    assert!(
        write32(&mut b, a, 0x10, 0x1000).is_empty(),
        "below the 32-bit window"
    );
    assert!(
        write32(&mut b, a, 0x20, 0xcf1).is_empty(),
        "I/O BAR onto 0xCF8"
    );
    let mut d = [0u8; 1];
    assert!(!b.pio_read(0xcf8, &mut d));
    assert!(
        write32(&mut b, a, 0x20, 0x1_0001).is_empty(),
        "I/O past 64 KiB"
    );
}

#[test]
fn device_refusing_a_move_stays_unrouted() {
    let mut b = bus();
    let mut dev = FakeDevice::new();
    dev.config
        .add_bar(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    dev.refuse_moves = true;
    let a = b.add_device(Box::new(dev)).unwrap();
    let placed = b.assign_bars().unwrap()[0].base;
    command(&mut b, a, COMMAND_MEMORY_SPACE);
    assert!(routed(&mut b, placed));
    assert!(write32(&mut b, a, 0x10, 0xd000_0000).is_empty());
    assert!(!routed(&mut b, 0xd000_0000) && !routed(&mut b, placed));
    assert!(write32(&mut b, a, 0x10, placed as u32).is_empty());
    assert!(routed(&mut b, placed));
}

#[test]
fn unassigned_bar_first_placed_by_guest() {
    let mut b = bus();
    let mut dev = FakeDevice::new();
    dev.config
        .add_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    let a = b.add_device(Box::new(dev)).unwrap();
    write32(&mut b, a, 0x14, 0xc800_0000);
    let moves = command(&mut b, a, COMMAND_MEMORY_SPACE);
    assert_eq!(
        (moves[0].bar, moves[0].old, moves[0].new),
        (1, None, 0xc800_0000)
    );
}

#[test]
fn rom_routes_only_when_enabled() {
    let (mut b, a, log) = assigned();
    let rom = b.device(a).unwrap().config().bar_address(ROM_BAR).unwrap();
    command(&mut b, a, COMMAND_MEMORY_SPACE);
    assert!(!routed(&mut b, rom));
    assert!(write32(&mut b, a, 0x30, rom as u32 | 1).is_empty());
    assert!(routed(&mut b, rom + 0x7ffc));
    assert_eq!(
        log.lock().unwrap().reads.last(),
        Some(&(ROM_BAR, 0x7ffc, 4))
    );
    write32(&mut b, a, 0x30, rom as u32);
    assert!(!routed(&mut b, rom));
}

#[test]
fn msix_table_is_reached_through_the_bar() {
    let (mut b, a, log) = assigned();
    let bar0 = b.device(a).unwrap().config().bar_address(0).unwrap();
    command(&mut b, a, COMMAND_MEMORY_SPACE);
    let mut d = [0u8; 4];
    assert!(b.mmio_read(bar0 + 0x80c, &mut d));
    assert_eq!(d, [1, 0, 0, 0], "vector control of entry 0 resets masked");
    assert!(b.mmio_write(bar0 + 0x808, &0x77u32.to_le_bytes()));
    assert!(b.mmio_read(bar0 + 0x808, &mut d));
    assert_eq!(u32::from_le_bytes(d), 0x77);
    assert!(log.lock().unwrap().writes.is_empty());
}

#[test]
fn slot_management() {
    let mut b = bus();
    assert!(matches!(
        b.add_device_at(0, Box::new(FakeDevice::new())),
        Err(BusError::SlotTaken(0))
    ));
    assert!(matches!(
        b.add_device_at(32, Box::new(FakeDevice::new())),
        Err(BusError::BadSlot(32))
    ));
    for _ in 1..32 {
        b.add_device(Box::new(FakeDevice::new())).unwrap();
    }
    assert!(matches!(
        b.add_device(Box::new(FakeDevice::new())),
        Err(BusError::Full)
    ));
    assert_eq!(b.addresses().len(), 32);
    assert!(b.device_mut(addr(31)).is_some());
    assert!(b.device(PciAddress::new(0, 1, 1).unwrap()).is_none());
}

#[test]
fn assignment_failure_names_the_bar() {
    let mut b = bus();
    let mut dev = FakeDevice::new();
    dev.config
        .add_bar(2, BarKind::Memory64 { prefetchable: true }, 1 << 35)
        .unwrap();
    b.add_device_at(3, Box::new(dev)).unwrap();
    let err = b.assign_bars().unwrap_err();
    let BusError::Alloc(inner) = err else {
        panic!("expected an allocation error, got {err:?}");
    };
    assert_eq!(
        inner.to_string(),
        "BAR 2 of 00:03.0 needs 32 GiB but the 64-bit window has 16 GiB"
    );
}

#[test]
fn refused_bar_gets_routed_once_the_space_frees_up() {
    let (mut b, a, _) = assigned();
    let (dev2, _) = rich_device();
    let a2 = b.add_device(Box::new(dev2)).unwrap();
    b.assign_bars().unwrap();
    command(&mut b, a, COMMAND_MEMORY_SPACE);
    command(&mut b, a2, COMMAND_MEMORY_SPACE);
    let contested = b.routed_bar(a, 0).unwrap();
    assert!(write32(&mut b, a2, 0x10, contested as u32).is_empty());
    assert!(b.routed_bar(a2, 0).is_none());
    // Device 1 stops decoding: device 2's BAR 0 takes the place.
    let moves = command(&mut b, a, 0);
    assert_eq!(moves.len(), 1);
    assert_eq!((moves[0].address, moves[0].new), (a2, contested));
    assert_eq!(b.routed_bar(a2, 0), Some(contested));
    // Now device 1 cannot come back there.
    assert!(command(&mut b, a, COMMAND_MEMORY_SPACE).is_empty());
    assert!(b.routed_bar(a, 0).is_none());
}
