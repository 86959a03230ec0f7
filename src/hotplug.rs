//! Hotplug and unplug while the guest runs: [`Hotplug`] owns the list of
//! removable devices (by id and slot: assigned devices, and disks added on
//! the running VM) and does the work the API asks for (add, remove) and the
//! guest's ejects, on the shared PCI bus and the VM's passthrough state,
//! telling the guest through the ACPI hotplug registers and the GED
//! (`devices::pci_hotplug`, `devices::ged`).
//!
//! Locks: the passthrough state before the PCI bus, never the other way;
//! an eject (on a vCPU thread, from the guest's `_EJ0`) takes the device
//! off the bus and lets the bus go before it locks the passthrough state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use iommu::sysfs::Sysfs;
use iommu::vfio::{preflight, GuestLayout};
use kvm_ioctls::VmFd;
use pci::PciAddress;

use crate::config::{DeviceConfig, DiskConfig, NetConfig};
use crate::devices::ged::GedEvents;
use crate::devices::pci_hotplug::HotplugSlots;
use crate::devices::pci_root::SharedPciBus;
use crate::devices::vfio::{HotAddContext, VfioPassthrough, VfioSetupError};
use crate::devices::virtio::{Block, Net, VirtioDevice, VirtioPciDevice};
use crate::memory::GuestMemory;
use crate::seccomp::ThreadKind;
use crate::vstate::irq::KvmInterruptManager;

