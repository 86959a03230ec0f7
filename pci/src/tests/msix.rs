//! MSI-X capability layout, table/PBA semantics and the mask state machine.

use super::fakes::{fake_vectors, header, take, CallLog, VectorCall};
use crate::bar::BarKind;
use crate::capability::{CapabilityPlace, CAP_ID_MSIX};
use crate::config::PciConfig;
use crate::interrupt::{Delivery, MsiMessage};
use crate::msix::{Msix, MsixCapability, MsixError};

/// Config with a 0x4000-byte BAR 1 holding a table at 0 and PBA at 0x2000.
fn setup(vectors: usize) -> (PciConfig, Msix, CallLog) {
    let mut config = PciConfig::new(&header());
    config
        .add_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x4000,
        )
        .unwrap();
    let cap = MsixCapability::new(vectors, 1, 0, 1, 0x2000).unwrap();
    let (v, log) = fake_vectors(vectors);
    let msix = Msix::add(&mut config, CapabilityPlace::Append, cap, v).unwrap();
    (config, msix, log)
}

/// Guest write of message control.
fn control(config: &mut PciConfig, msix: &mut Msix, value: u16) {
    let offset = msix.offset() + 2;
    config.write(offset, &value.to_le_bytes());
    msix.config_written(config, offset, 2).unwrap();
}

const ENABLE: u16 = 1 << 15;
const FUNCTION_MASK: u16 = 1 << 14;

/// Programs entry `i` with 4-byte writes, leaving it unmasked.
fn program(msix: &mut Msix, i: u64, address: u64, data: u32) {
    let base = i * 16;
    msix.table_write(base, &(address as u32).to_le_bytes())
        .unwrap();
    msix.table_write(base + 4, &((address >> 32) as u32).to_le_bytes())
        .unwrap();
    msix.table_write(base + 8, &data.to_le_bytes()).unwrap();
    msix.table_write(base + 12, &0u32.to_le_bytes()).unwrap();
}

#[test]
fn capability_layout() {
    let (mut config, msix, _) = setup(3);
    assert_eq!(config.find_capability(CAP_ID_MSIX), Some(msix.offset()));
    let o = msix.offset();
    assert_eq!(config.read_u16(o + 2), 2, "table size is N-1");
    assert_eq!(config.read_u32(o + 4), 1, "table offset 0 in BAR 1");
    assert_eq!(config.read_u32(o + 8), 0x2001, "PBA at 0x2000 in BAR 1");
    config.write(o + 2, &0xffffu16.to_le_bytes());
    assert_eq!(
        config.read_u16(o + 2),
        0xc002,
        "only enable and function mask are writable"
    );
    config.write(o + 4, &[0xff; 8]);
    assert_eq!(config.read_u32(o + 4), 1);
    assert_eq!(config.read_u32(o + 8), 0x2001);
}

#[test]
fn capability_validation() {
    assert!(matches!(
        MsixCapability::new(0, 0, 0, 0, 0x800),
        Err(MsixError::BadVectorCount(0))
    ));
    assert!(matches!(
        MsixCapability::new(2049, 0, 0, 0, 0x8000),
        Err(MsixError::BadVectorCount(_))
    ));
    assert!(matches!(
        MsixCapability::new(1, 6, 0, 0, 0x800),
        Err(MsixError::BadBar(6))
    ));
    assert!(matches!(
        MsixCapability::new(1, 0, 4, 0, 0x800),
        Err(MsixError::BadOffset(4))
    ));
    assert!(matches!(
        MsixCapability::new(4, 0, 0, 0, 0x30),
        Err(MsixError::Overlap(0))
    ));
    assert!(MsixCapability::new(4, 0, 0, 0, 0x40).is_ok());
    assert!(MsixCapability::new(4, 0, 0, 2, 0).is_ok());
    // The BAR must exist, be memory and be large enough.
    let mut config = PciConfig::new(&header());
    config.add_bar(0, BarKind::Io, 0x100).unwrap();
    config
        .add_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    let (v, _) = fake_vectors(1);
    let cap = MsixCapability::new(1, 0, 0, 1, 0).unwrap();
    assert!(matches!(
        Msix::add(&mut config, CapabilityPlace::Append, cap, v),
        Err(MsixError::DoesNotFitBar { bar: 0, .. })
    ));
    let (v, _) = fake_vectors(1);
    let cap = MsixCapability::new(1, 1, 0x1000, 1, 0).unwrap();
    assert!(matches!(
        Msix::add(&mut config, CapabilityPlace::Append, cap, v),
        Err(MsixError::DoesNotFitBar { bar: 1, .. })
    ));
    let (v, _) = fake_vectors(2);
    let cap = MsixCapability::new(1, 1, 0, 1, 0x800).unwrap();
    assert!(matches!(
        Msix::add(&mut config, CapabilityPlace::Append, cap, v),
        Err(MsixError::VectorCountMismatch {
            expected: 1,
            given: 2
        })
    ));
    assert!(config.capabilities().is_empty());
}

