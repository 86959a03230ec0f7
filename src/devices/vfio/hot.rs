//! Passthrough devices added and removed while the guest runs: a device
//! joins the VM's container (whose DMA mappings already cover guest RAM) or,
//! in a VM that has none, creates it, checks memlock and the IOMMU's limits
//! against the layout the guest already has, and maps RAM; it is attached
//! as at boot ([`VfioPassthrough::attach_one`]) and its BARs are placed and
//! mapped. Removal releases in order: VFIO interrupts off and device reset,
//! then the device's irqfds, GSI routes, MSI-X state and KVM slots (dropped
//! with it), then the group leaves the container if it was its last device
//! (RAM unmapped first; the container stays for the next device).

use std::sync::{Arc, Mutex};

use iommu::sysfs::Sysfs;
use iommu::vfio::{Container, GuestLayout, IovaConstraints, PlannedDevice};
use log::{info, warn};
use pci::{InterruptManager, PciAddress, PciBus, PciDevice};

use super::{VfioPassthrough, VfioSetupError};
use crate::config::DeviceConfig;
use crate::layout;
use crate::memory::GuestMemory;

/// What a hot-added device needs from the running VM.
pub struct HotAddContext<'a> {
    /// Where the device's IOMMU group's reserved regions are read.
    pub sysfs: &'a Sysfs,
    /// Guest RAM (DMA-mapped if the VM had no container yet).
    pub mem: &'a GuestMemory,
    /// The layout the guest runs with.
    pub layout: &'a GuestLayout,
    /// Interrupts for the device.
    pub irqs: &'a dyn InterruptManager,
}

impl VfioPassthrough {
    /// Opens `planned` (checked in sysfs) in the container, creating it if
    /// the VM has none, and puts it on `bus` with its BARs placed and
    /// mapped. On error the VM is as before. Returns the guest address.
    /// `bus` is locked only to put the device on it: opening the device and
    /// mapping RAM happen while the vCPUs use the bus.
    pub fn hot_add(
        &mut self,
        spec: &DeviceConfig,
        planned: PlannedDevice,
        bus: &Mutex<PciBus>,
        ctx: &HotAddContext,
    ) -> Result<PciAddress, VfioSetupError> {
        if self.planned.iter().any(|p| p.bdf == planned.bdf) {
            return Err(VfioSetupError::AlreadyAssigned(planned.bdf));
        }
        if self.container.is_none() {
            self.container = Some(Container::new(&self.vm)?);
            self.released = false;
        }
        let keep = self.handles.len();
        // The bus (which the vCPUs use) is locked only to put the device on it.
        let result = self.open_and_check(spec, planned, ctx).and_then(|()| {
            let mut bus = bus.lock().unwrap_or_else(|p| p.into_inner());
            self.place_new(&mut bus, ctx.irqs)
        });
        if result.is_err() {
            self.undo_to(keep);
        }
        result
    }

    /// Opens the device, checks the guest layout against its IOMMU group and,
    /// for a new container, memlock and the DMA mapping of RAM. Pushes it.
    fn open_and_check(
        &mut self,
        spec: &DeviceConfig,
        planned: PlannedDevice,
        ctx: &HotAddContext,
    ) -> Result<(), VfioSetupError> {
        let Some(container) = &self.container else {
            return Err(VfioSetupError::NoContainer);
        };
        let fresh = self.handles.is_empty();
        let handle = Arc::new(container.open_device(&planned)?);
        let mut constraints = IovaConstraints {
            valid: container.iova_ranges()?,
            reserved: self.constraints.reserved.clone(),
        };
        constraints
            .reserved
            .extend(iommu::vfio::iova::reserved_regions(
                ctx.sysfs,
                planned.group,
            )?);
        let fixed = [
            (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE),
            (layout::ECAM_START, layout::ECAM_SIZE),
        ];
        for &(start, size) in ctx.layout.ram.iter().chain(&fixed) {
            if let Some((range, why)) = constraints.conflict(start, size) {
                return Err(VfioSetupError::LayoutConflict {
                    bdf: planned.bdf,
                    start,
                    size,
                    range: format!("{:#x}..{:#x}", range.start, range.end),
                    why,
                });
            }
        }
        self.specs.push(spec.clone());
        self.planned.push(planned);
        self.handles.push(handle);
        self.constraints = constraints;
        if fresh {
            let ram: u64 = ctx.layout.ram.iter().map(|r| r.1).sum();
            self.check_memlock(ram)?;
            self.map_guest_memory(ctx.mem)?;
        }
        Ok(())
    }

