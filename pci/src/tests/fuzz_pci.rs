//! Fuzz targets of the PCI crate's guest-facing emulation: config space
//! through the bus (host bridge and devices, by ECAM, ports and direct
//! writes, BAR sizing and moves), the MSI capability and the MSI-X table.
//! Each is a seeded structured random test (see `fuzz_support`).

use arbitrary::{Arbitrary, Unstructured};

use super::bus_setup::cfg32;
use super::fakes::fake_vectors;
use super::fuzz_support::run;
use super::proptests::{check_bus_invariants, routed, snapshot, two_device_bus};
use crate::bar::BarKind;
use crate::bus::PciBus;
use crate::capability::CapabilityPlace;
use crate::config::PciConfig;
use crate::msi::{Msi, MsiCapability};
use crate::msix::{Msix, MsixCapability};

/// Bases a guest is likely to write into a BAR: inside, at the edges of and
/// outside the windows, unaligned, the sizing pattern.
const BASES: [u32; 10] = [
    0xc000_0000,
    0xc000_1000,
    0xfff0_0000,
    0xffff_ffff,
    0xbfff_f000,
    0xe000_0000,
    0xc001,
    0xcff8,
    0x7,
    0,
];

/// One guest access to the PCI bus.
#[derive(Arbitrary, Debug)]
pub(crate) enum BusOp {
    Ecam {
        offset: u32,
        data: [u8; 8],
        len: u8,
        write: bool,
    },
    Port {
        latch: u32,
        offset: u8,
        data: [u8; 4],
        len: u8,
        write: bool,
    },
    Config {
        dev: u8,
        offset: u16,
        value: u32,
        size: u8,
    },
    Bar {
        dev: u8,
        bar: u8,
        base: u8,
        raw: Option<u32>,
        high: Option<u32>,
    },
    Command {
        dev: u8,
        value: u16,
    },
    Mmio {
        at: u8,
        offset: u32,
        len: u8,
        write: bool,
    },
}

/// Width of a config access: 1, 2 or 4 bytes.
fn width(size: u8) -> usize {
    [1, 2, 4][usize::from(size % 3)]
}

/// Applies `op`; `dev` picks one of the bus's functions.
pub(crate) fn bus_op(b: &mut PciBus, op: BusOp) {
    let functions = b.addresses();
    let pick = |dev: u8| functions[usize::from(dev) % functions.len()];
    match op {
        BusOp::Ecam {
            offset,
            data,
            len,
            write,
        } => {
            let mut data = data[..usize::from(len % 8) + 1].to_vec();
            let offset = u64::from(offset % (3 << 15));
            if write {
                b.ecam_write(offset, &data);
            } else {
                b.ecam_read(offset, &mut data);
            }
        }
        BusOp::Port {
            latch,
            offset,
            data,
            len,
            write,
        } => {
            let mut data = data[..usize::from(len % 4) + 1].to_vec();
            b.config_port_write(0, &(latch & 0x8000_1ffc).to_le_bytes());
            let offset = u64::from(offset % 10);
            if write {
                b.config_port_write(offset, &data);
            } else {
                b.config_port_read(offset, &mut data);
            }
        }
        BusOp::Config {
            dev,
            offset,
            value,
            size,
        } => {
            let len = width(size);
            let offset = usize::from(offset % 0x1000) & !(len - 1);
            b.config_write(pick(dev), offset, &value.to_le_bytes()[..len]);
        }
        BusOp::Bar {
            dev,
            bar,
            base,
            raw,
            high,
        } => {
            let reg = 0x10 + 4 * usize::from(bar % 7);
            let reg = if reg == 0x28 { 0x30 } else { reg };
            let value = raw.unwrap_or(BASES[usize::from(base) % BASES.len()]);
            let a = pick(dev);
            b.config_write(a, reg, &value.to_le_bytes());
            let _sized = cfg32(b, a, reg);
            if let Some(high) = high {
                b.config_write(a, reg + 4, &high.to_le_bytes());
            }
        }
        BusOp::Command { dev, value } => {
            b.config_write(pick(dev), 0x04, &value.to_le_bytes());
        }
        BusOp::Mmio {
            at,
            offset,
            len,
            write,
        } => {
            let bases = routed(b);
            let base = bases.get(usize::from(at) % bases.len().max(1));
            let (io, base) = base.map_or((false, 0), |r| (r.0, r.1));
            let address = base.wrapping_add(u64::from(offset % 0x2000));
            let mut data = vec![0x5au8; usize::from(len % 8) + 1];
            match (io, write) {
                (false, true) => drop(b.mmio_write(address, &data)),
                (false, false) => drop(b.mmio_read(address, &mut data)),
                (true, true) => drop(b.pio_write(address, &data)),
                (true, false) => drop(b.pio_read(address, &mut data)),
            }
        }
    }
}