#[test]
fn table_resets_masked_and_reads_back() {
    let (_, mut msix, log) = setup(2);
    let mut entry = [0u8; 16];
    msix.table_read(16, &mut entry);
    assert_eq!(entry, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    program(&mut msix, 1, 0x1_fee0_0000, 0x31);
    assert!(take(&log).is_empty(), "MSI-X disabled: nothing is routed");
    let mut qword = [0u8; 8];
    msix.table_read(16, &mut qword);
    assert_eq!(u64::from_le_bytes(qword), 0x1_fee0_0000);
    let mut dword = [0u8; 4];
    msix.table_read(28, &mut dword);
    assert_eq!(dword, [0; 4]);
    // Reserved vector control bits stay zero.
    msix.table_write(28, &0xffff_fffeu32.to_le_bytes()).unwrap();
    msix.table_read(28, &mut dword);
    assert_eq!(u32::from_le_bytes(dword), 0);
    // Past the table: zeros, writes dropped.
    msix.table_read(32, &mut dword);
    assert_eq!(dword, [0; 4]);
    msix.table_write(30, &[0xff; 8]).unwrap();
    msix.table_read(u64::MAX - 1, &mut dword);
    assert_eq!(dword, [0; 4]);
    msix.table_write(u64::MAX - 1, &[0xff; 4]).unwrap();
}

#[test]
fn enable_routes_unmasked_entries_only() {
    let (mut config, mut msix, log) = setup(2);
    program(&mut msix, 0, 0xfee0_0000, 0x41);
    control(&mut config, &mut msix, ENABLE);
    assert!(msix.enabled());
    let msg = MsiMessage {
        address: 0xfee0_0000,
        data: 0x41,
    };
    assert_eq!(
        take(&log),
        vec![(0, VectorCall::Route(msg)), (0, VectorCall::Unmask)]
    );
    assert_eq!(msix.trigger(0).unwrap(), Delivery::Sent);
    assert_eq!(
        msix.trigger(1).unwrap(),
        Delivery::Pending,
        "entry 1 is still masked"
    );
    assert_eq!(take(&log), vec![(0, VectorCall::Trigger)]);
    assert!(msix.pending(1));
    assert!(matches!(msix.trigger(2), Err(MsixError::NoSuchVector(2))));
}

#[test]
fn vector_mask_latches_pending_and_unmask_fires() {
    let (mut config, mut msix, log) = setup(2);
    program(&mut msix, 0, 0xfee0_0000, 0x41);
    control(&mut config, &mut msix, ENABLE);
    take(&log);
    // Mask entry 0 with a byte write to vector control.
    msix.table_write(12, &[1]).unwrap();
    assert_eq!(take(&log), vec![(0, VectorCall::Mask)]);
    assert_eq!(msix.trigger(0).unwrap(), Delivery::Pending);
    let mut pba = [0u8; 8];
    msix.pba_read(0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1);
    // Writes to the PBA are ignored.
    assert!(msix.bar_write(1, 0x2000, &[0; 8]).unwrap());
    assert!(msix.pending(0));
    // Unmask fires the pending vector and clears the bit.
    msix.table_write(12, &[0]).unwrap();
    assert_eq!(
        take(&log),
        vec![(0, VectorCall::Unmask), (0, VectorCall::Trigger)]
    );
    assert!(!msix.pending(0));
}

#[test]
fn function_mask_masks_all_and_unmask_fires_pending() {
    let (mut config, mut msix, log) = setup(3);
    program(&mut msix, 0, 0xfee0_0000, 0x41);
    program(&mut msix, 2, 0xfee0_1000, 0x42);
    control(&mut config, &mut msix, ENABLE);
    take(&log);
    control(&mut config, &mut msix, ENABLE | FUNCTION_MASK);
    assert!(msix.function_masked());
    assert_eq!(
        take(&log),
        vec![(0, VectorCall::Mask), (2, VectorCall::Mask)]
    );
    assert_eq!(msix.trigger(2).unwrap(), Delivery::Pending);
    assert!(take(&log).is_empty());
    let mut pba = [0u8; 1];
    assert!(msix.bar_read(1, 0x2000, &mut pba));
    assert_eq!(pba[0], 0b100);
    control(&mut config, &mut msix, ENABLE);
    assert_eq!(
        take(&log),
        vec![
            (0, VectorCall::Unmask),
            (2, VectorCall::Unmask),
            (2, VectorCall::Trigger)
        ]
    );
    assert!(!msix.pending(2));
}

#[test]
fn disable_masks_and_drops() {
    let (mut config, mut msix, log) = setup(1);
    program(&mut msix, 0, 0xfee0_0000, 0x41);
    control(&mut config, &mut msix, ENABLE);
    take(&log);
    control(&mut config, &mut msix, 0);
    assert_eq!(take(&log), vec![(0, VectorCall::Mask)]);
    assert_eq!(msix.trigger(0).unwrap(), Delivery::Dropped);
    assert!(!msix.pending(0));
}

#[test]
fn entry_update_while_unmasked_reroutes() {
    let (mut config, mut msix, log) = setup(1);
    program(&mut msix, 0, 0xfee0_0000, 0x41);
    control(&mut config, &mut msix, ENABLE);
    take(&log);
    // A single 8-byte write covering data and vector control.
    let mut qword = [0u8; 8];
    qword[..4].copy_from_slice(&0x55u32.to_le_bytes());
    msix.table_write(8, &qword).unwrap();
    let msg = MsiMessage {
        address: 0xfee0_0000,
        data: 0x55,
    };
    assert_eq!(take(&log), vec![(0, VectorCall::Route(msg))]);
    // An unaligned 2-byte write straddling address low and high.
    msix.table_write(3, &[0xfe, 0x01]).unwrap();
    let msg = MsiMessage {
        address: 0x1_fee0_0000,
        data: 0x55,
    };
    assert_eq!(take(&log), vec![(0, VectorCall::Route(msg))]);
    assert_eq!(msix.entry(0).map(|e| e.message()), Some(msg));
}

#[test]
fn bar_dispatch_only_claims_table_and_pba() {
    let (_, mut msix, _) = setup(1);
    let mut data = [0xaau8; 4];
    assert!(!msix.bar_read(0, 0, &mut data));
    assert!(!msix.bar_read(1, 0x1000, &mut data));
    assert_eq!(data, [0xaa; 4]);
    assert!(msix.bar_read(1, 0x2004, &mut data));
    assert_eq!(data, [0; 4]);
    assert!(!msix.bar_write(1, 0x3000, &data).unwrap());
    assert!(msix.bar_write(1, 0, &data).unwrap());
    assert!(msix.capability().table_range().contains(&0xf));
    assert_eq!(msix.capability().pba_range(), 0x2000..0x2008);
}

#[test]
fn large_table_pba_spans_qwords() {
    let (mut config, mut msix, _) = setup(70);
    control(&mut config, &mut msix, ENABLE);
    assert_eq!(msix.trigger(69).unwrap(), Delivery::Pending);
    let mut pba = [0u8; 16];
    msix.pba_read(0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba[8..].try_into().unwrap()), 1 << 5);
}