    /// Attaches the last opened device and maps its BARs where the bus put them.
    fn place_new(
        &mut self,
        bus: &mut PciBus,
        irqs: &dyn InterruptManager,
    ) -> Result<PciAddress, VfioSetupError> {
        let index = self.handles.len() - 1;
        let address = self.attach_one(index, bus, irqs)?;
        let placed = match bus.assign_bars() {
            Ok(placements) => self.bars_assigned(&placements),
            Err(source) => Err(VfioSetupError::Bus {
                bdf: self.specs[index].bdf,
                source,
            }),
        };
        if let Err(e) = placed {
            drop(bus.remove_device(address.device()));
            self.attached.retain(|a| a.address != address);
            return Err(e);
        }
        Ok(address)
    }

    /// Undoes a failed [`VfioPassthrough::hot_add`]: devices opened past
    /// the first `keep` are released and closed, and the container goes if
    /// no device is left in it.
    fn undo_to(&mut self, keep: usize) {
        while self.handles.len() > keep {
            self.specs.pop();
            self.planned.pop();
            if let Some(handle) = self.handles.pop() {
                handle.release();
            }
        }
        if self.handles.is_empty() {
            self.unmap_ram();
        }
    }

    /// Unmaps RAM once no device is left in the container. The container
    /// (and KVM's VFIO device, of which KVM allows one per VM, destroyed
    /// only with the VM) stays for the next device, which maps RAM again:
    /// the IOMMU's mappings go with the last group that leaves.
    fn unmap_ram(&mut self) {
        if let Some(container) = &self.container {
            if let Err(e) = container.unmap_all() {
                warn!("vfio: {e}");
            }
        }
        self.constraints = IovaConstraints::default();
    }

    /// Removes the device at `address`, already taken off the bus as
    /// `device`: VFIO interrupts off and reset, then its KVM state dropped,
    /// then its group leaves the container if it was the last device (RAM
    /// unmapped first, the container kept). Returns the host
    /// address, or `None` when `address` is not a passthrough device.
    pub fn hot_remove(
        &mut self,
        address: PciAddress,
        device: Box<dyn PciDevice>,
    ) -> Option<iommu::Bdf> {
        let at = self.attached.iter().position(|a| a.address == address)?;
        let attached = self.attached.remove(at);
        let bdf = attached.bdf;
        let index = self.planned.iter().position(|p| p.bdf == bdf)?;
        let handle = self.handles.remove(index);
        self.specs.remove(index);
        self.planned.remove(index);
        handle.release();
        // irqfds, GSI routes and MSI-X state go with the device, KVM slots
        // with the last handle on its BAR mappings.
        drop(device);
        drop(attached);
        if self.handles.is_empty() {
            self.unmap_ram();
        }
        // The adapter's reference went with the device: this closes the
        // device file, and the group leaves the container if it was its last.
        drop(handle);
        info!("vfio: {bdf} ({address} in the guest) removed");
        Some(bdf)
    }

    /// The guest address of host device `bdf`, if it is attached.
    pub fn address_of(&self, bdf: iommu::Bdf) -> Option<PciAddress> {
        self.attached
            .iter()
            .find(|a| a.bdf == bdf)
            .map(|a| a.address)
    }

    /// Boot-time devices that have an id, with their slots: the ones the
    /// API may remove.
    pub fn removable(&self) -> Vec<(String, u8)> {
        self.attached
            .iter()
            .filter_map(|a| {
                let spec = self.specs.iter().find(|s| s.bdf == a.bdf)?;
                Some((spec.id.clone()?, a.address.device()))
            })
            .collect()
    }
}
