//! Fuzz target of the GED event register: random guest reads and writes of
//! any size at any offset, interleaved with events the VMM raises (power
//! button, PCI changed), and the same with the VMM raising them from another
//! thread while the guest reads. A seeded structured random test (see
//! `pci/src/tests/fuzz_support.rs`).
//!
//! Checked: an event raised is read exactly once (by the first byte-0 read
//! after it; raises of the same event before that read merge into one, as
//! the register is a bit mask), every other byte reads zero, writes change
//! nothing, and each raise pulses the interrupt once.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{GedEvents, GedRegister, EVENT_PCI_HOTPLUG, EVENT_POWER_BUTTON};
use crate::devices::BusDevice;
use crate::fuzz_support::run;

/// One step: the guest's access or an event the VMM raises.
#[derive(Arbitrary, Debug)]
enum Op {
    Read { offset: u8, len: u8 },
    Write { offset: u8, len: u8, value: u64 },
    Wild { offset: u64, len: u8 },
    PowerButton,
    PciChanged,
}

fn rig() -> (GedRegister, Arc<GedEvents>, EventFd) {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let events = Arc::new(GedEvents::new(irq.try_clone().unwrap()));
    (GedRegister(events.clone()), events, irq)
}

/// A guest read of `len` bytes at `offset`: the pending events (offset 0,
/// first byte) or zeros.
fn read(reg: &mut GedRegister, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xa5u8; len];
    reg.read(offset, &mut buf);
    buf
}

/// Interrupts signalled since the last call.
fn pulses(irq: &EventFd) -> u64 {
    irq.read().unwrap_or(0)
}

/// A guest read checked against the model: byte 0 at offset 0 takes the
/// pending events, everything else is zero.
fn check_read(reg: &mut GedRegister, pending: &mut u8, offset: u64, len: usize) {
    let mut want = vec![0u8; len];
    if offset == 0 && len > 0 {
        want[0] = std::mem::take(pending);
    }
    assert_eq!(
        read(reg, offset, len),
        want,
        "read of {len} bytes at {offset:#x}"
    );
}

/// Guest and VMM steps in one thread, against a model of the pending mask.
fn sequential(u: &mut Unstructured) {
    let (mut reg, events, irq) = rig();
    let mut pending = 0u8;
    let mut raised = 0u64;
    let ops: Vec<Op> = (0..64).map_while(|_| u.arbitrary().ok()).collect();
    let len = |l: u8| usize::from(l % 10);
    for op in ops {
        match op {
            Op::Read { offset, len: l } => {
                check_read(&mut reg, &mut pending, u64::from(offset % 4), len(l))
            }
            Op::Wild { offset, len: l } => check_read(&mut reg, &mut pending, offset, len(l)),
            Op::Write {
                offset,
                len: l,
                value,
            } => reg.write(u64::from(offset % 4), &value.to_le_bytes()[..len(l).min(8)]),
            Op::PowerButton => {
                events.power_button().unwrap();
                pending |= EVENT_POWER_BUTTON;
                raised += 1;
            }
            Op::PciChanged => {
                events.pci_changed().unwrap();
                pending |= EVENT_PCI_HOTPLUG;
                raised += 1;
            }
        }
    }
    assert_eq!(read(&mut reg, 0, 1), [pending], "what is left reads once");
    assert_eq!(read(&mut reg, 0, 1), [0]);
    assert_eq!(pulses(&irq), raised, "one interrupt per raise");
}

/// The VMM raises events from another thread while the guest reads: each
/// event raised at least once is seen, and never in more reads than raises.
fn concurrent(u: &mut Unstructured) -> arbitrary::Result<()> {
    let (mut reg, events, irq) = rig();
    let raises: Vec<bool> = (0..32).map_while(|_| u.arbitrary().ok()).collect();
    let reads = u.int_in_range(0..=32)?;
    let vmm = {
        let raises = raises.clone();
        std::thread::spawn(move || {
            for power in raises {
                if power {
                    events.power_button().unwrap();
                } else {
                    events.pci_changed().unwrap();
                }
            }
        })
    };
    let mut seen = [0usize; 2];
    let mut note = |b: u8| {
        assert_eq!(b & !(EVENT_POWER_BUTTON | EVENT_PCI_HOTPLUG), 0, "{b:#x}");
        seen[0] += usize::from(b & EVENT_POWER_BUTTON != 0);
        seen[1] += usize::from(b & EVENT_PCI_HOTPLUG != 0);
    };
    for _ in 0..reads {
        note(read(&mut reg, 0, 1)[0]);
    }
    vmm.join().unwrap();
    note(read(&mut reg, 0, 1)[0]);
    assert_eq!(read(&mut reg, 0, 1), [0], "drained");
    let power = raises.iter().filter(|&&p| p).count();
    let pci = raises.len() - power;
    for (event, (n, got)) in [(power, seen[0]), (pci, seen[1])].into_iter().enumerate() {
        assert!(
            got <= n && (n == 0) == (got == 0),
            "event {event}: {n} raised, read {got} times"
        );
    }
    assert_eq!(pulses(&irq), raises.len() as u64, "one interrupt per raise");
    Ok(())
}

/// The register never panics and every event raised is read exactly once.
#[test]
fn fuzz_ged() {
    run("fuzz_ged", 5000, |u: &mut Unstructured| {
        if u.arbitrary::<u8>()? % 8 == 0 {
            concurrent(u)
        } else {
            sequential(u);
            Ok(())
        }
    });
}
