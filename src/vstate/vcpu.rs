//! A vCPU: its boot configuration (CPUID, MSRs, FPU, LAPIC, registers) and
//! the run loop that dispatches port and MMIO exits to the buses.

use kvm_bindings::{
    CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use nix::errno::Errno;

use crate::boot::{cpu, cpuid, msr};
use crate::devices::Bus;
use crate::exit::{ExitHandle, ExitReason};
use crate::vstate::gate::RunGate;
use crate::vstate::vm::Vm;

/// Errors while creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM refused to create the vCPU.
    #[error("cannot create vCPU {0}: {1}")]
    Create(u8, kvm_ioctls::Error),
    /// KVM refused a CPUID or MSR setting.
    #[error("cannot set {what} of vCPU {id}: {err}")]
    Kvm {
        /// Which vCPU.
        id: u8,
        /// What was being set.
        what: &'static str,
        /// The ioctl's error.
        err: kvm_ioctls::Error,
    },
    /// Register setup failed.
    #[error("vCPU {0}: {1}")]
    Cpu(u8, cpu::CpuError),
}

/// The buses a vCPU dispatches exits to.
#[derive(Default)]
pub struct Buses {
    /// I/O ports.
    pub pio: Bus,
    /// MMIO outside RAM.
    pub mmio: Bus,
}

/// One vCPU, not yet running.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Creates vCPU `id` in `vm`.
    pub fn new(vm: &Vm, id: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(|e| VcpuError::Create(id, e))?;
        Ok(Vcpu { id, fd })
    }

    /// The KVM vCPU, for tests that set up their own register state.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Sets CPUID (topology for `cpus`), MSRs, FPU and LAPIC pins.
    pub fn configure(&self, supported: &CpuId, cpus: u8) -> Result<(), VcpuError> {
        let kvm = |what| {
            move |err| VcpuError::Kvm {
                id: self.id,
                what,
                err,
            }
        };
        let mut leaves = supported.clone();
        cpuid::configure(&mut leaves, self.id, cpus);
        self.fd.set_cpuid2(&leaves).map_err(kvm("CPUID"))?;
        self.fd.set_msrs(&msr::boot_msrs()).map_err(kvm("MSRs"))?;
        cpu::setup_fpu(&self.fd).map_err(|e| VcpuError::Cpu(self.id, e))?;
        cpu::setup_lapic(&self.fd).map_err(|e| VcpuError::Cpu(self.id, e))
    }

    /// Puts this (boot) vCPU at the kernel's entry, in the mode it asks for.
    pub fn set_boot_entry(&self, entry: cpu::BootEntry) -> Result<(), VcpuError> {
        cpu::setup_boot_vcpu(&self.fd, entry).map_err(|e| VcpuError::Cpu(self.id, e))
    }

    /// Runs until `gate` is stopped or the guest does something that ends
    /// the VM; parks on `gate` while it is paused.
    pub fn run(mut self, buses: &Buses, exit: &ExitHandle, gate: &RunGate) {
        let _member = gate.enter(self.id);
        while gate.checkpoint(self.id) {
            match self.fd.run() {
                Ok(vexit) => {
                    if let Some(reason) = handle_exit(self.id, vexit, buses) {
                        exit.request(reason);
                        return;
                    }
                }
                Err(e) if matches!(Errno::from_raw(e.errno()), Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => {
                    exit.request(ExitReason::VcpuError(
                        self.id,
                        format!("KVM_RUN failed: {e}"),
                    ));
                    return;
                }
            }
        }
    }
}

/// Handles one exit; returns a reason when the VM must stop.
fn handle_exit(id: u8, vexit: VcpuExit, buses: &Buses) -> Option<ExitReason> {
    match vexit {
        VcpuExit::IoIn(port, data) => {
            if !buses.pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
        }
        VcpuExit::IoOut(port, data) => {
            buses.pio.write(u64::from(port), data);
        }
        VcpuExit::MmioRead(addr, data) => {
            if !buses.mmio.read(addr, data) {
                data.fill(0xff);
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            buses.mmio.write(addr, data);
        }
        VcpuExit::Shutdown => return Some(ExitReason::TripleFault(id)),
        VcpuExit::Hlt => {
            return Some(ExitReason::VcpuError(
                id,
                "halted with no in-kernel LAPIC to wake it".into(),
            ))
        }
        VcpuExit::SystemEvent(kind, _) => {
            return Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                KVM_SYSTEM_EVENT_RESET => ExitReason::Reset,
                KVM_SYSTEM_EVENT_CRASH => ExitReason::GuestPanic,
                other => ExitReason::VcpuError(id, format!("unknown system event {other}")),
            })
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Some(ExitReason::VcpuError(
                id,
                format!("VM entry failed (hardware reason {reason:#x} on host CPU {cpu})"),
            ))
        }
        VcpuExit::InternalError => {
            return Some(ExitReason::VcpuError(
                id,
                "KVM internal error (emulation failure)".into(),
            ))
        }
        other => {
            return Some(ExitReason::VcpuError(
                id,
                format!("unexpected exit {other:?}"),
            ))
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_that_end_the_vm_map_to_their_reasons() {
        let buses = Buses::default();
        assert_eq!(
            handle_exit(2, VcpuExit::Shutdown, &buses),
            Some(ExitReason::TripleFault(2))
        );
        let ev = |kind| handle_exit(0, VcpuExit::SystemEvent(kind, &[]), &buses);
        assert_eq!(ev(KVM_SYSTEM_EVENT_SHUTDOWN), Some(ExitReason::PowerOff));
        assert_eq!(ev(KVM_SYSTEM_EVENT_RESET), Some(ExitReason::Reset));
        assert_eq!(ev(KVM_SYSTEM_EVENT_CRASH), Some(ExitReason::GuestPanic));
        assert!(matches!(
            handle_exit(1, VcpuExit::InternalError, &buses),
            Some(ExitReason::VcpuError(1, _))
        ));
    }

    #[test]
    fn unclaimed_port_and_mmio_reads_float_high_and_writes_vanish() {
        let buses = Buses::default();
        let mut data = [0u8; 4];
        assert_eq!(
            handle_exit(0, VcpuExit::IoIn(0x70, &mut data), &buses),
            None
        );
        assert_eq!(data, [0xff; 4]);
        let mut data = [0u8; 8];
        assert_eq!(
            handle_exit(0, VcpuExit::MmioRead(0xd000_0000, &mut data), &buses),
            None
        );
        assert_eq!(data, [0xff; 8]);
        assert_eq!(handle_exit(0, VcpuExit::IoOut(0x80, &[1]), &buses), None);
    }
}
