//! The one place a VM is assembled: [`build`] turns a validated
//! [`VmConfig`] into a [`Machine`] ready to run, in the order the pieces
//! depend on each other. First the checks that take nothing (passthrough
//! devices in sysfs, the RAM the host can give), then the console, the KVM
//! VM, the passthrough devices opened (their IOMMU decides the guest layout),
//! guest RAM (DMA-mapped for them), interrupt controllers, legacy devices,
//! the PCI bus with its devices, vCPUs, NICs, disks, vsock and the entropy
//! device; then BARs, the kernel and the boot tables. Disk images are opened
//! and locked, and the vsock socket bound, before /dev/kvm is opened: an image
//! in use by another VMM is refused first. `vmm.rs` runs the result and tears
//! it down.

use std::io::Write;
use std::sync::{Arc, Mutex};

use iommu::sysfs::Sysfs;
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{acpi, cpu, linux};
use crate::config::{
    ConfigError, DeviceConfig, KernelKind, MemoryConfig, NetConfig, PayloadConfig, PitConfig,
    SerialConfig, VmConfig,
};
use crate::devices::cmos::Cmos;
use crate::devices::ged::{self, GedEvents, GedRegister};
use crate::devices::legacy::{AcpiPm, ResetLine, I8042};
use crate::devices::pci_hotplug::{self, HotplugSlots, PciHotplugRegisters, PCI_HOTPLUG_PORT};
use crate::devices::pci_root::{self, BarWindow, ConfigPorts, Ecam, SharedPciBus};
use crate::devices::serial::{self, spawn_stdin_reader, ConsoleOut, SerialDevice};
use crate::devices::vfio::{CheckedDevices, VfioPassthrough, VfioSetupError};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{Vsock, VsockError};
use crate::devices::virtio::{self, BlkError, Block, NetError, RngError, TransportError};
use crate::devices::virtio::{VirtioDevice, VirtioPciDevice};
use crate::exit::ExitHandle;
use crate::hotplug::{Hotplug, HotplugParts};
use crate::layout;
use crate::memory;
use crate::vmm::Machine;
use crate::vstate::gate::RunGate;
use crate::vstate::irq::KvmInterruptManager;
use crate::vstate::vcpu::{Buses, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};

