//! What the host-KVM tests (kvm_boot, kvm_payload, kvm_pause) share: the
//! /dev/kvm check, a console sink to read back, and a one-vCPU machine with
//! hand-written real-mode code at [`LOAD_ADDR`].
// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use vfio_vmm::config::MemoryConfig;
use vfio_vmm::vmm::Machine;
use vm_memory::{Bytes, GuestAddress};

/// Where [`machine_with`] loads the code and starts the vCPU.
pub const LOAD_ADDR: u64 = 0x1000;

/// A console sink the test can read back.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails the test, saying why, if /dev/kvm cannot be opened.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!(
            "/dev/kvm is not usable here ({e}); this test needs /dev/kvm (scripts/test.sh runs it)"
        );
    }
}

/// A one-vCPU machine with 64 MiB, `code` at [`LOAD_ADDR`] and the vCPU in
/// real mode there; its console goes to the returned [`Captured`].
pub fn machine_with(code: &[u8]) -> (Machine, Captured) {
    let out = Captured::default();
    let mem = MemoryConfig {
        size: 64 << 20,
        hugepages: false,
        mergeable: false,
    };
    let machine = Machine::new(&mem, 1, Vec::new(), Box::new(out.clone())).expect("machine");
    load(&machine, code);
    let vcpu = machine.vcpus()[0].fd();
    let mut sregs = vcpu.get_sregs().unwrap();
    (sregs.cs.base, sregs.cs.selector) = (0, 0);
    vcpu.set_sregs(&sregs).unwrap();
    let regs = kvm_bindings::kvm_regs {
        rip: LOAD_ADDR,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).unwrap();
    (machine, out)
}

/// Writes `code` at [`LOAD_ADDR`] (again, e.g. once patched).
pub fn load(machine: &Machine, code: &[u8]) {
    machine
        .memory()
        .write_slice(code, GuestAddress(LOAD_ADDR))
        .unwrap();
}
