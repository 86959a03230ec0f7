//! ECAM addressing and access splitting.

use super::bus_setup::{bus, cfg32, rich_device};
use crate::config::COMMAND;

fn offset(dev: u64, func: u64, reg: u64) -> u64 {
    dev << 15 | func << 12 | reg
}

#[test]
fn ecam_addresses_functions() {
    let mut b = bus();
    let (dev, _) = rich_device();
    b.add_device_at(3, Box::new(dev)).unwrap();
    let mut d = [0u8; 4];
    b.ecam_read(offset(0, 0, 0), &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x0d57_8086);
    b.ecam_read(offset(3, 0, 0), &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x1041_1af4);
    b.ecam_read(offset(3, 1, 0), &mut d);
    assert_eq!(d, [0xff; 4], "function 1 is absent");
    b.ecam_read(offset(4, 0, 0), &mut d);
    assert_eq!(d, [0xff; 4], "slot 4 is empty");
    b.ecam_read(1 << 20, &mut d);
    assert_eq!(d, [0xff; 4], "bus 1 is absent");
    b.ecam_read(1 << 28, &mut d);
    assert_eq!(d, [0xff; 4], "past 256 buses");
}

#[test]
fn extended_space_reads_zero() {
    let mut b = bus();
    let mut d = [0xaau8; 4];
    b.ecam_read(offset(0, 0, 0x100), &mut d);
    assert_eq!(d, [0; 4]);
    b.ecam_read(offset(0, 0, 0xffc), &mut d);
    assert_eq!(d, [0; 4]);
}

#[test]
fn ecam_writes_reach_config() {
    let mut b = bus();
    let (dev, _) = rich_device();
    let a = b.add_device_at(3, Box::new(dev)).unwrap();
    b.ecam_write(offset(3, 0, COMMAND as u64), &[0x02]);
    assert_eq!(cfg32(&mut b, a, COMMAND) & 0xffff, 0x02);
    b.ecam_write(offset(3, 0, 0x3d), &[0x0b, 0x0c]);
    assert_eq!(cfg32(&mut b, a, 0x3c) >> 8 & 0xff, 1, "pin is read-only");
    assert_eq!(cfg32(&mut b, a, 0x3c) & 0xff, 0, "0x3c untouched");
}

#[test]
fn eight_byte_and_straddling_accesses() {
    let mut b = bus();
    let (dev, _) = rich_device();
    b.add_device_at(1, Box::new(dev)).unwrap();
    let mut q = [0u8; 8];
    b.ecam_read(offset(0, 0, 0), &mut q);
    assert_eq!(&q[..4], &[0x86, 0x80, 0x57, 0x0d]);
    // The last 4 bytes of 00:00.0 then the first 4 of 00:00.1 (absent).
    b.ecam_read(offset(0, 0, 0xffc), &mut q);
    assert_eq!(q, [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    // From the end of 00:00.7 (absent) into 00:01.0.
    b.ecam_read(offset(0, 7, 0xffe), &mut q[..4]);
    assert_eq!(&q[..4], &[0xff, 0xff, 0xf4, 0x1a]);
    // At the very top of the address space.
    b.ecam_read(u64::MAX - 3, &mut q);
    assert_eq!(q, [0xff; 8]);
    assert!(b.ecam_write(u64::MAX - 3, &q).is_empty());
}
