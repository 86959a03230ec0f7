//! Fuzz target of the virtio PCI transport: random guest accesses to its
//! config space (including the PCI-configuration-access capability) and to
//! BAR 0 (common config, ISR, device config, notifications, MSI-X table),
//! mixed with driver-like setup steps with garbage values, so that the
//! common config's state machine is reached deep. A seeded structured
//! random test (see `pci/src/tests/fuzz_support.rs`).

use arbitrary::{Arbitrary, Unstructured};
use pci::PciDevice;

use super::pci_transport::{
    VirtioPciDevice, BAR_SIZE, COMMON_OFFSET, DEVICE_OFFSET, NOTIFY_OFFSET,
};
use super::tests::{negotiate, read, rig, setup_queue, write};
use crate::fuzz_support::run;

/// Offsets a driver touches most: the common config's registers.
const HOT: [u64; 12] = [
    0x00, 0x04, 0x08, 0x0c, 0x10, 0x12, 0x14, 0x16, 0x18, 0x1a, 0x1c, 0x1e,
];

/// One guest step on the transport.
#[derive(Arbitrary, Debug)]
enum Op {
    Bar {
        offset: u16,
        value: u64,
        len: u8,
        write: bool,
    },
    Common {
        at: u8,
        value: u64,
        len: u8,
    },
    Config {
        offset: u16,
        value: u32,
        len: u8,
    },
    Negotiate {
        features: u64,
    },
    Queue {
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    },
    Status {
        bits: u8,
    },
    Notify {
        queue: u16,
    },
}

fn step(dev: &mut VirtioPciDevice, op: Op) {
    let len = |l: u8| [1usize, 2, 4, 8][usize::from(l % 4)];
    match op {
        Op::Bar {
            offset,
            value,
            len: l,
            write: true,
        } => {
            dev.bar_write(
                0,
                u64::from(offset) % BAR_SIZE,
                &value.to_le_bytes()[..len(l)],
            );
        }
        Op::Bar { offset, len: l, .. } => {
            let mut b = [0u8; 8];
            dev.bar_read(0, u64::from(offset) % BAR_SIZE, &mut b[..len(l)]);
        }
        Op::Common { at, value, len: l } => {
            let offset = COMMON_OFFSET + HOT[usize::from(at) % HOT.len()];
            write(dev, offset, value, len(l).min(4));
        }
        Op::Config {
            offset,
            value,
            len: l,
        } => {
            let l = len(l).min(4);
            let offset = usize::from(offset % 0x100) & !(l - 1);
            dev.config_write(offset, &value.to_le_bytes()[..l]);
        }
        Op::Negotiate { features } => drop(negotiate(dev, features)),
        Op::Queue {
            index,
            size,
            desc,
            avail,
            used,
        } => {
            setup_queue(
                dev,
                index % 3,
                size,
                desc % (2 << 20),
                avail % (2 << 20),
                used,
            );
        }
        Op::Status { bits } => write(dev, 0x14, u64::from(bits), 1),
        Op::Notify { queue } => write(dev, NOTIFY_OFFSET + 4 * u64::from(queue % 4), 0, 2),
    }
}

/// The transport never panics, its identity stays, and the status it shows
/// is one a driver wrote or zero (a reset).
#[test]
fn fuzz_virtio_pci() {
    run("fuzz_virtio_pci", 3000, |u: &mut Unstructured| {
        let mut r = rig();
        let dev = &mut r.dev;
        let id = dev.config().read_u32(0);
        let device_cfg = read(dev, DEVICE_OFFSET, 4);
        let ops: Vec<Op> = (0..48).map_while(|_| u.arbitrary().ok()).collect();
        for op in ops {
            step(dev, op);
        }
        assert_eq!(dev.config().read_u32(0), id, "vendor and device ID");
        assert_eq!(read(dev, DEVICE_OFFSET, 4), device_cfg, "device config");
        Ok(())
    });
}