/// Errors while assembling the VM, each meant to be shown as is.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The kernel changed since the configuration was checked.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// The PCI bus could not be set up, take a device or place BARs.
    #[error("PCI: {0}")]
    Pci(#[from] pci::BusError),
    /// The interrupt routing could not be set up.
    #[error("cannot set up interrupt routing: {0}")]
    Interrupts(#[from] pci::InterruptError),
    /// A virtio-net NIC could not be created.
    #[error("NIC number {0} (tap {1}): {2}")]
    Net(usize, String, NetError),
    /// A disk image could not be opened, checked or locked, or its device built.
    #[error(transparent)]
    Disk(#[from] BlkError),
    /// The vsock device could not be created (its socket) or built.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// The virtio-rng device could not be created.
    #[error("virtio-rng: {0}")]
    Rng(#[from] RngError),
    /// A KVM irqfd could not be registered.
    #[error("cannot wire {what}'s interrupt: {err}")]
    Irq {
        /// Which device.
        what: &'static str,
        /// The ioctl's error.
        err: kvm_ioctls::Error,
    },
}

fn dev_err(what: &'static str) -> impl FnOnce(std::io::Error) -> BuildError {
    move |err| BuildError::Device { what, err }
}

fn lock(bus: &SharedPciBus) -> std::sync::MutexGuard<'_, pci::PciBus> {
    bus.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the VM `config` describes (already validated), reading passthrough
/// devices under `sysfs`: everything but running it.
pub fn build(config: &VmConfig, sysfs: &Sysfs) -> Result<Machine, BuildError> {
    // Checks that take nothing, so their errors come before /dev/kvm is opened.
    let checked = CheckedDevices::check(&config.devices, sysfs)?;
    memory::check_host_can_give(&config.memory)?;
    // Disk images opened and locked, the vsock socket bound: still before
    // /dev/kvm, so that an image in use or a live socket is refused first.
    let disks = config
        .disks
        .iter()
        .map(Block::new)
        .collect::<Result<Vec<_>, _>>()?;
    let vsock = config.vsock.as_ref();
    let vsock = vsock.map(|v| Vsock::new(v.cid, &v.socket)).transpose()?;
    let console = open_console(&config.serial)?;
    let mut machine = assemble(&config.memory, config.cpus, checked, console, sysfs)?;
    machine.set_pit(&config.pit)?;
    for (index, net) in config.net.iter().enumerate() {
        add_net(&mut machine, net, index)?;
    }
    for disk in disks {
        add_disk(&mut machine, disk)?;
    }
    if let Some(vsock) = vsock {
        add_virtio(&mut machine, Box::new(vsock), |e| {
            VsockError::Transport(e).into()
        })?;
    }
    if let Some(rng) = &config.rng {
        let rng = Rng::new(rng)?;
        add_virtio(&mut machine, Box::new(rng), |e| {
            RngError::Transport(e).into()
        })?;
    }
    load_linux(&mut machine, &config.payload)?;
    if config.serial == SerialConfig::Stdio {
        connect_stdin(&machine)?;
    }
    Ok(machine)
}

impl Machine {
    /// A machine without a kernel (tests load their own code): RAM laid out
    /// around the IOMMU of any `devices` (checked in the host's `/sys`), the
    /// irqchip, legacy devices with the serial port writing to `console`, the
    /// PCI bus with `devices` attached, and `cpus` configured vCPUs.
    pub fn new(
        memory: &MemoryConfig,
        cpus: u8,
        devices: Vec<DeviceConfig>,
        console: Box<dyn Write + Send>,
    ) -> Result<Self, BuildError> {
        let sysfs = Sysfs::new("/");
        let checked = CheckedDevices::check(&devices, &sysfs)?;
        assemble(memory, cpus, checked, Some(console), &sysfs)
    }

    /// Applies the PIT's settings (tick reinjection) to KVM's PIT.
    pub fn set_pit(&self, pit: &PitConfig) -> Result<(), BuildError> {
        Ok(self.vm.set_pit_reinject(pit.reinject)?)
    }
}

/// The serial console backend; `None` when the guest has no serial port.
fn open_console(serial: &SerialConfig) -> Result<Option<Box<dyn Write + Send>>, BuildError> {
    Ok(match serial {
        SerialConfig::Stdio => Some(Box::new(std::io::stdout())),
        SerialConfig::Null => Some(Box::new(std::io::sink())),
        SerialConfig::Off => None,
        SerialConfig::File(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(dev_err("the serial output file"))?,
        )),
    })
}

/// The KVM VM, passthrough devices, RAM, irqchip, legacy devices, the PCI bus
/// and the vCPUs, in the order VFIO needs: devices open before the guest
/// layout is planned, RAM DMA-mapped before the devices attach.
fn assemble(
    memory: &MemoryConfig,
    cpus: u8,
    checked: CheckedDevices,
    console: Option<Box<dyn Write + Send>>,
    sysfs: &Sysfs,
) -> Result<Machine, BuildError> {
    let vm = Vm::new()?;
    vm.check_cpus(cpus)?;
    let mut vfio = VfioPassthrough::open(vm.shared_fd(), checked)?;
    let guest_layout = vfio.plan_layout(memory.size)?;
    vfio.check_memlock(memory.size)?;
    let mem = memory::create_guest_memory(memory, &guest_layout.ram)?;
    vm.map_memory(&mem)?;
    vfio.map_guest_memory(&mem)?;
    vm.create_irqchip_and_pit()?;

    let exit = Arc::new(ExitHandle::new().map_err(dev_err("the exit event"))?);
    let mut buses = Buses::default();
    let serial = match console {
        Some(console) => Some(add_serial(&vm, &mut buses, &exit, console)?),
        None => None,
    };
    add_legacy_devices(&mut buses, &exit)?;
    let ged = add_ged(&vm, &mut buses)?;
    let pci = pci_root::new_bus(guest_layout.mmio64_base)?;
    add_pci_ranges(&mut buses, &pci, guest_layout.mmio64_base)?;
    let interrupts = Arc::new(KvmInterruptManager::new(vm.shared_fd())?);
    vfio.attach(&mut lock(&pci), interrupts.as_ref())?;
    let boot_removable = vfio.removable();
    let vfio = Arc::new(Mutex::new(vfio));
    let slots = add_hotplug_registers(&mut buses)?;
    let hotplug = Hotplug::new(
        HotplugParts {
            pci: pci.clone(),
            vm: vm.shared_fd(),
            vfio: vfio.clone(),
            interrupts: interrupts.clone(),
            mem: mem.clone(),
            layout: guest_layout.clone(),
            sysfs: sysfs.clone(),
            slots,
            ged: ged.clone(),
        },
        boot_removable,
    );
    let vcpus = create_vcpus(&vm, cpus)?;
    Ok(Machine {
        buses,
        vcpus,
        serial,
        pci,
        interrupts,
        vfio,
        hotplug,
        exit,
        gate: Arc::new(RunGate::new()),
        ged,
        vm,
        mem,
        layout: guest_layout,
    })
}

/// Adds virtio-net NIC number `index` on the bus's first free slot.
fn add_net(machine: &mut Machine, config: &NetConfig, index: usize) -> Result<(), BuildError> {
    let net_err = |e| BuildError::Net(index, config.tap.clone(), e);
    let address = lock(&machine.pci).free_address()?;
    let dev = virtio::new_net_pci(
        config,
        index,
        address,
        machine.mem.clone(),
        machine.interrupts.clone(),
        machine.vm.shared_fd(),
    )
    .map_err(net_err)?;
    lock(&machine.pci).add_device_at(address.device(), Box::new(dev))?;
    Ok(())
}

/// Adds a virtio-blk device on an image already opened and locked.
fn add_disk(machine: &mut Machine, disk: Block) -> Result<(), BuildError> {
    let path = disk.path().to_path_buf();
    add_virtio(machine, Box::new(disk), |source| {
        BlkError::Transport { path, source }.into()
    })
}

/// Adds `device` behind the virtio PCI transport on the bus's first free
/// slot; `transport_err` says which device a transport failure is about.
fn add_virtio(
    machine: &mut Machine,
    device: Box<dyn VirtioDevice>,
    transport_err: impl FnOnce(TransportError) -> BuildError,
) -> Result<(), BuildError> {
    let address = lock(&machine.pci).free_address()?;
    let dev = VirtioPciDevice::new(
        device,
        address,
        machine.mem.clone(),
        machine.interrupts.as_ref(),
        machine.vm.shared_fd(),
    )
    .map_err(transport_err)?;
    lock(&machine.pci).add_device_at(address.device(), Box::new(dev))?;
    Ok(())
}

/// Places every BAR (as firmware would), loads Linux and writes the boot
/// tables; the boot vCPU starts at the kernel's 64-bit entry (bzImage) or
/// its PVH entry (vmlinux).
fn load_linux(machine: &mut Machine, payload: &PayloadConfig) -> Result<(), BuildError> {
    let placements = lock(&machine.pci).assign_bars()?;
    for p in &placements {
        log::info!(
            "PCI {} BAR {} at {:#x} size {:#x}",
            p.address,
            p.bar,
            p.base,
            p.def.size
        );
    }
    let removable = {
        let vfio = machine.vfio.lock().unwrap_or_else(|p| p.into_inner());
        vfio.bars_assigned(&placements)?;
        vfio.removable()
    };
    let load = match payload.kernel_kind()? {
        KernelKind::BzImage => linux::load,
        KernelKind::PvhElf => linux::load_pvh,
    };
    let kernel = load(
        &machine.mem,
        &machine.layout.ram,
        &payload.kernel,
        payload.initramfs.as_deref(),
        &payload.cmdline,
    )?;
    cpu::write_boot_tables(&machine.mem, kernel.entry)?;
    let mut dsdt = Vec::new();
    if machine.serial.is_some() {
        dsdt.extend(serial::dsdt_aml());
    }
    dsdt.extend(ged::dsdt_aml());
    dsdt.extend(pci_root::dsdt_aml(machine.layout.mmio64_base));
    // Boot devices the API cannot remove get no _EJ0: the guest cannot
    // eject them by accident.
    let fixed = lock(&machine.pci)
        .addresses()
        .iter()
        .map(|a| a.device())
        .filter(|slot| removable.iter().all(|(_, s)| s != slot))
        .fold(0u32, |bits, slot| bits | (1 << slot));
    dsdt.extend(pci_hotplug::dsdt_aml(fixed));
    let inputs = acpi::AcpiInputs {
        cpus: machine.vcpus.len() as u8,
        dsdt_devices: &dsdt,
        extra_tables: vec![pci_root::mcfg()],
    };
    acpi::write_tables(&machine.mem, &inputs)?;
    machine.vcpus[0].set_boot_entry(kernel.entry)?;
    Ok(())
}

/// Feeds stdin to the guest's serial port.
fn connect_stdin(machine: &Machine) -> Result<(), BuildError> {
    match &machine.serial {
        Some(serial) => spawn_stdin_reader(serial.clone()).map_err(dev_err("serial input")),
        None => Ok(()),
    }
}

/// COM1, its IRQ through an irqfd, writing to `console`.
fn add_serial(
    vm: &Vm,
    buses: &mut Buses,
    exit: &Arc<ExitHandle>,
    console: Box<dyn Write + Send>,
) -> Result<Arc<Mutex<SerialDevice>>, BuildError> {
    let irq = EventFd::new(0).map_err(dev_err("the serial port"))?;
    vm.fd()
        .register_irqfd(&irq, layout::SERIAL_IRQ)
        .map_err(|err| BuildError::Irq {
            what: "the serial port",
            err,
        })?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq,
        ConsoleOut::new(console, exit.clone()),
    )));
    buses
        .pio
        .insert(u64::from(layout::SERIAL_PORT), 8, serial.clone())?;
    Ok(serial)
}

