//! BAR declaration, sizing protocol and firmware-style placement.

use super::fakes::header;
use crate::bar::*;
use crate::bar_allocator::*;
use crate::config::{ConfigError, PciConfig, COMMAND, COMMAND_MEMORY_SPACE, ROM_BAR_OFFSET};
use crate::device::PciAddress;

fn config() -> PciConfig {
    PciConfig::new(&header())
}

/// Sizing as a guest does it: save, write all ones, read, restore.
fn size_probe(c: &mut PciConfig, offset: usize) -> u32 {
    let saved = c.read_u32(offset);
    c.write(offset, &u32::MAX.to_le_bytes());
    let probed = c.read_u32(offset);
    c.write(offset, &saved.to_le_bytes());
    assert_eq!(c.read_u32(offset), saved);
    probed
}

#[test]
fn sizing_32bit_memory_bar() {
    let mut c = config();
    c.add_bar(
        0,
        BarKind::Memory32 {
            prefetchable: false,
        },
        0x1000,
    )
    .unwrap();
    c.add_bar(1, BarKind::Memory32 { prefetchable: true }, 0x10_0000)
        .unwrap();
    assert_eq!(size_probe(&mut c, 0x10), 0xffff_f000);
    assert_eq!(size_probe(&mut c, 0x14), 0xfff0_0008);
    // Unused BARs read zero and cannot be written.
    assert_eq!(size_probe(&mut c, 0x18), 0);
}

#[test]
fn sizing_64bit_memory_bar() {
    let mut c = config();
    c.add_bar(2, BarKind::Memory64 { prefetchable: true }, 1 << 34)
        .unwrap();
    assert_eq!(size_probe(&mut c, 0x18), 0x0000_000c);
    assert_eq!(size_probe(&mut c, 0x1c), 0xffff_fffc);
    c.add_bar(
        0,
        BarKind::Memory64 {
            prefetchable: false,
        },
        0x4000,
    )
    .unwrap();
    assert_eq!(size_probe(&mut c, 0x10), 0xffff_c004);
    assert_eq!(size_probe(&mut c, 0x14), 0xffff_ffff);
}

#[test]
fn sizing_io_bar() {
    let mut c = config();
    c.add_bar(5, BarKind::Io, 0x40).unwrap();
    assert_eq!(size_probe(&mut c, 0x24), 0xffff_ffc1);
}

#[test]
fn sizing_and_enabling_rom_bar() {
    let mut c = config();
    c.add_bar(ROM_BAR, BarKind::Rom, 0x8000).unwrap();
    assert_eq!(size_probe(&mut c, ROM_BAR_OFFSET), 0xffff_8001);
    c.write(ROM_BAR_OFFSET, &0xfeb0_0001u32.to_le_bytes());
    assert_eq!(c.bar_address(ROM_BAR), Some(0xfeb0_0000));
    assert!(c.rom_enabled());
    assert!(!c.bar_decoding(ROM_BAR), "memory space is still off");
    c.write(COMMAND, &COMMAND_MEMORY_SPACE.to_le_bytes());
    assert!(c.bar_decoding(ROM_BAR));
    // Programming an address keeps the enable bit as it was.
    c.set_bar_address(ROM_BAR, 0xfea0_0000).unwrap();
    assert_eq!(c.read_u32(ROM_BAR_OFFSET), 0xfea0_0001);
}

#[test]
fn decoding_follows_command_register() {
    let mut c = config();
    c.add_bar(0, BarKind::Io, 0x20).unwrap();
    c.add_bar(
        1,
        BarKind::Memory32 {
            prefetchable: false,
        },
        0x1000,
    )
    .unwrap();
    assert!(!c.bar_decoding(0) && !c.bar_decoding(1));
    c.write(COMMAND, &[1]);
    assert!(c.bar_decoding(0) && !c.bar_decoding(1));
    c.write(COMMAND, &[2]);
    assert!(!c.bar_decoding(0) && c.bar_decoding(1));
    assert!(!c.bar_decoding(4), "undeclared BAR never decodes");
}

