//! Building a [`Machine`] from its configuration, in the order the pieces
//! depend on each other: KVM VM, passthrough devices (their IOMMU decides the
//! guest layout), guest RAM, interrupt controllers, legacy devices, the PCI
//! bus with its devices, vCPUs; then the kernel and boot tables.

use std::io::Write;
use std::sync::{Arc, Mutex};

use iommu::sysfs::Sysfs;
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{acpi, cpu, linux};
use crate::config::{MemoryConfig, VmConfig};
use crate::devices::cmos::Cmos;
use crate::devices::legacy::{AcpiPm, ResetLine, I8042};
use crate::devices::pci_root::{self, BarWindow, ConfigPorts, Ecam, SharedPciBus};
use crate::devices::serial::{self, ConsoleOut, SerialDevice};
use crate::devices::vfio::{VfioDeviceSpec, VfioPassthrough};
use crate::devices::virtio::{self, NetConfig};
use crate::exit::ExitHandle;
use crate::layout;
use crate::memory;
use crate::vmm::{Machine, VmmError};
use crate::vstate::irq::KvmInterruptManager;
use crate::vstate::vcpu::{Buses, Vcpu, VcpuError};
use crate::vstate::vm::Vm;

fn dev_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |err| VmmError::Device { what, err }
}

fn lock(bus: &SharedPciBus) -> std::sync::MutexGuard<'_, pci::PciBus> {
    bus.lock().unwrap_or_else(|p| p.into_inner())
}

impl Machine {
    /// Creates the VM: RAM laid out around the IOMMU of any `devices`, the
    /// irqchip, legacy devices, the PCI bus with `devices` attached, and
    /// `cpus` configured vCPUs.
    pub fn new(
        memory: &MemoryConfig,
        cpus: u8,
        devices: Vec<VfioDeviceSpec>,
        console: Box<dyn Write + Send>,
    ) -> Result<Self, VmmError> {
        let vm = Vm::new()?;
        vm.check_cpus(cpus)?;
        let mut vfio = VfioPassthrough::open(vm.shared_fd(), devices, &Sysfs::new("/"))?;
        let guest_layout = vfio.plan_layout(memory.size)?;
        vfio.check_memlock(memory.size)?;
        let mem = memory::create_guest_memory(memory, &guest_layout.ram)?;
        vm.map_memory(&mem)?;
        vfio.map_guest_memory(&mem)?;
        vm.create_irqchip_and_pit()?;

        let exit = Arc::new(ExitHandle::new().map_err(dev_err("the exit event"))?);
        let mut buses = Buses::default();
        let serial = add_legacy_devices(&vm, &mut buses, &exit, console)?;
        let pci = pci_root::new_bus(guest_layout.mmio64_base)?;
        add_pci_ranges(&mut buses, &pci, guest_layout.mmio64_base)?;
        let interrupts = Arc::new(KvmInterruptManager::new(vm.shared_fd())?);
        vfio.attach(&mut lock(&pci), interrupts.as_ref())?;
        let vcpus = create_vcpus(&vm, cpus)?;
        Ok(Machine {
            buses,
            vcpus,
            serial,
            pci,
            interrupts,
            vfio,
            exit,
            vm,
            mem,
            layout: guest_layout,
        })
    }

    /// A free slot on bus 0 (slot 0 is the host bridge).
    fn free_pci_address(&self) -> Result<pci::PciAddress, VmmError> {
        let used = lock(&self.pci).addresses();
        (1..32u8)
            .find(|d| !used.iter().any(|a| a.device() == *d))
            .and_then(|slot| pci::PciAddress::new(0, slot, 0).ok())
            .ok_or(VmmError::BusFull)
    }

    /// Adds virtio-net NIC number `index` on the next free slot.
    pub fn add_net(&mut self, config: &NetConfig, index: usize) -> Result<(), VmmError> {
        let address = self.free_pci_address()?;
        let dev = virtio::new_net_pci(
            config,
            index,
            address,
            self.mem.clone(),
            self.interrupts.clone(),
            self.vm.shared_fd(),
        )
        .map_err(|e| VmmError::Net(index, e))?;
        lock(&self.pci).add_device_at(address.device(), Box::new(dev))?;
        Ok(())
    }

    /// Places every BAR (as firmware would), loads Linux and writes the boot
    /// tables; the boot vCPU starts at the kernel's 64-bit entry.
    pub fn load_linux(&mut self, config: &VmConfig) -> Result<(), VmmError> {
        let placements = lock(&self.pci).assign_bars()?;
        for p in &placements {
            log::info!(
                "PCI {} BAR {} at {:#x} size {:#x}",
                p.address,
                p.bar,
                p.base,
                p.def.size
            );
        }
        self.vfio.bars_assigned(&placements)?;
        let kernel = linux::load(
            &self.mem,
            &self.layout.ram,
            &config.kernel,
            config.initramfs.as_deref(),
            &config.cmdline,
        )?;
        cpu::write_boot_tables(&self.mem)?;
        let mut dsdt = serial::dsdt_aml();
        dsdt.extend(pci_root::dsdt_aml(self.layout.mmio64_base));
        let inputs = acpi::AcpiInputs {
            cpus: self.vcpus.len() as u8,
            dsdt_devices: &dsdt,
            extra_tables: vec![pci_root::mcfg()],
        };
        acpi::write_tables(&self.mem, &inputs)?;
        self.vcpus[0].set_boot_entry(kernel.entry)?;
        Ok(())
    }
}

/// COM1 (its IRQ through an irqfd), the i8042, the CMOS clock and the ACPI power registers.
fn add_legacy_devices(
    vm: &Vm,
    buses: &mut Buses,
    exit: &Arc<ExitHandle>,
    console: Box<dyn Write + Send>,
) -> Result<Arc<Mutex<SerialDevice>>, VmmError> {
    let irq = EventFd::new(0).map_err(dev_err("the serial port"))?;
    vm.fd()
        .register_irqfd(&irq, layout::SERIAL_IRQ)
        .map_err(|err| VmmError::Irq {
            what: "the serial port",
            err,
        })?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq,
        ConsoleOut::new(console, exit.clone()),
    )));
    let pio = &mut buses.pio;
    pio.insert(u64::from(layout::SERIAL_PORT), 8, serial.clone())?;
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
    Ok(serial)
}

/// Routes config ports, ECAM and the BAR windows to the PCI bus.
fn add_pci_ranges(buses: &mut Buses, pci: &SharedPciBus, mmio64_base: u64) -> Result<(), VmmError> {
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

fn create_vcpus(vm: &Vm, cpus: u8) -> Result<Vec<Vcpu>, VmmError> {
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
