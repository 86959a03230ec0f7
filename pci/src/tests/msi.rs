//! MSI capability layout and vector state machine.

use super::fakes::{fake_vectors, header, take, VectorCall};
use crate::capability::{CapabilityPlace, CAP_ID_MSI};
use crate::config::PciConfig;
use crate::interrupt::{Delivery, MsiMessage};
use crate::msi::{Msi, MsiCapability, MsiError};

/// A config with an MSI capability of `vectors` messages at 0x40.
fn setup(vectors: usize, is_64bit: bool, mask: bool) -> (PciConfig, Msi, super::fakes::CallLog) {
    let mut config = PciConfig::new(&header());
    let cap = MsiCapability::new(vectors, is_64bit, mask).unwrap();
    let (v, log) = fake_vectors(vectors);
    let msi = Msi::add(&mut config, CapabilityPlace::Append, cap, v).unwrap();
    (config, msi, log)
}

/// A guest config write followed by the device's hook.
fn write(config: &mut PciConfig, msi: &mut Msi, offset: usize, data: &[u8]) {
    config.write(offset, data);
    msi.config_written(config, offset, data.len()).unwrap();
}

#[test]
fn capability_layout_32bit() {
    let (config, msi, _) = setup(1, false, false);
    assert_eq!(msi.offset(), 0x40);
    assert_eq!(config.find_capability(CAP_ID_MSI), Some(0x40));
    assert_eq!(config.read_u16(0x42), 0);
    assert_eq!(MsiCapability::new(1, false, false).unwrap().size(), 12);
}

