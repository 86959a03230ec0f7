//! Fuzz target of the ACPI PCI hotplug register block: random guest reads
//! and writes of any size (0 to 9 bytes) at any offset in and around the
//! block, interleaved with the VMM's own slot changes (a slot added, a slot
//! asked to be removed, any slot number including ones past 31). A seeded
//! structured random test (see `pci/src/tests/fuzz_support.rs`).
//!
//! Checked against a model of the block: only an aligned 32-bit read of
//! `PCIU` or `PCID` returns anything, and it returns exactly the slots
//! marked since the last such read (then reads zero until the next mark);
//! every other read is zeros. The eject handler is called only by a 32-bit
//! write of `B0EJ` with a slot bit other than slot 0's (the host bridge),
//! with exactly those bits: which slots can really be ejected is the
//! handler's decision (`crate::hotplug`), not the register block's.

use std::sync::{Arc, Mutex};

use arbitrary::{Arbitrary, Unstructured};

use super::{slot_bit, HotplugSlots, PciHotplugRegisters, B0EJ, PCID, PCIU};
use crate::devices::BusDevice;
use crate::fuzz_support::run;

/// One step: the guest's access or the VMM's slot change.
#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        offset: u8,
        len: u8,
    },
    Write {
        offset: u8,
        len: u8,
        value: u64,
    },
    /// An access at an offset the bus would never pass (far past the block).
    Wild {
        offset: u64,
        len: u8,
        write: bool,
    },
    /// A guest `_EJ0`: an aligned 32-bit write of `B0EJ`.
    Eject {
        bits: u32,
    },
    Added {
        slot: u8,
    },
    Removing {
        slot: u8,
    },
}

/// What the block should hold: slots added and to remove, not yet read.
#[derive(Default)]
struct Model {
    added: u32,
    removing: u32,
}

struct Rig {
    regs: PciHotplugRegisters,
    slots: Arc<HotplugSlots>,
    ejected: Arc<Mutex<Vec<u32>>>,
    model: Model,
}

impl Rig {
    fn new() -> Rig {
        let slots = Arc::new(HotplugSlots::default());
        let ejected = Arc::new(Mutex::new(Vec::new()));
        let log = ejected.clone();
        slots.set_eject_handler(Box::new(move |bits| log.lock().unwrap().push(bits)));
        Rig {
            regs: PciHotplugRegisters(slots.clone()),
            slots,
            ejected,
            model: Model::default(),
        }
    }

    /// A guest read: checks the bytes against the model, which it updates.
    fn read(&mut self, offset: u64, len: usize) {
        let mut buf = [0xa5u8; 9];
        self.regs.read(offset, &mut buf[..len]);
        let expect = match (offset, len) {
            (PCIU, 4) => std::mem::take(&mut self.model.added),
            (PCID, 4) => std::mem::take(&mut self.model.removing),
            _ => 0,
        };
        let mut want = [0u8; 9];
        want[..4].copy_from_slice(&expect.to_le_bytes());
        assert_eq!(
            buf[..len],
            want[..len],
            "read of {len} bytes at offset {offset:#x}"
        );
    }

    /// A guest write: the eject handler runs exactly when the block says.
    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let before = self.ejected.lock().unwrap().len();
        self.regs.write(offset, bytes);
        let calls = self.ejected.lock().unwrap()[before..].to_vec();
        let expect = match <[u8; 4]>::try_from(bytes) {
            Ok(b) if offset == B0EJ && u32::from_le_bytes(b) & !1 != 0 => {
                vec![u32::from_le_bytes(b) & !1]
            }
            _ => Vec::new(),
        };
        assert_eq!(
            calls, expect,
            "eject calls of a write of {bytes:x?} at {offset:#x}"
        );
    }

    fn step(&mut self, op: Op) {
        let len = |l: u8| usize::from(l % 10);
        match op {
            Op::Read { offset, len: l } => self.read(u64::from(offset % 24), len(l)),
            Op::Write {
                offset,
                len: l,
                value,
            } => {
                let bytes = value.to_le_bytes();
                let l = len(l).min(8);
                self.write(u64::from(offset % 24), &bytes[..l]);
            }
            Op::Wild {
                offset,
                len: l,
                write,
            } => {
                if write {
                    self.write(offset, &[0xff; 9][..len(l)]);
                } else {
                    self.read(offset, len(l));
                }
            }
            Op::Eject { bits } => self.write(B0EJ, &bits.to_le_bytes()),
            Op::Added { slot } => {
                self.slots.mark_added(slot);
                self.model.added |= slot_bit(slot);
            }
            Op::Removing { slot } => {
                self.slots.mark_removing(slot);
                self.model.removing |= slot_bit(slot);
            }
        }
    }
}

/// The block never panics, reads return what the model says (and clear
/// `PCIU`/`PCID`), and ejects reach the handler exactly as written.
#[test]
fn fuzz_pci_hotplug() {
    run("fuzz_pci_hotplug", 5000, |u: &mut Unstructured| {
        let mut rig = Rig::new();
        let ops: Vec<Op> = (0..64).map_while(|_| u.arbitrary().ok()).collect();
        for op in ops {
            rig.step(op);
        }
        // What is still pending reads out once, then zero.
        for _ in 0..2 {
            rig.read(PCIU, 4);
            rig.read(PCID, 4);
        }
        Ok(())
    });
}
