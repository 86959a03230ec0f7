//! Legacy configuration mechanism #1 (0xCF8 / 0xCFC).

use super::bus_setup::{bus, rich_device};
use crate::bus::PciBus;

/// Latch value for device `dev`, function `func`, register `reg`.
fn latch(dev: u32, func: u32, reg: u32) -> [u8; 4] {
    (0x8000_0000 | dev << 11 | func << 8 | reg).to_le_bytes()
}

fn read(bus: &mut PciBus, offset: u64, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    bus.config_port_read(offset, &mut d);
    d
}

#[test]
fn host_bridge_identity_through_ports() {
    let mut b = bus();
    b.config_port_write(0, &latch(0, 0, 0));
    assert_eq!(read(&mut b, 4, 4), [0x86, 0x80, 0x57, 0x0d]);
    b.config_port_write(0, &latch(0, 0, 8));
    assert_eq!(read(&mut b, 4, 4), [0, 0, 0, 6], "class 0x060000");
}

#[test]
fn latch_reads_back_masked() {
    let mut b = bus();
    b.config_port_write(0, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(read(&mut b, 0, 4), 0x80ff_fffcu32.to_le_bytes());
    // Narrow accesses to the latch ports neither read nor change it.
    assert_eq!(read(&mut b, 0, 2), [0xff, 0xff]);
    assert_eq!(read(&mut b, 1, 1), [0xff]);
    b.config_port_write(1, &[0]);
    b.config_port_write(0, &[0, 0]);
    assert_eq!(read(&mut b, 0, 4), 0x80ff_fffcu32.to_le_bytes());
}

#[test]
fn disabled_latch_and_absent_devices_read_ones() {
    let mut b = bus();
    b.config_port_write(0, &0u32.to_le_bytes());
    assert_eq!(read(&mut b, 4, 4), [0xff; 4]);
    b.config_port_write(0, &latch(7, 0, 0));
    assert_eq!(read(&mut b, 4, 4), [0xff; 4], "empty slot");
    b.config_port_write(0, &latch(0, 1, 0));
    assert_eq!(read(&mut b, 4, 4), [0xff; 4], "function 1");
    b.config_port_write(0, &(0x8001_0000u32).to_le_bytes());
    assert_eq!(read(&mut b, 4, 4), [0xff; 4], "bus 1");
    // Writes to absent functions vanish.
    assert!(b.config_port_write(4, &[0; 4]).is_empty());
}

#[test]
fn byte_and_word_offsets_in_data_window() {
    let mut b = bus();
    let (dev, _) = rich_device();
    let a = b.add_device(Box::new(dev)).unwrap();
    assert_eq!(a.device(), 1);
    b.config_port_write(0, &latch(1, 0, 0));
    assert_eq!(read(&mut b, 4, 1), [0xf4]);
    assert_eq!(read(&mut b, 5, 1), [0x1a]);
    assert_eq!(read(&mut b, 6, 2), [0x41, 0x10]);
    assert_eq!(read(&mut b, 7, 1), [0x10]);
    // A word at 0xCFF: one byte inside the window, the rest reads ones.
    assert_eq!(read(&mut b, 7, 2), [0x10, 0xff]);
    // Interrupt line via byte write at 0xCFC + 0 with register 0x3C.
    b.config_port_write(0, &latch(1, 0, 0x3c));
    b.config_port_write(4, &[9]);
    assert_eq!(read(&mut b, 4, 2), [9, 1]);
    // Command register through a word write at 0xCFC + 0, register 4.
    b.config_port_write(0, &latch(1, 0, 4));
    b.config_port_write(4, &[0x07, 0x00]);
    assert_eq!(read(&mut b, 4, 2), [0x07, 0x00]);
}

#[test]
fn multifunction_bit_is_masked() {
    let mut b = bus();
    let (mut dev, _) = rich_device();
    dev.config.write_internal(0x0e, &[0x80]);
    b.add_device(Box::new(dev)).unwrap();
    b.config_port_write(0, &latch(1, 0, 0x0c));
    assert_eq!(read(&mut b, 4, 4)[2], 0);
    assert_eq!(read(&mut b, 6, 1), [0]);
}

#[test]
fn out_of_range_port_offsets_are_harmless() {
    let mut b = bus();
    b.config_port_write(0, &latch(0, 0, 0));
    assert_eq!(read(&mut b, 8, 4), [0xff; 4]);
    assert_eq!(read(&mut b, u64::MAX, 2), [0xff; 2]);
    assert!(b.config_port_write(u64::MAX, &[1, 2, 3, 4]).is_empty());
    assert!(b.config_port_write(9, &[1]).is_empty());
}
