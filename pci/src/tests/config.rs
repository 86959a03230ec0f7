//! Config space: header fields, write masks, RW1C, capability chains.

use super::fakes::header;
use crate::capability::{CapabilityError, RawCapability, CAP_ID_VENDOR_SPECIFIC};
use crate::config::*;

fn config() -> PciConfig {
    PciConfig::new(&header())
}

#[test]
fn header_fields_are_laid_out() {
    let c = config();
    assert_eq!(c.read_u16(VENDOR_ID), 0x1af4);
    assert_eq!(c.read_u16(DEVICE_ID), 0x1041);
    assert_eq!(c.read_u8(REVISION_ID), 1);
    assert_eq!(c.read_u32(0x08) >> 8, 0x02_00_00);
    assert_eq!(c.read_u16(SUBSYSTEM_VENDOR_ID), 0x1af4);
    assert_eq!(c.read_u16(SUBSYSTEM_ID), 1);
    assert_eq!(c.read_u8(INTERRUPT_PIN), 1);
    assert_eq!(c.read_u8(HEADER_TYPE), 0);
}

#[test]
fn identity_registers_are_read_only() {
    let mut c = config();
    c.write(0, &[0xff; 4]);
    c.write(0x08, &[0xff; 4]);
    c.write(0x2c, &[0xff; 4]);
    c.write(INTERRUPT_PIN, &[0xff]);
    assert_eq!(c.read_u32(0), 0x1041_1af4);
    assert_eq!(c.read_u32(0x08), 0x0200_0001);
    assert_eq!(c.read_u32(0x2c), 0x0001_1af4);
    assert_eq!(c.read_u8(INTERRUPT_PIN), 1);
}

#[test]
fn command_register_keeps_only_defined_bits() {
    let mut c = config();
    c.write(COMMAND, &0xffffu16.to_le_bytes());
    assert_eq!(c.command(), COMMAND_WRITABLE);
    c.write(COMMAND, &[0]);
    assert_eq!(c.command(), COMMAND_WRITABLE & 0xff00);
    assert!(c.intx_disabled());
    assert!(!c.bus_master());
}

#[test]
fn status_error_bits_are_write_one_to_clear() {
    let mut c = config();
    c.write_internal(STATUS, &(STATUS_RW1C | STATUS_INTERRUPT).to_le_bytes());
    // Writing zero clears nothing.
    c.write(STATUS, &[0, 0]);
    assert_eq!(c.status(), STATUS_RW1C | STATUS_INTERRUPT);
    // Writing one to one error bit clears just that one; read-only bits stay.
    c.write(STATUS, &(1u16 << 13 | STATUS_INTERRUPT).to_le_bytes());
    assert_eq!(c.status(), (STATUS_RW1C & !(1 << 13)) | STATUS_INTERRUPT);
    c.write(STATUS, &0xffffu16.to_le_bytes());
    assert_eq!(c.status(), STATUS_INTERRUPT);
}

#[test]
fn dword_write_to_command_does_not_clear_status_unasked() {
    let mut c = config();
    c.write_internal(STATUS, &(1u16 << 15).to_le_bytes());
    // Typical read-modify-write of the command dword with status bits zero.
    c.write(COMMAND, &u32::from(COMMAND_MEMORY_SPACE).to_le_bytes());
    assert_eq!(c.command(), COMMAND_MEMORY_SPACE);
    assert_eq!(c.status(), 1 << 15);
}

#[test]
fn interrupt_line_and_cache_line_are_writable() {
    let mut c = config();
    c.write(INTERRUPT_LINE, &[11]);
    c.write(CACHE_LINE_SIZE, &[0x10, 0x40]);
    assert_eq!(c.read_u8(INTERRUPT_LINE), 11);
    assert_eq!(c.read_u16(CACHE_LINE_SIZE), 0x4010);
    c.set_interrupt_line(5);
    assert_eq!(c.read_u8(INTERRUPT_LINE), 5);
}

