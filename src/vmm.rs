//! A built VM and its life: the [`Machine`] (built by `builder`), its vCPU
//! threads running until the guest or the user ends it, and the teardown in
//! order (vCPUs, passthrough, devices, VM, guest RAM).

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::boot::{acpi, cpu, linux};
use crate::config::{SerialConfig, VmConfig};
use crate::devices::pci_root::SharedPciBus;
use crate::devices::serial::{spawn_stdin_reader, SerialDevice};
use crate::devices::vfio::{VfioPassthrough, VfioSetupError};
use crate::exit::{ExitHandle, ExitReason};
use crate::layout::GuestLayout;
use crate::memory::{self, GuestMemory};
use crate::vstate::irq::KvmInterruptManager;
use crate::vstate::vcpu::{Buses, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};

/// Errors while building or starting the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Guest RAM could not be set up.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// KVM could not create the VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A vCPU could not be created or configured.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The kernel could not be loaded.
    #[error(transparent)]
    Linux(#[from] linux::LinuxError),
    /// Boot structures could not be written.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// A passthrough device could not be set up.
    #[error(transparent)]
    Passthrough(#[from] VfioSetupError),
    /// A device could not be created.
    #[error("cannot set up {what}: {err}")]
    Device {
        /// Which device.
        what: &'static str,
        /// Why.
        err: std::io::Error,
    },
    /// A device range clashed with another.
    #[error(transparent)]
    Bus(#[from] crate::devices::bus::BusError),
    /// The PCI bus could not be set up or its BARs placed.
    #[error("PCI: {0}")]
    Pci(#[from] pci::BusError),
    /// The interrupt routing could not be set up.
    #[error("cannot set up interrupt routing: {0}")]
    Interrupts(#[from] pci::InterruptError),
    /// A virtio-net NIC could not be created.
    #[error("--net number {0}: {1}")]
    Net(usize, crate::devices::virtio::NetError),
    /// No free PCI slot is left.
    #[error("no free PCI slot left for another device: use fewer devices")]
    BusFull,
    /// A KVM irqfd could not be registered.
    #[error("cannot wire {what}'s interrupt: {err}")]
    Irq {
        /// Which device.
        what: &'static str,
        /// The ioctl's error.
        err: kvm_ioctls::Error,
    },
}

/// A VM with its memory, devices and vCPUs, ready to run.
///
/// Fields drop in this order, so a machine dropped before it ran releases
/// devices before the VM and guest RAM last.
pub struct Machine {
    pub(crate) buses: Buses,
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) serial: Arc<Mutex<SerialDevice>>,
    pub(crate) pci: SharedPciBus,
    pub(crate) interrupts: Arc<KvmInterruptManager>,
    pub(crate) vfio: VfioPassthrough,
    pub(crate) exit: Arc<ExitHandle>,
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

    /// The buses, so that callers can add devices before the VM runs.
    pub fn buses_mut(&mut self) -> &mut Buses {
        &mut self.buses
    }

    /// Feeds stdin to the guest's serial port.
    pub fn connect_stdin(&self) -> Result<(), VmmError> {
        spawn_stdin_reader(self.serial.clone()).map_err(|err| VmmError::Device {
            what: "serial input",
            err,
        })
    }

    /// Runs every vCPU on its own thread until the VM ends, joins them, then
    /// releases passthrough devices, devices, the VM and guest RAM in order.
    pub fn run(self) -> Result<ExitReason, VmmError> {
        register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| VmmError::Device {
            what: "the vCPU kick signal",
            err: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let Machine {
            buses,
            vcpus,
            serial,
            pci,
            interrupts,
            mut vfio,
            exit,
            vm,
            mem,
            layout: _,
        } = self;
        exit.catch_stop_signals().map_err(|err| VmmError::Device {
            what: "the SIGINT/SIGTERM handlers",
            err,
        })?;
        let reason = run_vcpus(vcpus, Arc::new(buses), &exit);
        let report = vfio.report();
        if !report.is_empty() {
            eprint!("{report}");
        }
        // Each step is logged: a step that hangs in the kernel shows in the log.
        log::info!("teardown: releasing passthrough interrupts, resetting devices, unmapping DMA");
        vfio.shutdown();
        log::info!("teardown: closing devices");
        drop((serial, pci, interrupts, vfio));
        log::info!("teardown: closing the VM");
        drop(vm);
        drop(mem);
        log::info!("teardown: done");
        Ok(reason)
    }
}

/// One thread per vCPU; waits for an exit request, then stops and joins them.
fn run_vcpus(vcpus: Vec<Vcpu>, buses: Arc<Buses>, exit: &Arc<ExitHandle>) -> ExitReason {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for vcpu in vcpus {
        let (b, e, s) = (buses.clone(), exit.clone(), stop.clone());
        match std::thread::Builder::new()
            .name("vcpu".into())
            .spawn(move || vcpu.run(&b, &e, &s))
        {
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
    stop.store(true, Ordering::Release);
    for t in threads {
        while !t.is_finished() {
            // SAFETY: the thread is alive (not finished) and its pthread_t is valid
            // until joined; the kick handler does nothing but interrupt KVM_RUN.
            unsafe { libc::pthread_kill(t.as_pthread_t(), SIGRTMIN()) };
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = t.join();
    }
    reason
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Opens the serial console backend.
pub fn open_console(serial: &SerialConfig) -> Result<Box<dyn std::io::Write + Send>, VmmError> {
    Ok(match serial {
        SerialConfig::Stdio => Box::new(std::io::stdout()),
        SerialConfig::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| VmmError::Device {
                    what: "the serial output file",
                    err,
                })?,
        ),
    })
}

/// Builds the VM described by `config`, boots Linux and runs it to the end.
pub fn run(config: &VmConfig) -> Result<ExitReason, VmmError> {
    let console = open_console(&config.serial)?;
    let mut machine = Machine::new(&config.memory, config.cpus, config.devices.clone(), console)?;
    for (index, net) in config.net.iter().enumerate() {
        machine.add_net(net, index)?;
    }
    machine.load_linux(config)?;
    if config.serial == SerialConfig::Stdio {
        machine.connect_stdin()?;
    }
    machine.run()
}