/// The i8042, the CMOS clock and the ACPI power registers.
fn add_legacy_devices(buses: &mut Buses, exit: &Arc<ExitHandle>) -> Result<(), BuildError> {
    let pio = &mut buses.pio;
    pio.insert(
        u64::from(layout::I8042_PORT),
        5,
        Arc::new(Mutex::new(I8042(I8042Device::new(ResetLine(exit.clone()))))),
    )?;
    pio.insert(
        u64::from(layout::CMOS_PORT),
        2,
        Arc::new(Mutex::new(Cmos::default())),
    )?;
    pio.insert(
        u64::from(layout::ACPI_SLEEP_CONTROL_PORT),
        AcpiPm::PORTS,
        Arc::new(Mutex::new(AcpiPm::new(exit.clone()))),
    )?;
    Ok(())
}

/// The ACPI GED (power button): its register and its interrupt's irqfd.
fn add_ged(vm: &Vm, buses: &mut Buses) -> Result<Arc<GedEvents>, BuildError> {
    let irq = EventFd::new(0).map_err(dev_err("the ACPI event device"))?;
    vm.fd()
        .register_irqfd(&irq, layout::GED_IRQ)
        .map_err(|err| BuildError::Irq {
            what: "the ACPI event device",
            err,
        })?;
    let events = Arc::new(GedEvents::new(irq));
    buses.pio.insert(
        u64::from(layout::GED_PORT),
        GedRegister::PORTS,
        Arc::new(Mutex::new(GedRegister(events.clone()))),
    )?;
    Ok(events)
}

