//! The virtio 1.x modern PCI transport: a PCI function (vendor 0x1af4,
//! device 0x1040 + type, revision 1) whose 64-bit BAR 0 holds the common
//! configuration, ISR status, device configuration and notification areas
//! described by vendor-specific capabilities, plus the MSI-X table and PBA.
//! Notifications arrive on one eventfd per queue, registered as ioeventfds
//! at the BAR's current address (and signalled by hand when a notify write
//! traps anyway); DRIVER_OK hands validated queues to the device model.
//!
//! BAR 0 (32 KiB):
//!
//! | offset | size | what |
//! | --- | --- | --- |
//! | 0x0000 | 0x38 | common configuration |
//! | 0x1000 | 4 | ISR status (read to clear) |
//! | 0x2000 | 0x1000 | device configuration |
//! | 0x3000 | 4 per queue | notification addresses (multiplier 4) |
//! | 0x4000 | 16 per vector | MSI-X table |
//! | 0x5000 | 8 per 64 vectors | MSI-X PBA |

use std::sync::Arc;

use log::warn;
use pci::{
    BarKind, BarMove, CapabilityPlace, DeviceError, InterruptManager, IntxPin, Msix,
    MsixCapability, PciAddress, PciConfig, PciDevice, PciHeader, RawCapability,
};
use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::common_cfg::{CommonCfg, CommonCfgError, StatusAction, COMMON_CFG_SIZE};
use super::interrupt::VirtioInterrupts;
use super::{ActivateContext, IoEventRegistry, VirtioDevice, F_EVENT_IDX, STATUS_NEEDS_RESET};
use crate::memory::GuestMemory;

/// Red Hat / virtio vendor ID.
pub const VIRTIO_VENDOR_ID: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type.
pub const VIRTIO_DEVICE_ID_BASE: u16 = 0x1040;
/// The one BAR.
pub const VIRTIO_BAR: usize = 0;
/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
/// Common configuration offset in BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// ISR status offset in BAR 0.
pub const ISR_OFFSET: u64 = 0x1000;
/// ISR area length.
pub const ISR_LEN: u64 = 4;
/// Device configuration offset in BAR 0.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Device configuration area length.
pub const DEVICE_LEN: u64 = 0x1000;
/// Notification area offset in BAR 0.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between the notification addresses of consecutive queues.
pub const NOTIFY_MULTIPLIER: u64 = 4;
/// MSI-X table offset in BAR 0.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X PBA offset in BAR 0.
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// Most queues the layout has room for (one vector each plus the config vector).
pub const MAX_QUEUES: usize = 255;

/// virtio_pci_cap cfg_type: common configuration.
const CAP_COMMON: u8 = 1;
/// virtio_pci_cap cfg_type: notifications.
const CAP_NOTIFY: u8 = 2;
/// virtio_pci_cap cfg_type: ISR status.
const CAP_ISR: u8 = 3;
/// virtio_pci_cap cfg_type: device configuration.
const CAP_DEVICE: u8 = 4;
/// virtio_pci_cap cfg_type: BAR access window in config space.
const CAP_PCI_CFG: u8 = 5;
/// Offset of `pci_cfg_data` inside the PCI-config-access capability.
const PCI_CFG_DATA: usize = 16;

