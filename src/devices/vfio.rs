//! PCI passthrough glue: the devices of [`crate::config::DeviceConfig`]
//! become VFIO devices on the PCI bus. This file owns the KVM side of it (BAR
//! mappings as KVM memory slots from slot 16 up, [`KvmBarMapper`] in
//! `vfio/kvm.rs`), the adapter that lets the pci crate's device logic drive a
//! real VFIO device ([`VfioAdapter`] in `vfio/adapter.rs`), and
//! [`VfioPassthrough`], which runs the steps in the order the VMM needs them
//! and releases everything in order at exit.
//!
//! Calls, in order (all before the guest starts, except the last two):
//! 0. [`CheckedDevices::check`] before anything is opened (even /dev/kvm):
//!    the sysfs checks of every device;
//! 1. [`VfioPassthrough::open`] once the KVM VM exists and before guest RAM
//!    is laid out: container, devices, IOVA limits;
//! 2. [`VfioPassthrough::plan_layout`] for RAM regions and the 64-bit window;
//! 3. [`VfioPassthrough::check_memlock`] before allocating RAM;
//! 4. [`VfioPassthrough::map_guest_memory`] once RAM exists;
//! 5. [`VfioPassthrough::attach`] once the PCI bus exists, before `assign_bars`;
//! 6. [`VfioPassthrough::bars_assigned`] with what `assign_bars` returned;
//! 7. at exit, after the vCPUs stopped: [`VfioPassthrough::report`], then
//!    [`VfioPassthrough::shutdown`] (also run on drop), before guest RAM is dropped.

use std::sync::Arc;

use iommu::size::format_size;
use iommu::sysfs::Sysfs;
use iommu::vfio::{
    preflight, Container, ContainerError, DeviceHandle, GuestLayout, IovaConstraints, LayoutError,
    LayoutRequest, MemlockError, PlannedDevice, PreflightError,
};
use iommu::Bdf;
use kvm_ioctls::VmFd;
use log::{info, warn};
use pci::vfio::{
    AttachContext, BarHandle, MapError, VfioDeviceOps, VfioPciDevice, VfioPciError, VfioPciOptions,
    VfioStats,
};
use pci::{BarPlacement, BusError, InterruptManager, PciAddress, PciBus};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::config::DeviceConfig;
use crate::layout;
use crate::memory::GuestMemory;

mod adapter;
mod hot;
mod kvm;

pub use adapter::VfioAdapter;
pub use hot::HotAddContext;
pub use kvm::{KvmBarMapper, FIRST_BAR_SLOT};

/// Alignment of the 64-bit PCI window.
pub const MMIO64_ALIGN: u64 = 1 << 30;
/// Guest RAM that must be usable from address 0 (boot structures, kernel, initrd).
const MIN_LOW_RAM: u64 = 64 << 20;
/// Granule of RAM regions (keeps 2 MiB huge pages usable).
const RAM_GRANULE: u64 = 2 << 20;