/// Config space of the host bridge and two devices with BARs, MSI-X and a
/// ROM, by every path a guest has: read-only bits never change, the guest
/// sets no status bit, routed BARs stay in the windows and apart.
#[test]
fn fuzz_pci_bus() {
    run("fuzz_pci_bus", 2000, |u: &mut Unstructured| {
        let mut b = two_device_bus();
        let before = snapshot(&mut b);
        let ops: Vec<BusOp> = (0..32).map_while(|_| u.arbitrary().ok()).collect();
        for op in ops {
            bus_op(&mut b, op);
        }
        check_bus_invariants(&mut b, &before).unwrap();
        Ok(())
    });
}

/// One guest access to an MSI-X table or PBA.
#[derive(Arbitrary, Debug)]
enum MsixOp {
    Bar {
        bar: u8,
        offset: u16,
        data: [u8; 8],
        len: u8,
        write: bool,
    },
    Dword {
        entry: u8,
        field: u8,
        value: u32,
    },
    Control {
        value: u16,
    },
    Trigger {
        index: u8,
    },
}

/// The MSI-X table and PBA: writes of any size anywhere never panic, and
/// an aligned dword written to the table reads back (vector control: only
/// the mask bit).
#[test]
fn fuzz_msix_table() {
    run("fuzz_msix_table", 3000, |u: &mut Unstructured| {
        let vectors = usize::from(u.int_in_range(1u8..=8)?);
        let mut config = PciConfig::new(&super::fakes::header());
        for bar in 0..2 {
            let kind = BarKind::Memory32 {
                prefetchable: false,
            };
            config.add_bar(bar, kind, 0x1000).unwrap();
        }
        let cap = MsixCapability::new(vectors, 0, 0x800, u.int_in_range(0..=1)?, 0xc00).unwrap();
        let (v, _) = fake_vectors(vectors);
        let mut msix = Msix::add(&mut config, CapabilityPlace::Append, cap, v).unwrap();
        let mut steps = 0;
        while !u.is_empty() && steps < 32 {
            steps += 1;
            match u.arbitrary()? {
                MsixOp::Bar {
                    bar,
                    offset,
                    data,
                    len,
                    write,
                } => {
                    let mut data = data[..usize::from(len % 8) + 1].to_vec();
                    let (bar, offset) = (usize::from(bar % 3), u64::from(offset % 0x1000));
                    if write {
                        let _ = msix.bar_write(bar, offset, &data);
                    } else {
                        msix.bar_read(bar, offset, &mut data);
                    }
                }
                MsixOp::Dword {
                    entry,
                    field,
                    value,
                } => {
                    let offset = 16 * u64::from(entry % 8) + 4 * u64::from(field % 4);
                    msix.table_write(offset, &value.to_le_bytes()).unwrap();
                    let mut back = [0u8; 4];
                    msix.table_read(offset, &mut back);
                    let want = match (usize::from(entry % 8) < vectors, field % 4) {
                        (false, _) => 0,
                        (true, 3) => value & 1,
                        (true, _) => value,
                    };
                    assert_eq!(
                        u32::from_le_bytes(back),
                        want,
                        "entry {entry} field {field}"
                    );
                }
                MsixOp::Control { value } => {
                    config.write(msix.offset() + 2, &value.to_le_bytes());
                    msix.config_written(&config, msix.offset() + 2, 2).unwrap();
                }
                MsixOp::Trigger { index } => {
                    let index = usize::from(index % 9);
                    assert_eq!(msix.trigger(index).is_ok(), index < vectors);
                }
            }
        }
        Ok(())
    });
}

/// The MSI capability: any config write (of the capability or around it)
/// never panics, and the capability ID and next pointer stay.
#[test]
fn fuzz_msi_capability() {
    run("fuzz_msi_capability", 3000, |u: &mut Unstructured| {
        let count = [1usize, 2, 4, 8, 16, 32][usize::from(u.int_in_range(0u8..=5)?)];
        let cap = MsiCapability::new(count, u.arbitrary()?, u.arbitrary()?).unwrap();
        let mut config = PciConfig::new(&super::fakes::header());
        let (v, _) = fake_vectors(count);
        let mut msi = Msi::add(&mut config, CapabilityPlace::Append, cap, v).unwrap();
        let at = msi.offset();
        let header = config.read_u16(at);
        let mut steps = 0;
        while !u.is_empty() && steps < 32 {
            steps += 1;
            if u.ratio(1u8, 4)? {
                let index = usize::from(u.int_in_range(0u8..=32)?);
                assert_eq!(msi.trigger(&mut config, index).is_ok(), index < count);
                continue;
            }
            let len = width(u.arbitrary()?);
            let offset = (at + usize::from(u.int_in_range(0u8..=27)?) - 2) & !(len - 1);
            let value: u32 = u.arbitrary()?;
            config.write(offset, &value.to_le_bytes()[..len]);
            msi.config_written(&mut config, offset, len).unwrap();
            assert_eq!(config.read_u16(at), header, "MSI capability header");
        }
        Ok(())
    });
}
