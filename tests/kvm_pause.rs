//! Host-KVM test of `vm.pause`'s mechanism: a real-mode guest that counts
//! in memory without ever exiting to the VMM stops counting while the run
//! gate is paused (its vCPU kicked out of KVM_RUN and parked), counts again
//! after resume, and a machine torn down while paused ends without hanging.
//! Needs /dev/kvm, so a plain `cargo test` lists it as ignored;
//! `scripts/test.sh` runs it, and it fails saying why where /dev/kvm is not
//! usable.

use std::time::{Duration, Instant};

use vfio_vmm::exit::ExitReason;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::signal::SIGRTMIN;

mod common;
use common::{machine_with, require_kvm};

/// Real-mode code at 0x1000: `1: inc dword [0x2000]; jmp 1b` (no exits).
const COUNT_FOREVER: [u8; 7] = [0x66, 0xff, 0x06, 0x00, 0x20, 0xeb, 0xf9];
const COUNTER: GuestAddress = GuestAddress(0x2000);
/// Generous: /dev/kvm may be nested and slow.
const PATIENCE: Duration = Duration::from_secs(120);

/// Waits until `cond` holds, failing with `what` after [`PATIENCE`].
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "{what} within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn a_paused_guest_makes_no_progress_and_continues_after_resume() {
    require_kvm();
    let (machine, _) = machine_with(&COUNT_FOREVER);
    let mem = machine.memory().clone();
    let (gate, exit) = (machine.run_gate(), machine.exit_handle());
    let runner = std::thread::spawn(move || machine.run());
    let count = || mem.read_obj::<u32>(COUNTER).unwrap();

    wait_for("the guest counts", || count() > 1000);
    gate.pause(SIGRTMIN(), PATIENCE).expect("pause");
    let paused_at = count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), paused_at, "the guest counted while paused");
    gate.resume().expect("resume");
    wait_for("the guest counts again after resume", || {
        count() > paused_at
    });

    // Torn down while paused: the parked vCPU is released, run returns.
    gate.pause(SIGRTMIN(), PATIENCE).expect("second pause");
    exit.request(ExitReason::Api);
    wait_for("run() returns for a paused machine", || {
        runner.is_finished()
    });
    assert_eq!(runner.join().unwrap().unwrap(), ExitReason::Api);
}