/// How long `remove` waits for the guest to eject.
pub const EJECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of hotplug and unplug, each meant to be shown as is.
#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    /// The device could not be checked, opened or placed (the VM is as before).
    #[error(transparent)]
    Vfio(#[from] VfioSetupError),
    /// No removable device has this id.
    #[error("no hot-removable device with id {0:?} (on a running VM, only assigned devices and the disks and NICs added while it runs can be removed)")]
    UnknownId(String),
    /// The id is taken.
    #[error("a device with id {0:?} is in the VM already")]
    IdTaken(String),
    /// The guest did not eject in time.
    #[error("the guest did not eject {id} (slot {slot}) within {secs} s (does its kernel have ACPI PCI hotplug, acpiphp?); the device stays in the VM and working, and is removed when the guest ejects it")]
    NoEject {
        /// The device's id.
        id: String,
        /// Its slot.
        slot: u8,
        /// Seconds waited.
        secs: u64,
    },
    /// A disk could not be opened or its device built (the VM is as before).
    #[error("{0}")]
    Virtio(String),
    /// The PCI bus refused the device (full).
    #[error("PCI: {0}")]
    Bus(#[from] pci::BusError),
    /// The guest could not be told.
    #[error("cannot raise the ACPI event interrupt: {0}")]
    Notify(std::io::Error),
}

/// A device the guest may eject.
struct Removable {
    id: String,
    slot: u8,
}

/// Adds and removes assigned devices on a running VM.
pub struct Hotplug {
    pci: SharedPciBus,
    vm: Arc<VmFd>,
    vfio: Arc<Mutex<VfioPassthrough>>,
    interrupts: Arc<KvmInterruptManager>,
    mem: GuestMemory,
    layout: GuestLayout,
    sysfs: Sysfs,
    slots: Arc<HotplugSlots>,
    ged: Arc<GedEvents>,
    /// Removable devices; the condvar wakes `remove` when one goes.
    removable: Mutex<Vec<Removable>>,
    gone: Condvar,
    /// Ids the guest ejected, for the API to drop from its config.
    ejected: Mutex<Vec<String>>,
    /// NICs hot-added so far (their default MACs).
    nets_added: AtomicUsize,
}

/// What the machine hands to [`Hotplug::new`].
pub struct HotplugParts {
    /// The PCI bus (shared with the vCPUs).
    pub pci: SharedPciBus,
    /// The KVM VM (ioeventfds of virtio devices).
    pub vm: Arc<VmFd>,
    /// Passthrough state (shared with the machine's teardown).
    pub vfio: Arc<Mutex<VfioPassthrough>>,
    /// Interrupts for new devices.
    pub interrupts: Arc<KvmInterruptManager>,
    /// Guest RAM.
    pub mem: GuestMemory,
    /// The guest's layout.
    pub layout: GuestLayout,
    /// Where devices are checked.
    pub sysfs: Sysfs,
    /// The ACPI hotplug registers' state.
    pub slots: Arc<HotplugSlots>,
    /// The GED that tells the guest.
    pub ged: Arc<GedEvents>,
}

/// The guest's eject (`B0EJ`, written on a vCPU) is carried out on a thread
/// of its own under the control plane's filter: releasing a device takes
/// VFIO container and KVM device calls that a vCPU's filter does not allow,
/// and the vCPU goes back to the guest at once (the guest's driver let go of
/// the device before `_EJ0`). If no thread can be started, the vCPU does it.
fn eject_elsewhere(weak: Weak<Hotplug>, bits: u32) {
    let job = {
        let weak = weak.clone();
        move || {
            if let Some(hotplug) = weak.upgrade() {
                hotplug.ejected_by_guest(bits);
            }
        }
    };
    if let Err(e) = crate::seccomp::spawn("hotplug-eject".into(), ThreadKind::Vmm, job) {
        log::warn!("hotplug: no thread for the guest's eject ({e}): releasing on the vCPU");
        if let Some(hotplug) = weak.upgrade() {
            hotplug.ejected_by_guest(bits);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hotplug {
    /// The controller; the guest's ejects (`B0EJ`) reach it from now on.
    /// `boot` lists the boot-time assigned devices with an id, removable too.
    pub fn new(parts: HotplugParts, boot: Vec<(String, u8)>) -> Arc<Self> {
        let removable = boot
            .into_iter()
            .map(|(id, slot)| Removable { id, slot })
            .collect();
        let this = Arc::new(Hotplug {
            pci: parts.pci,
            vm: parts.vm,
            vfio: parts.vfio,
            interrupts: parts.interrupts,
            mem: parts.mem,
            layout: parts.layout,
            sysfs: parts.sysfs,
            slots: parts.slots,
            ged: parts.ged,
            removable: Mutex::new(removable),
            gone: Condvar::new(),
            ejected: Mutex::new(Vec::new()),
            nets_added: AtomicUsize::new(0),
        });
        let weak: Weak<Hotplug> = Arc::downgrade(&this);
        this.slots
            .set_eject_handler(Box::new(move |bits| eject_elsewhere(weak.clone(), bits)));
        this
    }

    /// The passthrough state, for counters.
    pub fn vfio(&self) -> &Arc<Mutex<VfioPassthrough>> {
        &self.vfio
    }

    /// Adds assigned device `spec` as `id`: checked in sysfs, opened, put on
    /// the bus with BARs mapped, then the guest is told. Returns its address.
    pub fn add_device(&self, spec: &DeviceConfig, id: &str) -> Result<PciAddress, HotplugError> {
        if lock(&self.removable).iter().any(|r| r.id == id) {
            return Err(HotplugError::IdTaken(id.to_string()));
        }
        let planned = preflight(&self.sysfs, &[spec.bdf])
            .map_err(VfioSetupError::from)?
            .pop()
            .ok_or(VfioSetupError::NoContainer)?;
        let ctx = HotAddContext {
            sysfs: &self.sysfs,
            mem: &self.mem,
            layout: &self.layout,
            irqs: self.interrupts.as_ref(),
        };
        let address = lock(&self.vfio).hot_add(spec, planned, &self.pci, &ctx)?;
        self.announce(id, address)?;
        log::info!("hotplug: {} added as {id} at {address}", spec.bdf);
        Ok(address)
    }

    /// Adds a virtio-blk on `disk` (opened and locked here) as `id`.
    pub fn add_disk(&self, disk: &DiskConfig, id: &str) -> Result<PciAddress, HotplugError> {
        if lock(&self.removable).iter().any(|r| r.id == id) {
            return Err(HotplugError::IdTaken(id.to_string()));
        }
        let block = Block::new(disk).map_err(|e| HotplugError::Virtio(e.to_string()))?;
        let address = self.add_virtio(Box::new(block))?;
        self.announce(id, address)?;
        log::info!(
            "hotplug: disk {} added as {id} at {address}",
            disk.path.display()
        );
        Ok(address)
    }

    /// Adds a virtio-net on `net`'s tap (opened here, or adopted before) as `id`.
    pub fn add_net(&self, net: &NetConfig, id: &str) -> Result<PciAddress, HotplugError> {
        if lock(&self.removable).iter().any(|r| r.id == id) {
            return Err(HotplugError::IdTaken(id.to_string()));
        }
        // Default MACs of hot-added NICs start past any boot NIC's.
        let index = 32 + self.nets_added.fetch_add(1, Ordering::AcqRel);
        let nic = Net::new(net, index).map_err(|e| HotplugError::Virtio(e.to_string()))?;
        let address = self.add_virtio(Box::new(nic))?;
        self.announce(id, address)?;
        log::info!("hotplug: NIC on tap {} added as {id} at {address}", net.tap);
        Ok(address)
    }

    /// Puts `device` behind the virtio PCI transport on the first free
    /// slot, with its BARs placed, as at boot.
    fn add_virtio(&self, device: Box<dyn VirtioDevice>) -> Result<PciAddress, HotplugError> {
        let mut bus = lock(&self.pci);
        let address = bus.free_address()?;
        let dev = VirtioPciDevice::new(
            device,
            address,
            self.mem.clone(),
            self.interrupts.as_ref(),
            self.vm.clone(),
        )
        .map_err(|e| HotplugError::Virtio(e.to_string()))?;
        bus.add_device_at(address.device(), Box::new(dev))?;
        if let Err(e) = bus.assign_bars() {
            drop(bus.remove_device(address.device()));
            return Err(e.into());
        }
        Ok(address)
    }

    /// Lists the new device as removable and tells the guest its slot changed.
    fn announce(&self, id: &str, address: PciAddress) -> Result<(), HotplugError> {
        let slot = address.device();
        lock(&self.removable).push(Removable {
            id: id.to_string(),
            slot,
        });
        self.slots.mark_added(slot);
        self.ged.pci_changed().map_err(HotplugError::Notify)
    }

    /// Asks the guest to eject device `id`; returns its slot, for
    /// [`Hotplug::wait_removed`]. The removal itself happens on the eject.
    pub fn request_removal(&self, id: &str) -> Result<u8, HotplugError> {
        let slot = lock(&self.removable)
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.slot)
            .ok_or_else(|| HotplugError::UnknownId(id.to_string()))?;
        self.slots.mark_removing(slot);
        self.ged.pci_changed().map_err(HotplugError::Notify)?;
        Ok(slot)
    }

    /// Waits up to `timeout` for device `id` (in `slot`) to be ejected and
    /// released.
    pub fn wait_removed(&self, id: &str, slot: u8, timeout: Duration) -> Result<(), HotplugError> {
        let deadline = Instant::now() + timeout;
        let mut removable = lock(&self.removable);
        while removable.iter().any(|r| r.id == id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HotplugError::NoEject {
                    id: id.to_string(),
                    slot,
                    secs: timeout.as_secs(),
                });
            }
            removable = self
                .gone
                .wait_timeout(removable, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Ids the guest ejected since the last call (on its own or asked).
    pub fn take_ejected(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.ejected))
    }

    /// The guest wrote `bits` to `B0EJ`: removes each removable device
    /// there; other slots (boot devices that are not assigned, empty slots)
    /// are left alone.
    fn ejected_by_guest(&self, bits: u32) {
        for slot in (1..32u8).filter(|s| bits & (1 << s) != 0) {
            let id = {
                let removable = lock(&self.removable);
                removable
                    .iter()
                    .find(|r| r.slot == slot)
                    .map(|r| r.id.clone())
            };
            let Some(id) = id else {
                log::warn!("hotplug: the guest ejected slot {slot}, which holds no removable device: ignored");
                continue;
            };
            self.release(slot);
            lock(&self.removable).retain(|r| r.slot != slot);
            lock(&self.ejected).push(id.clone());
            self.gone.notify_all();
            log::info!("hotplug: {id} (slot {slot}) ejected by the guest and released");
        }
    }

    /// Takes the device in `slot` off the bus, then releases it.
    fn release(&self, slot: u8) {
        let device = lock(&self.pci).remove_device(slot);
        let Some(device) = device else { return };
        let Ok(address) = PciAddress::new(0, slot, 0) else {
            return;
        };
        // An emulated device (a hot-added disk) is released by its drop:
        // its worker stops, its ioeventfds and interrupts go.
        if lock(&self.vfio).hot_remove(address, device).is_none() {
            log::info!("hotplug: the emulated device in slot {slot} is released");
        }
    }
}