/// The ACPI PCI hotplug registers (which slots changed, ejects).
fn add_hotplug_registers(buses: &mut Buses) -> Result<Arc<HotplugSlots>, BuildError> {
    let slots = Arc::new(HotplugSlots::default());
    buses.pio.insert(
        u64::from(PCI_HOTPLUG_PORT),
        PciHotplugRegisters::PORTS,
        Arc::new(Mutex::new(PciHotplugRegisters(slots.clone()))),
    )?;
    Ok(slots)
}

/// Routes config ports, ECAM and the BAR windows to the PCI bus.
fn add_pci_ranges(
    buses: &mut Buses,
    pci: &SharedPciBus,
    mmio64_base: u64,
) -> Result<(), BuildError> {
    let cfg_port = u64::from(pci::CONFIG_ADDRESS_PORT);
    buses.pio.insert(
        cfg_port,
        pci::CONFIG_PORTS_LEN as u64,
        Arc::new(Mutex::new(ConfigPorts(pci.clone()))),
    )?;
    buses.mmio.insert(
        layout::ECAM_START,
        layout::ECAM_SIZE,
        Arc::new(Mutex::new(Ecam(pci.clone()))),
    )?;
    let w = pci_root::windows(mmio64_base);
    for (win, io) in [(w.mmio32, false), (w.mmio64, false), (w.io, true)] {
        if let Some(win) = win {
            let dev = BarWindow {
                bus: pci.clone(),
                base: win.base,
                io,
            };
            let bus = if io { &mut buses.pio } else { &mut buses.mmio };
            bus.insert(win.base, win.size, Arc::new(Mutex::new(dev)))?;
        }
    }
    Ok(())
}

fn create_vcpus(vm: &Vm, cpus: u8) -> Result<Vec<Vcpu>, BuildError> {
    let supported = vm.supported_cpuid()?;
    let vcpus = (0..cpus)
        .map(|id| {
            let vcpu = Vcpu::new(vm, id)?;
            vcpu.configure(&supported, cpus)?;
            Ok(vcpu)
        })
        .collect::<Result<Vec<_>, VcpuError>>()?;
    Ok(vcpus)
}
