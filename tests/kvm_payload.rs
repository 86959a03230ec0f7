//! Host-KVM tests: tiny hand-written real-mode payloads run on the real
//! /dev/kvm through the VMM's own machine, vCPU loop, buses and devices.
//! They need /dev/kvm, so a plain `cargo test` lists them as ignored;
//! `scripts/test.sh` runs them, and each fails saying why where /dev/kvm is
//! not usable.

use std::sync::{Arc, Mutex};

use vfio_vmm::devices::BusDevice;
use vfio_vmm::exit::ExitReason;

mod common;
use common::{machine_with, require_kvm};

/// Records MMIO writes and answers reads with a fixed pattern.
#[derive(Default)]
struct MmioProbe {
    writes: Vec<(u64, Vec<u8>)>,
}

impl BusDevice for MmioProbe {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0x40 + offset as u8);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

/// `mov dx, port; mov al, byte; out dx, al` for each byte.
fn out_bytes(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut code = vec![0xba, port as u8, (port >> 8) as u8];
    for &b in bytes {
        code.extend_from_slice(&[0xb0, b, 0xee]);
    }
    code
}

/// Writes S5 | SLP_EN to the ACPI sleep control register, then halts.
fn power_off() -> Vec<u8> {
    let mut code = out_bytes(0x600, &[(5 << 2) | (1 << 5)]);
    code.push(0xf4);
    code
}

#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn payload_prints_on_the_serial_port_and_powers_off() {
    require_kvm();
    let mut code = out_bytes(0x3f8, b"hello from the guest\n");
    code.extend(power_off());
    let (machine, out) = machine_with(&code);
    assert_eq!(machine.run().unwrap(), ExitReason::PowerOff);
    assert_eq!(&*out.0.lock().unwrap(), b"hello from the guest\n");
}

#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn mmio_reads_and_writes_reach_the_device_that_owns_the_range() {
    require_kvm();
    // In the hole, clear of the PCI windows and ECAM.
    const MMIO_BASE: u32 = 0xe800_0000;
    // DS's hidden base points at the MMIO page (set below), so 16-bit offsets reach it.
    let mut code = vec![
        0xc6, 0x06, 0x04, 0x00, 0x5a, // mov byte [4], 0x5a
        0x8a, 0x1e, 0x02, 0x00, // mov bl, [2]
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x88, 0xd8, // mov al, bl
        0xee, // out dx, al
    ];
    code.extend(power_off());
    let (mut machine, out) = machine_with(&code);
    let probe = Arc::new(Mutex::new(MmioProbe::default()));
    machine
        .buses_mut()
        .mmio
        .insert(u64::from(MMIO_BASE), 0x1000, probe.clone())
        .unwrap();
    let vcpu = machine.vcpus()[0].fd();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.ds.base = u64::from(MMIO_BASE);
    vcpu.set_sregs(&sregs).unwrap();
    assert_eq!(machine.run().unwrap(), ExitReason::PowerOff);
    assert_eq!(probe.lock().unwrap().writes, vec![(4, vec![0x5a])]);
    assert_eq!(
        &*out.0.lock().unwrap(),
        &[0x42],
        "the byte read at offset 2 reached the serial port"
    );
}

#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn keyboard_controller_reset_ends_the_vm_as_a_reboot() {
    require_kvm();
    let mut code = out_bytes(0x64, &[0xfe]);
    code.push(0xf4);
    let (machine, _) = machine_with(&code);
    assert_eq!(machine.run().unwrap(), ExitReason::Reset);
}