#[test]
fn bar_addresses_decode_and_program() {
    let mut c = config();
    c.add_bar(
        0,
        BarKind::Memory64 {
            prefetchable: false,
        },
        0x1_0000,
    )
    .unwrap();
    c.add_bar(2, BarKind::Io, 0x100).unwrap();
    c.set_bar_address(0, 0x12_3456_0000).unwrap();
    assert_eq!(c.read_u32(0x10), 0x3456_0004);
    assert_eq!(c.read_u32(0x14), 0x12);
    assert_eq!(c.bar_address(0), Some(0x12_3456_0000));
    c.set_bar_address(2, 0xc100).unwrap();
    assert_eq!(c.read_u32(0x18), 0xc101);
    assert_eq!(c.bar_address(2), Some(0xc100));
    assert!(matches!(
        c.set_bar_address(2, 0xc180),
        Err(ConfigError::BadBarBase { .. })
    ));
    assert!(matches!(
        c.set_bar_address(2, 1 << 32),
        Err(ConfigError::BadBarBase { .. })
    ));
    assert!(matches!(
        c.set_bar_address(3, 0),
        Err(ConfigError::NoSuchBar(3))
    ));
    assert_eq!(c.bar_address(1), None);
}

#[test]
fn invalid_bar_definitions_are_refused() {
    let mut c = config();
    let mem = BarKind::Memory32 {
        prefetchable: false,
    };
    let bad = |r: Result<(), ConfigError>| match r {
        Err(ConfigError::InvalidBar { source, .. }) => source,
        other => panic!("expected InvalidBar, got {other:?}"),
    };
    assert_eq!(
        bad(c.add_bar(0, mem, 0x3000)),
        BarError::SizeNotPowerOfTwo(0x3000)
    );
    assert!(matches!(
        bad(c.add_bar(0, mem, 8)),
        BarError::SizeOutOfRange { .. }
    ));
    assert!(matches!(
        bad(c.add_bar(0, BarKind::Io, 0x200)),
        BarError::SizeOutOfRange { .. }
    ));
    assert!(matches!(
        bad(c.add_bar(6, mem, 0x1000)),
        BarError::InvalidIndex { .. }
    ));
    assert!(matches!(
        bad(c.add_bar(
            5,
            BarKind::Memory64 {
                prefetchable: false
            },
            0x1000
        )),
        BarError::InvalidIndex { .. }
    ));
    assert!(matches!(
        bad(c.add_bar(0, BarKind::Rom, 0x1000)),
        BarError::InvalidIndex { .. }
    ));
    c.add_bar(
        0,
        BarKind::Memory64 {
            prefetchable: false,
        },
        0x1000,
    )
    .unwrap();
    assert_eq!(bad(c.add_bar(1, mem, 0x1000)), BarError::SlotInUse(1));
    assert_eq!(bad(c.add_bar(0, mem, 0x1000)), BarError::SlotInUse(0));
    c.add_bar(2, mem, 0x1000).unwrap();
    assert_eq!(
        bad(c.add_bar(
            1,
            BarKind::Memory64 {
                prefetchable: false
            },
            0x1000
        )),
        BarError::SlotInUse(1)
    );
    assert_eq!(c.bars().count(), 2);
}

fn windows() -> PciWindows {
    PciWindows {
        mmio32: Some(Window {
            base: 0xc000_0000,
            size: 0x1000_0000,
        }),
        mmio64: Some(Window {
            base: 1 << 36,
            size: 8 << 30,
        }),
        io: Some(Window {
            base: 0xc000,
            size: 0x1000,
        }),
    }
}

fn addr(dev: u8) -> PciAddress {
    PciAddress::new(0, dev, 0).unwrap()
}

