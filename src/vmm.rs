//! Building a VM from its configuration and running it: memory, KVM, devices
//! and vCPUs are put together here, then the vCPU threads run until the guest
//! or the user ends the VM, and everything is torn down in order.

use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::boot::{acpi, cpu, linux};
use crate::config::{MemoryConfig, SerialConfig, VmConfig};
use crate::devices::legacy::{AcpiPm, ResetLine, I8042};
use crate::devices::pci::{self as pci_glue, BarWindow, ConfigPorts, Ecam, SharedPciBus};
use crate::devices::serial::{spawn_stdin_reader, ConsoleOut, SerialDevice};
use crate::exit::{ExitHandle, ExitReason};
use crate::layout;
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
    #[error("--net {0}: {1}")]
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

fn dev_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |err| VmmError::Device { what, err }
}

/// A VM with its memory, devices and vCPUs, ready to run.
pub struct Machine {
    vm: Vm,
    mem: GuestMemory,
    mem_size: u64,
    buses: Buses,
    vcpus: Vec<Vcpu>,
    exit: Arc<ExitHandle>,
    serial: Arc<Mutex<SerialDevice>>,
    pci: SharedPciBus,
    interrupts: Arc<KvmInterruptManager>,
}

impl Machine {
    /// Creates RAM, the KVM VM with its irqchip, the legacy devices and `cpus` configured vCPUs.
    pub fn new(memory: &MemoryConfig, cpus: u8, console: Box<dyn Write + Send>) -> Result<Self, VmmError> {
        let vm = Vm::new()?;
        vm.check_cpus(cpus)?;
        let mem = memory::create_guest_memory(memory)?;
        vm.map_memory(&mem)?;
        vm.create_irqchip_and_pit()?;
        let exit = Arc::new(ExitHandle::new().map_err(dev_err("the exit event"))?);

        let irq = EventFd::new(0).map_err(dev_err("the serial port"))?;
        vm.fd()
            .register_irqfd(&irq, layout::SERIAL_IRQ)
            .map_err(|err| VmmError::Irq { what: "the serial port", err })?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(irq, ConsoleOut::new(console, exit.clone()))));
        let mut buses = Buses::default();
        buses.pio.insert(u64::from(layout::SERIAL_PORT), 8, serial.clone())?;
        buses.pio.insert(u64::from(layout::I8042_PORT), 5, Arc::new(Mutex::new(I8042(I8042Device::new(ResetLine(exit.clone()))))))?;
        buses.pio.insert(u64::from(layout::CMOS_PORT), 2, Arc::new(Mutex::new(crate::devices::cmos::Cmos::default())))?;
        buses.pio.insert(u64::from(layout::ACPI_SLEEP_CONTROL_PORT), AcpiPm::PORTS, Arc::new(Mutex::new(AcpiPm::new(exit.clone()))))?;

        let pci = pci_glue::new_bus(memory.size)?;
        add_pci_ranges(&mut buses, &pci, memory.size)?;
        let interrupts = Arc::new(KvmInterruptManager::new(vm.shared_fd())?);

        let supported = vm.supported_cpuid()?;
        let vcpus = (0..cpus)
            .map(|id| {
                let vcpu = Vcpu::new(&vm, id)?;
                vcpu.configure(&supported, cpus)?;
                Ok(vcpu)
            })
            .collect::<Result<Vec<_>, VcpuError>>()?;
        Ok(Machine { vm, mem, mem_size: memory.size, buses, vcpus, exit, serial, pci, interrupts })
    }

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

    /// The KVM VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The PCI bus, to add devices before the guest boots.
    pub fn pci_bus(&self) -> &SharedPciBus {
        &self.pci
    }

    /// Hands out MSI vectors and INTx lines backed by KVM irqfds.
    pub fn interrupt_manager(&self) -> Arc<KvmInterruptManager> {
        self.interrupts.clone()
    }

    /// A free slot on bus 0 (slot 0 is the host bridge).
    fn free_pci_address(&self) -> Result<pci::PciAddress, VmmError> {
        let used = self.pci.lock().unwrap_or_else(|p| p.into_inner()).addresses();
        (1..32u8)
            .find(|d| !used.iter().any(|a| a.device() == *d))
            .and_then(|slot| pci::PciAddress::new(0, slot, 0).ok())
            .ok_or(VmmError::BusFull)
    }

    /// Adds virtio-net NIC number `index`.
    pub fn add_net(&mut self, config: &crate::devices::virtio::NetConfig, index: usize) -> Result<(), VmmError> {
        let address = self.free_pci_address()?;
        let dev = crate::devices::virtio::new_net_pci(config, index, address, self.mem.clone(), self.interrupts.clone(), self.vm.shared_fd())
            .map_err(|e| VmmError::Net(index, e))?;
        let mut bus = self.pci.lock().unwrap_or_else(|p| p.into_inner());
        bus.add_device_at(address.device(), Box::new(dev))?;
        Ok(())
    }

    /// Loads Linux and writes every boot structure; the boot vCPU starts at the kernel.
    pub fn load_linux(&mut self, config: &VmConfig) -> Result<(), VmmError> {
        for p in self.pci.lock().unwrap_or_else(|p| p.into_inner()).assign_bars()? {
            log::info!("PCI {} BAR {} at {:#x} size {:#x}", p.address, p.bar, p.base, p.def.size);
        }
        let kernel = linux::load(&self.mem, self.mem_size, &config.kernel, config.initramfs.as_deref(), &config.cmdline)?;
        cpu::write_boot_tables(&self.mem)?;
        let mut dsdt = crate::devices::serial::dsdt_aml();
        dsdt.extend(pci_glue::dsdt_aml(self.mem_size));
        let inputs = acpi::AcpiInputs { cpus: self.vcpus.len() as u8, dsdt_devices: &dsdt, extra_tables: vec![pci_glue::mcfg()] };
        acpi::write_tables(&self.mem, &inputs)?;
        self.vcpus[0].set_boot_entry(kernel.entry)?;
        Ok(())
    }

    /// Feeds stdin to the guest's serial port.
    pub fn connect_stdin(&self) -> Result<(), VmmError> {
        spawn_stdin_reader(self.serial.clone()).map_err(dev_err("serial input"))
    }

    /// Runs every vCPU on its own thread until the VM ends; joins them all.
    pub fn run(self) -> Result<ExitReason, VmmError> {
        register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| VmmError::Device {
            what: "the vCPU kick signal",
            err: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let Machine { vm, mem, buses, vcpus, exit, .. } = self;
        let buses = Arc::new(buses);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for vcpu in vcpus {
            let (b, e, s) = (buses.clone(), exit.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name("vcpu".into())
                .spawn(move || vcpu.run(&b, &e, &s));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    exit.request(ExitReason::VcpuError(threads.len() as u8, format!("cannot start thread: {e}")));
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
        drop(vm);
        drop(mem);
        Ok(reason)
    }
}

/// Routes config ports, ECAM and the BAR windows to the PCI bus.
fn add_pci_ranges(buses: &mut Buses, pci: &SharedPciBus, mem_size: u64) -> Result<(), VmmError> {
    let cfg_port = u64::from(pci::CONFIG_ADDRESS_PORT);
    buses.pio.insert(cfg_port, pci::CONFIG_PORTS_LEN as u64, Arc::new(Mutex::new(ConfigPorts(pci.clone()))))?;
    buses.mmio.insert(layout::ECAM_START, layout::ECAM_SIZE, Arc::new(Mutex::new(Ecam(pci.clone()))))?;
    let w = pci_glue::windows(mem_size);
    for (win, io) in [(w.mmio32, false), (w.mmio64, false), (w.io, true)] {
        if let Some(win) = win {
            let dev = BarWindow { bus: pci.clone(), base: win.base, io };
            let bus = if io { &mut buses.pio } else { &mut buses.mmio };
            bus.insert(win.base, win.size, Arc::new(Mutex::new(dev)))?;
        }
    }
    Ok(())
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Opens the serial console backend.
pub fn open_console(serial: &SerialConfig) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match serial {
        SerialConfig::Stdio => Box::new(std::io::stdout()),
        SerialConfig::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(dev_err("the serial output file"))?,
        ),
    })
}

/// Builds the VM described by `config`, boots Linux and runs it to the end.
pub fn run(config: &VmConfig) -> Result<ExitReason, VmmError> {
    let console = open_console(&config.serial)?;
    let mut machine = Machine::new(&config.memory, config.cpus, console)?;
    for (index, net) in config.net.iter().enumerate() {
        machine.add_net(net, index)?;
    }
    machine.load_linux(config)?;
    if config.serial == SerialConfig::Stdio {
        machine.connect_stdin()?;
    }
    machine.run()
}