#[test]
fn interrupt_status_bit_is_device_controlled() {
    let mut c = config();
    c.set_interrupt_status(true);
    assert_ne!(c.status() & STATUS_INTERRUPT, 0);
    c.write(STATUS, &STATUS_INTERRUPT.to_le_bytes());
    assert_ne!(c.status() & STATUS_INTERRUPT, 0, "guest cannot clear it");
    c.set_interrupt_status(false);
    assert_eq!(c.status() & STATUS_INTERRUPT, 0);
}

#[test]
fn accesses_past_conventional_space_are_harmless() {
    let mut c = config();
    let mut data = [0xaau8; 8];
    c.read(0xfc, &mut data);
    assert_eq!(&data[4..], &[0, 0, 0, 0]);
    c.read(usize::MAX - 1, &mut data);
    assert_eq!(data, [0; 8]);
    c.write(0xfe, &[1, 2, 3, 4]);
    c.write(usize::MAX, &[1, 2]);
    c.write(0x1000, &[1]);
    assert_eq!(c.read_u32(0x100), 0);
}

#[test]
fn empty_capability_list() {
    let c = config();
    assert_eq!(c.status() & STATUS_CAPABILITIES_LIST, 0);
    assert_eq!(c.read_u8(CAPABILITIES_POINTER), 0);
    assert!(c.capabilities().is_empty());
}

#[test]
fn capabilities_chain_in_order() {
    let mut c = config();
    let a = RawCapability {
        id: CAP_ID_VENDOR_SPECIFIC,
        body: vec![14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
        write_mask: vec![0, 0, 0xff],
    };
    let b = RawCapability {
        id: 0x01,
        body: vec![0x03, 0x00, 0x00, 0x00, 0x00, 0x00],
        write_mask: vec![],
    };
    let first = c.add_capability(&a).unwrap();
    let second = c.add_capability(&b).unwrap();
    assert_eq!(first, 0x40);
    assert_eq!(
        second, 0x50,
        "next capability starts dword aligned after 16 bytes"
    );
    assert_ne!(c.status() & STATUS_CAPABILITIES_LIST, 0);
    assert_eq!(c.read_u8(CAPABILITIES_POINTER), 0x40);
    assert_eq!(c.read_u8(0x41), 0x50);
    assert_eq!(c.read_u8(0x51), 0);
    assert_eq!(
        c.capabilities(),
        vec![(0x40, CAP_ID_VENDOR_SPECIFIC), (0x50, 0x01)]
    );
    assert_eq!(c.find_capability(0x01), Some(0x50));
    assert_eq!(c.find_capability(0x05), None);

    // Capability contents obey their mask; header bytes are read-only.
    c.write(0x40, &[0xff; 8]);
    assert_eq!(c.read_u8(0x40), CAP_ID_VENDOR_SPECIFIC);
    assert_eq!(c.read_u8(0x41), 0x50);
    assert_eq!(c.read_u8(0x42), 14);
    assert_eq!(c.read_u8(0x44), 0xff);
    assert_eq!(c.read_u8(0x45), 3);
}

#[test]
fn capability_space_runs_out_cleanly() {
    let mut c = config();
    let big = RawCapability {
        id: CAP_ID_VENDOR_SPECIFIC,
        body: vec![0; 100],
        write_mask: vec![],
    };
    assert!(c.add_capability(&big).is_ok());
    assert_eq!(
        c.add_capability(&big),
        Err(CapabilityError::NoSpace {
            needed: 102,
            available: 256 - 0xa8
        })
    );
    let bad = RawCapability {
        id: 9,
        body: vec![0],
        write_mask: vec![0, 0],
    };
    assert_eq!(
        c.add_capability(&bad),
        Err(CapabilityError::MaskTooLong { mask: 2, body: 1 })
    );
    assert_eq!(c.capabilities().len(), 1);
}

#[test]
fn corrupt_chain_walk_terminates() {
    let mut c = config();
    let cap = RawCapability {
        id: 9,
        body: vec![0, 0],
        write_mask: vec![],
    };
    c.add_capability(&cap).unwrap();
    // Point the capability at itself.
    c.write_internal(0x41, &[0x40]);
    assert_eq!(c.capabilities().len(), (256 - 0x40) / 4);
}