#[test]
fn allocator_places_naturally_aligned_in_the_right_window() {
    let mut a = BarAllocator::new(windows()).unwrap();
    let mem = |size| {
        BarDef::new(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            size,
        )
        .unwrap()
    };
    let b1 = a.allocate(addr(1), 0, mem(0x1000)).unwrap();
    let b2 = a.allocate(addr(1), 1, mem(0x10_0000)).unwrap();
    assert_eq!(b1, 0xc000_0000);
    assert_eq!(b2 % 0x10_0000, 0);
    assert!(b2 >= 0xc010_0000);
    let wide = BarDef::new(0, BarKind::Memory64 { prefetchable: true }, 1 << 30).unwrap();
    let b3 = a.allocate(addr(2), 0, wide).unwrap();
    assert_eq!(b3, 1 << 36);
    let io = BarDef::new(0, BarKind::Io, 0x100).unwrap();
    assert_eq!(a.allocate(addr(2), 2, io).unwrap(), 0xc000);
    let rom = BarDef::new(ROM_BAR, BarKind::Rom, 0x8000).unwrap();
    assert_eq!(a.allocate(addr(2), ROM_BAR, rom).unwrap() % 0x8000, 0);
}

#[test]
fn allocator_explains_what_does_not_fit() {
    let mut a = BarAllocator::new(windows()).unwrap();
    let huge = BarDef::new(2, BarKind::Memory64 { prefetchable: true }, 16 << 30).unwrap();
    let err = a.allocate(addr(3), 2, huge).unwrap_err();
    assert_eq!(
        err.to_string(),
        "BAR 2 of 00:03.0 needs 16 GiB but the 64-bit window has 8 GiB"
    );
    let half = BarDef::new(0, BarKind::Memory64 { prefetchable: true }, 4 << 30).unwrap();
    a.allocate(addr(3), 0, half).unwrap();
    a.allocate(addr(3), 2, half).unwrap();
    let err = a.allocate(addr(4), 0, half).unwrap_err();
    assert!(matches!(err, BarAllocError::WindowFull { .. }));
    assert_eq!(
        err.to_string(),
        "BAR 0 of 00:04.0 needs 4 GiB but the 64-bit window has no aligned free range that large left"
    );
    let mut none = BarAllocator::new(PciWindows::default()).unwrap();
    let io = BarDef::new(0, BarKind::Io, 0x10).unwrap();
    assert_eq!(
        none.allocate(addr(5), 0, io).unwrap_err().to_string(),
        "BAR 0 of 00:05.0 is an I/O BAR but there is no I/O window"
    );
}

#[test]
fn allocator_without_64bit_window_uses_32bit_window() {
    let mut w = windows();
    w.mmio64 = None;
    let mut a = BarAllocator::new(w).unwrap();
    let wide = BarDef::new(
        0,
        BarKind::Memory64 {
            prefetchable: false,
        },
        0x4000,
    )
    .unwrap();
    assert_eq!(a.allocate(addr(1), 0, wide).unwrap(), 0xc000_0000);
}

#[test]
fn invalid_window_is_refused() {
    let w = PciWindows {
        io: Some(Window { base: 0, size: 0 }),
        ..PciWindows::default()
    };
    assert!(matches!(
        BarAllocator::new(w),
        Err(BarAllocError::InvalidWindow {
            kind: WindowKind::Io,
            ..
        })
    ));
}

#[test]
fn windows_accept_only_suitable_ranges() {
    let w = windows();
    let m32 = BarKind::Memory32 {
        prefetchable: false,
    };
    let m64 = BarKind::Memory64 {
        prefetchable: false,
    };
    assert!(w.accepts(m32, 0xc000_0000, 0x1000));
    assert!(!w.accepts(m32, 1 << 36, 0x1000));
    assert!(w.accepts(m64, 1 << 36, 0x1000));
    assert!(w.accepts(m64, 0xc000_0000, 0x1000));
    assert!(
        !w.accepts(m32, 0xcfff_f000, 0x2000),
        "straddles the window end"
    );
    assert!(!w.accepts(m64, u64::MAX - 0xfff, 0x1000));
    assert!(w.accepts(BarKind::Io, 0xc000, 0x100));
    assert!(!w.accepts(BarKind::Io, 0xc000_0000, 0x100));
}