/// Errors building the PCI function.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The device model has no queues or too many.
    #[error("the device has {0} queues; 1..={MAX_QUEUES} fit the BAR layout")]
    Queues(usize),
    /// The common configuration refused the queue set.
    #[error(transparent)]
    Common(#[from] CommonCfgError),
    /// BAR 0 could not be declared.
    #[error("cannot declare BAR 0: {0}")]
    Bar(#[from] pci::ConfigError),
    /// A virtio capability did not fit config space.
    #[error("cannot add a virtio capability: {0}")]
    Capability(#[from] pci::CapabilityError),
    /// The MSI-X capability could not be set up.
    #[error("cannot set up MSI-X: {0}")]
    Msix(#[from] pci::MsixError),
    /// The VMM could not provide vectors or the INTx line.
    #[error("cannot get interrupts: {0}")]
    Interrupt(#[from] pci::InterruptError),
    /// A notification eventfd could not be created.
    #[error("cannot create a queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// A virtio device model on the modern PCI transport.
pub struct VirtioPciDevice {
    /// PCI configuration space.
    config: PciConfig,
    /// Common configuration registers.
    common: CommonCfg,
    /// The device model.
    device: Box<dyn VirtioDevice>,
    /// Interrupts, shared with the worker.
    interrupts: Arc<VirtioInterrupts>,
    /// Guest RAM.
    mem: GuestMemory,
    /// One notification eventfd per queue.
    queue_evts: Vec<EventFd>,
    /// Where the eventfds get registered.
    ioevents: Arc<dyn IoEventRegistry>,
    /// BAR 0 base the eventfds are registered at.
    ioevent_base: Option<u64>,
    /// Offset of the PCI-config-access capability.
    pci_cfg_cap: usize,
    /// Our address, for messages.
    address: PciAddress,
}

/// A virtio_pci_cap body (after ID and next pointer) for `cfg_type` covering
/// `[offset, offset + length)` of BAR 0, with `extra` appended.
fn virtio_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> RawCapability {
    // 16 bytes of virtio_pci_cap plus the extra field; small constants.
    let cap_len = (16 + extra.len()) as u8;
    let mut body = vec![cap_len, cfg_type, VIRTIO_BAR as u8, 0, 0, 0];
    // Offsets and lengths are below BAR_SIZE: they fit 32 bits.
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    RawCapability {
        id: pci::capability::CAP_ID_VENDOR_SPECIFIC,
        body,
        write_mask: Vec::new(),
    }
}

/// PCI class code for a virtio device type.
fn class_code(device_type: u16) -> u32 {
    match device_type {
        1 => 0x02_0000, // Ethernet controller
        2 => 0x01_8000, // other mass storage
        _ => 0xff_0000, // unassigned
    }
}

impl VirtioPciDevice {
    /// Builds the function for `device` at `address`: allocates one MSI-X
    /// vector per queue plus one for configuration changes, and INTx A.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        address: PciAddress,
        mem: GuestMemory,
        interrupts: &dyn InterruptManager,
        ioevents: Arc<dyn IoEventRegistry>,
    ) -> Result<Self, TransportError> {
        let queues = device.queue_max_sizes().len();
        if queues == 0 || queues > MAX_QUEUES {
            return Err(TransportError::Queues(queues));
        }
        let common = CommonCfg::new(device.features(), device.queue_max_sizes())?;
        let mut config = PciConfig::new(&PciHeader {
            vendor_id: VIRTIO_VENDOR_ID,
            device_id: VIRTIO_DEVICE_ID_BASE.wrapping_add(device.device_type()),
            revision_id: 1,
            class_code: class_code(device.device_type()),
            subsystem_vendor_id: VIRTIO_VENDOR_ID,
            subsystem_id: 0x1100,
            interrupt_pin: Some(IntxPin::A),
        });
        config.add_bar(
            VIRTIO_BAR,
            BarKind::Memory64 {
                prefetchable: false,
            },
            BAR_SIZE,
        )?;
        config.add_capability(&virtio_cap(CAP_COMMON, COMMON_OFFSET, COMMON_CFG_SIZE, &[]))?;
        let notify_len = queues as u64 * NOTIFY_MULTIPLIER;
        let multiplier = (NOTIFY_MULTIPLIER as u32).to_le_bytes();
        config.add_capability(&virtio_cap(
            CAP_NOTIFY,
            NOTIFY_OFFSET,
            notify_len,
            &multiplier,
        ))?;
        config.add_capability(&virtio_cap(CAP_ISR, ISR_OFFSET, ISR_LEN, &[]))?;
        config.add_capability(&virtio_cap(CAP_DEVICE, DEVICE_OFFSET, DEVICE_LEN, &[]))?;
        let mut pci_cfg = virtio_cap(CAP_PCI_CFG, 0, 0, &[0; 4]);
        // bar (1 byte), then offset, length and data (4 bytes each) are the driver's.
        pci_cfg.write_mask = [[0, 0, 0xff, 0, 0, 0].as_slice(), &[0xff; 12]].concat();
        let pci_cfg_cap = config.add_capability(&pci_cfg)?;

        let vectors = queues + 1;
        let cap = MsixCapability::new(
            vectors,
            VIRTIO_BAR as u8,
            MSIX_TABLE_OFFSET,
            VIRTIO_BAR as u8,
            MSIX_PBA_OFFSET,
        )?;
        let msix = Msix::add(
            &mut config,
            CapabilityPlace::Append,
            cap,
            interrupts.allocate_msi_vectors(vectors)?,
        )?;
        let line = interrupts.allocate_intx(address, IntxPin::A)?;
        config.set_interrupt_line(line.irq());
        let queue_evts = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(TransportError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VirtioPciDevice {
            config,
            common,
            device,
            interrupts: Arc::new(VirtioInterrupts::new(msix, Some(line), queues)),
            mem,
            queue_evts,
            ioevents,
            ioevent_base: None,
            pci_cfg_cap,
            address,
        })
    }

    /// The shared interrupt state (for tests and diagnostics).
    pub fn interrupts(&self) -> &Arc<VirtioInterrupts> {
        &self.interrupts
    }

    /// The notification eventfd of queue `index`.
    pub fn queue_eventfd(&self, index: usize) -> Option<&EventFd> {
        self.queue_evts.get(index)
    }

    /// The device status as the driver reads it.
    pub fn status(&self) -> u8 {
        self.common.status()
            | if self.interrupts.needs_reset() {
                STATUS_NEEDS_RESET
            } else {
                0
            }
    }

    /// Stops the device model (its worker ends, its backend is released
    /// when the function is dropped) and removes the ioeventfds.
    pub fn stop(&mut self) {
        self.device.reset();
        self.unregister_ioevents();
    }

    /// Moves the notification ioeventfds to BAR 0 at `base`.
    fn sync_ioevents(&mut self, base: u64) {
        if self.ioevent_base == Some(base) {
            return;
        }
        self.unregister_ioevents();
        for (i, evt) in self.queue_evts.iter().enumerate() {
            let addr = base + NOTIFY_OFFSET + i as u64 * NOTIFY_MULTIPLIER;
            if let Err(e) = self.ioevents.register(evt, addr) {
                // Notify writes still trap and reach bar_write: slower, not broken.
                warn!(
                    "{}: cannot register the ioeventfd of queue {i} at {addr:#x}: {e}",
                    self.address
                );
            }
        }
        self.ioevent_base = Some(base);
    }

    /// Removes the notification ioeventfds, if registered.
    fn unregister_ioevents(&mut self) {
        if let Some(base) = self.ioevent_base.take() {
            for (i, evt) in self.queue_evts.iter().enumerate() {
                let addr = base + NOTIFY_OFFSET + i as u64 * NOTIFY_MULTIPLIER;
                if let Err(e) = self.ioevents.unregister(evt, addr) {
                    log::debug!(
                        "{}: unregistering ioeventfd at {addr:#x}: {e}",
                        self.address
                    );
                }
            }
        }
    }

    /// Device reset (status 0 written).
    fn reset_device(&mut self) {
        self.device.reset();
        self.common.reset();
        self.interrupts.reset();
    }

    /// DRIVER_OK: validate the queues and start the device model; any
    /// failure marks the device NEEDS_RESET.
    fn activate(&mut self) {
        if self.config.bar_decoding(VIRTIO_BAR) {
            if let Some(base) = self.config.bar_address(VIRTIO_BAR) {
                self.sync_ioevents(base);
            }
        }
        if let Err(why) = self.try_activate() {
            self.interrupts
                .mark_broken(&format!("{}: activation failed: {why}", self.address));
        }
    }

    /// Builds the queues from the guest's setup and hands them over.
    fn try_activate(&mut self) -> Result<(), String> {
        let features = self.common.driver_features();
        let mut queues = Vec::with_capacity(self.common.queues().len());
        for (i, setup) in self.common.queues().iter().enumerate() {
            let bad = |e: virtio_queue::Error| format!("queue {i}: {e}");
            let mut queue = Queue::new(setup.max_size).map_err(bad)?;
            if setup.enabled {
                queue.try_set_size(setup.size).map_err(bad)?;
                queue
                    .try_set_desc_table_address(GuestAddress(setup.desc))
                    .map_err(bad)?;
                queue
                    .try_set_avail_ring_address(GuestAddress(setup.avail))
                    .map_err(bad)?;
                queue
                    .try_set_used_ring_address(GuestAddress(setup.used))
                    .map_err(bad)?;
                queue.set_event_idx(features & F_EVENT_IDX != 0);
                queue.set_ready(true);
                if !queue.is_valid(&self.mem) {
                    return Err(format!("queue {i}: rings are outside guest RAM"));
                }
            }
            queues.push(queue);
        }
        let queue_evts = self
            .queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot duplicate a queue eventfd: {e}"))?;
        self.device.activate(ActivateContext {
            mem: self.mem.clone(),
            features,
            queues,
            queue_evts,
            interrupts: self.interrupts.clone(),
        })
    }

    /// BAR 0 address, read or written by the driver through the
    /// PCI-config-access capability: `(offset, length)` if usable.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let cap = self.pci_cfg_cap;
        let bar = self.config.read_u8(cap + 4);
        let offset = u64::from(self.config.read_u32(cap + 8));
        let length = self.config.read_u32(cap + 12);
        let ok = usize::from(bar) == VIRTIO_BAR
            && matches!(length, 1 | 2 | 4)
            && offset % u64::from(length) == 0
            && offset + u64::from(length) <= BAR_SIZE;
        ok.then_some((offset, length as usize))
    }

    /// Whether `[offset, offset + len)` touches `pci_cfg_data`.
    fn touches_pci_cfg_data(&self, offset: usize, len: usize) -> bool {
        let data = self.pci_cfg_cap + PCI_CFG_DATA;
        offset < data + 4 && offset.saturating_add(len) > data
    }
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config
            .set_interrupt_status(self.interrupts.intx_pending());
        if self.touches_pci_cfg_data(offset, data.len()) {
            let mut window = [0u8; 4];
            if let Some((bar_offset, len)) = self.pci_cfg_window() {
                self.bar_read(VIRTIO_BAR, bar_offset, &mut window[..len]);
            }
            self.config
                .write_internal(self.pci_cfg_cap + PCI_CFG_DATA, &window);
        }
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        if let Err(e) = self
            .interrupts
            .config_written(&self.config, offset, data.len())
        {
            warn!("{}: {e}", self.address);
        }
        if self.touches_pci_cfg_data(offset, data.len()) {
            if let Some((bar_offset, len)) = self.pci_cfg_window() {
                let mut window = [0u8; 4];
                self.config
                    .read(self.pci_cfg_cap + PCI_CFG_DATA, &mut window);
                self.bar_write(VIRTIO_BAR, bar_offset, &window[..len]);
            }
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != VIRTIO_BAR {
            return;
        }
        if self.interrupts.lock().msix.bar_read(bar, offset, data) {
            return;
        }
        if offset < COMMON_OFFSET + COMMON_CFG_SIZE {
            self.common
                .read(offset - COMMON_OFFSET, data, &self.interrupts);
        } else if offset == ISR_OFFSET {
            if let Some(first) = data.first_mut() {
                *first = self.interrupts.read_isr();
            }
        } else if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&offset) {
            self.device.read_config(offset - DEVICE_OFFSET, data);
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != VIRTIO_BAR {
            return;
        }
        match self.interrupts.lock().msix.bar_write(bar, offset, data) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                warn!("{}: MSI-X table write: {e}", self.address);
                return;
            }
        }
        if offset < COMMON_OFFSET + COMMON_CFG_SIZE {
            match self
                .common
                .write(offset - COMMON_OFFSET, data, &self.interrupts)
            {
                StatusAction::None => {}
                StatusAction::Reset => self.reset_device(),
                StatusAction::Activate => self.activate(),
            }
        } else if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&offset) {
            self.device.write_config(offset - DEVICE_OFFSET, data);
        } else if offset >= NOTIFY_OFFSET {
            // A notify write that trapped: the ioeventfd is not (yet) there.
            let index = (offset - NOTIFY_OFFSET) / NOTIFY_MULTIPLIER;
            let evt = usize::try_from(index)
                .ok()
                .and_then(|i| self.queue_evts.get(i));
            if let Some(evt) = evt {
                if let Err(e) = evt.write(1) {
                    warn!("{}: queue notification: {e}", self.address);
                }
            }
            // The BAR is routed here, so its programmed base is live.
            if let Some(base) = self.config.bar_address(VIRTIO_BAR) {
                self.sync_ioevents(base);
            }
        }
    }

    fn move_bar(&mut self, mv: &BarMove) -> Result<(), DeviceError> {
        if mv.bar == VIRTIO_BAR {
            self.sync_ioevents(mv.new);
        }
        Ok(())
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        self.stop();
    }
}