#[test]
fn capability_layout_64bit_masked() {
    let (mut config, _msi, _) = setup(8, true, true);
    // MMC = 3, 64-bit, per-vector masking.
    assert_eq!(config.read_u16(0x42), (3 << 1) | (1 << 7) | (1 << 8));
    assert_eq!(MsiCapability::new(8, true, true).unwrap().size(), 24);
    // Read-only bits of message control stay; enable and MME are writable.
    config.write(0x42, &0xffffu16.to_le_bytes());
    assert_eq!(config.read_u16(0x42), (3 << 1) | (1 << 7) | (1 << 8) | 0x71);
    // Address low bits 1:0 are reserved.
    config.write(0x44, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(config.read_u32(0x44), 0xffff_fffc);
    // Only the upper 16 bits of the data dword are read-only.
    config.write(0x4c, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(config.read_u32(0x4c), 0xffff);
    // Mask bits exist only for 8 vectors; pending is read-only.
    config.write(0x50, &u32::MAX.to_le_bytes());
    assert_eq!(config.read_u32(0x50), 0xff);
    config.write(0x54, &u32::MAX.to_le_bytes());
    assert_eq!(config.read_u32(0x54), 0);
}

#[test]
fn bad_vector_counts() {
    assert!(matches!(
        MsiCapability::new(3, false, false),
        Err(MsiError::BadVectorCount(3))
    ));
    assert!(matches!(
        MsiCapability::new(64, false, false),
        Err(MsiError::BadVectorCount(64))
    ));
    assert!(matches!(
        MsiCapability::new(0, false, false),
        Err(MsiError::BadVectorCount(0))
    ));
    let mut config = PciConfig::new(&header());
    let (v, _) = fake_vectors(2);
    let cap = MsiCapability::new(4, false, false).unwrap();
    assert!(matches!(
        Msi::add(&mut config, CapabilityPlace::Append, cap, v),
        Err(MsiError::VectorCountMismatch {
            expected: 4,
            given: 2
        })
    ));
}

#[test]
fn enable_routes_and_unmasks() {
    let (mut config, mut msi, log) = setup(1, true, false);
    assert_eq!(msi.trigger(&mut config, 0).unwrap(), Delivery::Dropped);
    write(&mut config, &mut msi, 0x44, &0xfee0_1000u32.to_le_bytes());
    write(&mut config, &mut msi, 0x48, &0x1u32.to_le_bytes());
    write(&mut config, &mut msi, 0x4c, &0x4041u16.to_le_bytes());
    assert!(take(&log).is_empty(), "nothing happens while disabled");
    write(&mut config, &mut msi, 0x42, &1u16.to_le_bytes());
    assert!(msi.enabled());
    let msg = MsiMessage {
        address: 0x1_fee0_1000,
        data: 0x4041,
    };
    assert_eq!(
        take(&log),
        vec![(0, VectorCall::Route(msg)), (0, VectorCall::Unmask)]
    );
    assert_eq!(msi.trigger(&mut config, 0).unwrap(), Delivery::Sent);
    assert_eq!(take(&log), vec![(0, VectorCall::Trigger)]);
    // Changing the data re-routes.
    write(&mut config, &mut msi, 0x4c, &0x4042u16.to_le_bytes());
    let msg2 = MsiMessage {
        data: 0x4042,
        ..msg
    };
    assert_eq!(take(&log), vec![(0, VectorCall::Route(msg2))]);
    // Disabling masks.
    write(&mut config, &mut msi, 0x42, &0u16.to_le_bytes());
    assert_eq!(take(&log), vec![(0, VectorCall::Mask)]);
    assert_eq!(msi.trigger(&mut config, 0).unwrap(), Delivery::Dropped);
    assert!(matches!(
        msi.trigger(&mut config, 1),
        Err(MsiError::NoSuchVector(1))
    ));
}

#[test]
fn multiple_messages_use_low_data_bits() {
    let (mut config, mut msi, log) = setup(4, false, false);
    write(&mut config, &mut msi, 0x44, &0xfee0_0000u32.to_le_bytes());
    write(&mut config, &mut msi, 0x48, &0x0023u16.to_le_bytes());
    // Enable with MME = 2 (4 vectors).
    write(
        &mut config,
        &mut msi,
        0x42,
        &((2u16 << 4) | 1).to_le_bytes(),
    );
    let calls = take(&log);
    for i in 0..4usize {
        let msg = MsiMessage {
            address: 0xfee0_0000,
            data: 0x20 | i as u32,
        };
        assert!(
            calls.contains(&(i, VectorCall::Route(msg))),
            "vector {i}: {calls:?}"
        );
    }
    // MME = 1: only two vectors stay enabled.
    write(
        &mut config,
        &mut msi,
        0x42,
        &((1u16 << 4) | 1).to_le_bytes(),
    );
    let calls = take(&log);
    assert!(calls.contains(&(2, VectorCall::Mask)));
    assert!(calls.contains(&(3, VectorCall::Mask)));
    assert_eq!(msi.trigger(&mut config, 3).unwrap(), Delivery::Dropped);
    assert_eq!(msi.trigger(&mut config, 1).unwrap(), Delivery::Sent);
}

#[test]
fn mme_beyond_capability_is_clamped() {
    let (mut config, mut msi, log) = setup(2, false, false);
    write(
        &mut config,
        &mut msi,
        0x42,
        &((5u16 << 4) | 1).to_le_bytes(),
    );
    let unmasked = take(&log)
        .into_iter()
        .filter(|(_, c)| *c == VectorCall::Unmask)
        .count();
    assert_eq!(unmasked, 2);
}

#[test]
fn per_vector_mask_latches_pending() {
    let (mut config, mut msi, log) = setup(2, true, true);
    write(&mut config, &mut msi, 0x44, &0xfee0_0000u32.to_le_bytes());
    write(
        &mut config,
        &mut msi,
        0x42,
        &((1u16 << 4) | 1).to_le_bytes(),
    );
    take(&log);
    // Mask vector 1.
    write(&mut config, &mut msi, 0x50, &2u32.to_le_bytes());
    assert_eq!(take(&log), vec![(1, VectorCall::Mask)]);
    assert_eq!(msi.trigger(&mut config, 1).unwrap(), Delivery::Pending);
    assert_eq!(config.read_u32(0x54), 2);
    assert!(take(&log).is_empty());
    // The guest cannot clear pending bits itself.
    write(&mut config, &mut msi, 0x54, &0u32.to_le_bytes());
    assert_eq!(config.read_u32(0x54), 2);
    // Unmask: fires and clears.
    write(&mut config, &mut msi, 0x50, &0u32.to_le_bytes());
    assert_eq!(
        take(&log),
        vec![(1, VectorCall::Unmask), (1, VectorCall::Trigger)]
    );
    assert_eq!(config.read_u32(0x54), 0);
}

#[test]
fn writes_elsewhere_do_not_touch_vectors() {
    let (mut config, mut msi, log) = setup(1, false, false);
    write(&mut config, &mut msi, 0x42, &1u16.to_le_bytes());
    take(&log);
    write(&mut config, &mut msi, 0x04, &[0x06]);
    write(&mut config, &mut msi, 0x3c, &[0x0a]);
    assert!(take(&log).is_empty());
}