/// Errors setting up passthrough, each meant to be shown as is.
#[derive(Debug, thiserror::Error)]
pub enum VfioSetupError {
    /// A sysfs check failed.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The container or a device could not be opened.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Reserved regions could not be read.
    #[error(transparent)]
    Iova(#[from] iommu::vfio::IovaError),
    /// No guest layout fits the IOMMU.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Guest RAM cannot be pinned.
    #[error(transparent)]
    Memlock(#[from] MemlockError),
    /// The device could not be attached.
    #[error(transparent)]
    Device(#[from] VfioPciError),
    /// A BAR does not fit the PCI windows.
    #[error("{bdf}: BAR {bar} needs {} but the {window} has {}: this device cannot be passed through with the current windows", format_size(*size), format_size(*window_size))]
    BarTooLarge {
        /// Host device.
        bdf: Bdf,
        /// BAR index.
        bar: usize,
        /// BAR size.
        size: u64,
        /// Which window.
        window: pci::WindowKind,
        /// Its size.
        window_size: u64,
    },
    /// The PCI bus refused the device.
    #[error("{bdf}: cannot add to the PCI bus: {source}")]
    Bus {
        /// Host device.
        bdf: Bdf,
        /// The bus's error.
        #[source]
        source: BusError,
    },
    /// A hot-added device is in this VM already.
    #[error("{0} is assigned to this VM already")]
    AlreadyAssigned(Bdf),
    /// Internal: a hot-added device found no container.
    #[error("no VFIO container to open the device in")]
    NoContainer,
    /// The device's IOMMU forbids addresses the running guest uses.
    #[error("{bdf}: its IOMMU cannot reach guest addresses {start:#x}+{size:#x} ({range}: {why}); the running VM's layout cannot change: boot the VM with this device instead")]
    LayoutConflict {
        /// Host device.
        bdf: Bdf,
        /// Start of the guest range in conflict.
        start: u64,
        /// Its size.
        size: u64,
        /// The forbidden IOVA range.
        range: String,
        /// Why it is forbidden.
        why: String,
    },
    /// A BAR could not be mapped where it was assigned.
    #[error("{bdf}: cannot map BAR {bar} at {base:#x}")]
    BarMap {
        /// Host device.
        bdf: Bdf,
        /// BAR index.
        bar: usize,
        /// Guest base.
        base: u64,
        /// The mapper's error.
        #[source]
        source: MapError,
    },
}

/// Devices that passed the sysfs checks, not yet opened.
pub struct CheckedDevices {
    /// What the user asked for, in order.
    specs: Vec<DeviceConfig>,
    /// The devices with their groups, parallel to `specs`.
    planned: Vec<PlannedDevice>,
    /// The tree they were checked in (IOVA reserved regions are read there too).
    sysfs: Sysfs,
}

impl CheckedDevices {
    /// Step 0: checks every device from sysfs (under `sysfs`, `/` on a real
    /// host): IOMMU, device, driver, group viability, group node, holders.
    /// Opens nothing.
    pub fn check(specs: &[DeviceConfig], sysfs: &Sysfs) -> Result<Self, VfioSetupError> {
        let bdfs: Vec<Bdf> = specs.iter().map(|s| s.bdf).collect();
        Ok(CheckedDevices {
            planned: preflight(sysfs, &bdfs)?,
            specs: specs.to_vec(),
            sysfs: sysfs.clone(),
        })
    }
}

/// A device on the bus.
struct Attached {
    /// Host address.
    bdf: Bdf,
    /// Guest address.
    address: PciAddress,
    /// Its BAR mappings.
    bars: BarHandle,
    /// Its counters.
    stats: Arc<VfioStats>,
}

/// All passed-through devices of a VM and their container.
///
/// Fields drop in order: devices close before their groups leave the
/// container (the kernel refuses to unset a container with open devices).
pub struct VfioPassthrough {
    /// What the user asked for, in order.
    specs: Vec<DeviceConfig>,
    /// Checked devices with their groups.
    planned: Vec<PlannedDevice>,
    /// Devices on the bus.
    attached: Vec<Attached>,
    /// Open devices, parallel to `planned`.
    handles: Vec<Arc<DeviceHandle>>,
    /// The container (`None` without devices).
    container: Option<Container>,
    /// The IOMMU's limits on guest addresses.
    constraints: IovaConstraints,
    /// BAR slot maker.
    mapper: Arc<KvmBarMapper>,
    /// Whether shutdown ran.
    released: bool,
    /// The KVM VM, for a container created by a hot-added device.
    vm: Arc<VmFd>,
}

impl VfioPassthrough {
    /// Step 1: creates KVM's VFIO device and the container, opens the
    /// checked devices and reads the IOVA limits. With no devices nothing is opened.
    pub fn open(vm: Arc<VmFd>, checked: CheckedDevices) -> Result<Self, VfioSetupError> {
        let CheckedDevices {
            specs,
            planned,
            sysfs,
        } = checked;
        let mut this = VfioPassthrough {
            specs,
            planned,
            container: None,
            handles: Vec::new(),
            constraints: IovaConstraints::default(),
            attached: Vec::new(),
            mapper: Arc::new(KvmBarMapper::new(Arc::clone(&vm))),
            released: false,
            vm: Arc::clone(&vm),
        };
        if this.planned.is_empty() {
            return Ok(this);
        }
        let container = Container::new(&vm)?;
        for p in &this.planned {
            this.handles.push(Arc::new(container.open_device(p)?));
        }
        let mut groups: Vec<u32> = this.planned.iter().map(|p| p.group).collect();
        groups.dedup();
        for group in groups {
            this.constraints
                .reserved
                .extend(iommu::vfio::iova::reserved_regions(&sysfs, group)?);
        }
        this.constraints.valid = container.iova_ranges()?;
        this.container = Some(container);
        Ok(this)
    }

    /// Whether no device is passed through.
    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    /// The IOMMU's limits on guest addresses.
    pub fn constraints(&self) -> &IovaConstraints {
        &self.constraints
    }

    /// Step 2: RAM regions and the 64-bit window base for `mem_size` bytes
    /// of RAM, kept inside the IOMMU's usable addresses (without devices:
    /// the usual layout). Use `ram` for guest memory and the E820 map.
    pub fn plan_layout(&self, mem_size: u64) -> Result<GuestLayout, VfioSetupError> {
        let request = LayoutRequest {
            ram_size: mem_size,
            low_ram_limit: layout::MMIO_HOLE_START,
            high_ram_start: layout::FOUR_GIB,
            fixed: vec![
                (
                    "32-bit PCI window".to_string(),
                    layout::PCI_MMIO32_START,
                    layout::PCI_MMIO32_SIZE,
                ),
                (
                    "PCIe ECAM window".to_string(),
                    layout::ECAM_START,
                    layout::ECAM_SIZE,
                ),
            ],
            mmio64_size: layout::PCI_MMIO64_SIZE,
            mmio64_align: MMIO64_ALIGN,
            granule: RAM_GRANULE,
            min_low_ram: MIN_LOW_RAM,
        };
        Ok(iommu::vfio::plan(&self.constraints, &request)?)
    }

    /// Step 3: refuses to start when RLIMIT_MEMLOCK cannot cover `ram_bytes`.
    pub fn check_memlock(&self, ram_bytes: u64) -> Result<(), VfioSetupError> {
        if self.is_empty() {
            return Ok(());
        }
        Ok(iommu::vfio::memlock::check(ram_bytes)?)
    }

    /// Step 4: maps every RAM region for DMA at IOVA = guest physical
    /// address. `mem` must outlive [`VfioPassthrough::shutdown`].
    pub fn map_guest_memory(&self, mem: &GuestMemory) -> Result<(), VfioSetupError> {
        let Some(container) = &self.container else {
            return Ok(());
        };
        for region in mem.iter() {
            // SAFETY: the region is a live mapping owned by `mem`, which the
            // VMM keeps until after `shutdown` unmaps it (documented above);
            // guest memory is only accessed through vm-memory's volatile
            // copies, never through references the device could race with.
            unsafe {
                container.map_dma(region.start_addr().0, region.len(), region.as_ptr() as u64)
            }?;
        }
        info!(
            "vfio: {} of guest RAM mapped for DMA",
            format_size(container.mapped_bytes())
        );
        Ok(())
    }

    /// Step 5: puts each device on `bus` (first free slots, in `--device`
    /// order) with interrupts from `irqs`; returns their guest addresses.
    pub fn attach(
        &mut self,
        bus: &mut PciBus,
        irqs: &dyn InterruptManager,
    ) -> Result<Vec<PciAddress>, VfioSetupError> {
        (0..self.handles.len())
            .map(|index| self.attach_one(index, bus, irqs))
            .collect()
    }

    /// Puts opened device number `index` on the first free slot of `bus`.
    fn attach_one(
        &mut self,
        index: usize,
        bus: &mut PciBus,
        irqs: &dyn InterruptManager,
    ) -> Result<PciAddress, VfioSetupError> {
        let (handle, spec) = (&self.handles[index], &self.specs[index]);
        let bus_err = |source| VfioSetupError::Bus {
            bdf: spec.bdf,
            source,
        };
        let address = bus.free_address().map_err(bus_err)?;
        let ops: Arc<dyn VfioDeviceOps> = Arc::new(VfioAdapter(Arc::clone(handle)));
        let device = VfioPciDevice::attach(
            ops,
            AttachContext {
                name: spec.bdf.to_string(),
                address,
                interrupts: irqs,
                mapper: self.mapper.clone(),
                options: VfioPciOptions {
                    rombar: spec.rombar,
                },
            },
        )?;
        check_bars_fit(bus, &device, spec.bdf)?;
        let attached = Attached {
            bdf: spec.bdf,
            address,
            bars: device.bar_handle(),
            stats: device.stats(),
        };
        bus.add_device_at(address.device(), Box::new(device))
            .map_err(bus_err)?;
        info!("vfio: {} is {address} in the guest", spec.bdf);
        self.attached.push(attached);
        Ok(address)
    }

    /// Step 6: maps the BARs where `PciBus::assign_bars` placed them (it
    /// programs config space without telling devices). Later moves by the
    /// guest reach the devices through `PciDevice::move_bar`.
    pub fn bars_assigned(&self, placements: &[BarPlacement]) -> Result<(), VfioSetupError> {
        for p in placements {
            if let Some(dev) = self.attached.iter().find(|a| a.address == p.address) {
                dev.bars
                    .place(p.bar, p.base)
                    .map_err(|source| VfioSetupError::BarMap {
                        bdf: dev.bdf,
                        bar: p.bar,
                        base: p.base,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Per-device counters for the exit summary: trapped accesses per BAR
    /// and interrupts relayed by this process (both zero when all is direct).
    pub fn report(&self) -> String {
        self.attached
            .iter()
            .map(|a| a.stats.report(&a.bdf.to_string()))
            .collect()
    }

    /// The live counters of each attached device, by host address, to read
    /// while the VM runs (the control API's `vm.counters`).
    pub fn stats(&self) -> Vec<(String, Arc<VfioStats>)> {
        self.attached
            .iter()
            .map(|a| (a.bdf.to_string(), a.stats.clone()))
            .collect()
    }

    /// Step 7: interrupts off and reset for every device, then DMA unmapped.
    /// Call after the vCPUs stopped and before guest RAM is dropped; the
    /// device files close when the bus (and this value) are dropped, after
    /// which another VM can take the devices at once. Idempotent.
    pub fn shutdown(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        for handle in &self.handles {
            handle.release();
        }
        if let Some(container) = &self.container {
            if let Err(e) = container.unmap_all() {
                warn!("vfio: {e}");
            }
        }
    }
}

impl Drop for VfioPassthrough {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Refuses a device whose BAR is larger than the window it would go in,
/// naming the host device (the bus would only name the guest slot).
fn check_bars_fit(bus: &PciBus, device: &VfioPciDevice, bdf: Bdf) -> Result<(), VfioSetupError> {
    use pci::PciDevice;
    let windows = bus.windows();
    for (bar, def) in device.config().bars() {
        let window = windows.window_for(def.kind);
        let window_size = windows.get(window).map_or(0, |w| w.size);
        if def.size > window_size {
            return Err(VfioSetupError::BarTooLarge {
                bdf,
                bar,
                size: def.size,
                window,
                window_size,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
    fn without_devices_nothing_is_opened_and_the_layout_is_the_usual_one() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
        let vm = kvm.create_vm().expect("cannot create a KVM VM");
        let checked = CheckedDevices::check(&[], &Sysfs::new("/nonexistent")).unwrap();
        let vfio = VfioPassthrough::open(Arc::new(vm), checked).unwrap();
        assert!(vfio.is_empty());
        let l = vfio.plan_layout(5 << 30).unwrap();
        assert_eq!(l.ram, layout::ram_regions(5 << 30));
        assert_eq!(l.mmio64_base, 6 << 30);
        vfio.check_memlock(u64::MAX).unwrap();
        assert_eq!(vfio.report(), "");
    }
}
