//! A built VM and its life: the [`Machine`] (assembled by `builder`), its
//! vCPU threads running until the guest or the user ends it, and the teardown
//! in order (vCPUs, passthrough, devices, VM, guest RAM). Nothing is built here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::ged::GedEvents;
use crate::devices::pci_root::SharedPciBus;
use crate::devices::serial::SerialDevice;
use crate::devices::vfio::VfioPassthrough;
use crate::exit::{ExitHandle, ExitReason};
use crate::hotplug::Hotplug;
use crate::layout::GuestLayout;
use crate::memory::GuestMemory;
use crate::vstate::gate::RunGate;
use crate::vstate::irq::KvmInterruptManager;
use crate::vstate::vcpu::{Buses, Vcpu};
use crate::vstate::vm::Vm;

/// Errors while starting the vCPUs.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A signal handler could not be installed.
    #[error("cannot install {what}: {err}")]
    Signal {
        /// Which handler.
        what: &'static str,
        /// Why.
        err: std::io::Error,
    },
    /// The control plane's seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// A VM with its memory, devices and vCPUs, ready to run.
///
/// Fields drop in this order, so a machine dropped before it ran releases
/// devices before the VM and guest RAM last.
pub struct Machine {
    pub(crate) buses: Buses,
    pub(crate) vcpus: Vec<Vcpu>,
    /// COM1; `None` with `--serial off`.
    pub(crate) serial: Option<Arc<Mutex<SerialDevice>>>,
    pub(crate) pci: SharedPciBus,
    pub(crate) interrupts: Arc<KvmInterruptManager>,
    /// Passthrough devices (shared with hotplug).
    pub(crate) vfio: Arc<Mutex<VfioPassthrough>>,
    /// Adds and removes assigned devices while the guest runs.
    pub(crate) hotplug: Arc<Hotplug>,
    pub(crate) exit: Arc<ExitHandle>,
    /// Pauses and resumes the vCPUs (`vm.pause`, `vm.resume`).
    pub(crate) gate: Arc<RunGate>,
    /// The ACPI event device: the power button (`vm.power-button`).
    pub(crate) ged: Arc<GedEvents>,
    pub(crate) vm: Vm,
    pub(crate) mem: GuestMemory,
    pub(crate) layout: GuestLayout,
}

impl Machine {
    /// Guest RAM, for loaders and tests.
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// The vCPUs, for tests that set up their own register state.
    pub fn vcpus(&self) -> &[Vcpu] {
        &self.vcpus
    }

    /// The gate that pauses and resumes the vCPUs once the machine runs.
    pub fn run_gate(&self) -> Arc<RunGate> {
        self.gate.clone()
    }

    /// The exit latch: a request on it ends [`Machine::run`].
    pub fn exit_handle(&self) -> Arc<ExitHandle> {
        self.exit.clone()
    }

    /// The buses, so that callers can add devices before the VM runs.
    pub fn buses_mut(&mut self) -> &mut Buses {
        &mut self.buses
    }

    /// Runs every vCPU on its own thread until the VM ends, joins them, then
    /// releases passthrough devices, devices, the VM and guest RAM in order.
    pub fn run(self) -> Result<ExitReason, VmmError> {
        register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| VmmError::Signal {
            what: "the vCPU kick signal handler",
            err: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let Machine {
            buses,
            vcpus,
            serial,
            pci,
            interrupts,
            vfio,
            hotplug,
            exit,
            gate,
            ged,
            vm,
            mem,
            layout: _,
        } = self;
        exit.catch_stop_signals().map_err(|err| VmmError::Signal {
            what: "the SIGINT/SIGTERM handlers",
            err,
        })?;
        crate::seccomp::install(crate::seccomp::ThreadKind::Vmm)?;
        let reason = run_vcpus(vcpus, Arc::new(buses), &exit, &gate);
        let mut passthrough = vfio.lock().unwrap_or_else(|p| p.into_inner());
        let report = passthrough.report();
        if !report.is_empty() {
            eprint!("{report}");
        }
        // Each step is logged: a step that hangs in the kernel shows in the log.
        log::info!("teardown: releasing passthrough interrupts, resetting devices, unmapping DMA");
        passthrough.shutdown();
        drop(passthrough);
        log::info!("teardown: closing devices");
        drop((serial, ged, pci, interrupts, hotplug, vfio));
        log::info!("teardown: closing the VM");
        drop(vm);
        drop(mem);
        log::info!("teardown: done");
        Ok(reason)
    }
}

/// One thread per vCPU; waits for an exit request, then stops (paused ones
/// too) and joins them.
fn run_vcpus(
    vcpus: Vec<Vcpu>,
    buses: Arc<Buses>,
    exit: &Arc<ExitHandle>,
    gate: &Arc<RunGate>,
) -> ExitReason {
    let mut threads = Vec::new();
    for vcpu in vcpus {
        let (b, e, s) = (buses.clone(), exit.clone(), gate.clone());
        match std::thread::Builder::new()
            .name("vcpu".into())
            .spawn(move || {
                crate::seccomp::enter(crate::seccomp::ThreadKind::Vcpu);
                vcpu.run(&b, &e, &s)
            }) {
            Ok(t) => threads.push(t),
            Err(e) => {
                exit.request(ExitReason::VcpuError(
                    threads.len() as u8,
                    format!("cannot start thread: {e}"),
                ));
                break;
            }
        }
    }
    let reason = exit.wait();
    if reason == ExitReason::GuestPanic {
        // Let the rest of the panic message reach the console.
        std::thread::sleep(Duration::from_millis(300));
    }
    gate.stop();
    for t in threads {
        while !t.is_finished() {
            // The handle is not joined yet, so its pthread_t is valid; the kick
            // handler does nothing but interrupt KVM_RUN. A thread that ended
            // meanwhile is seen by is_finished on the next turn.
            let _ = t.kill(SIGRTMIN());
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = t.join();
    }
    reason
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
