//! The virtio 1.x common configuration structure (`struct
//! virtio_pci_common_cfg`): feature negotiation, per-queue setup and the
//! device status state machine. Pure register logic; the transport acts on
//! the [`StatusAction`] a status write returns.
//!
//! Layout (offsets in the structure):
//!
//! | off | size | field |
//! | --- | --- | --- |
//! | 0x00 | 4 | device_feature_select |
//! | 0x04 | 4 | device_feature (RO) |
//! | 0x08 | 4 | driver_feature_select |
//! | 0x0c | 4 | driver_feature |
//! | 0x10 | 2 | config_msix_vector |
//! | 0x12 | 2 | num_queues (RO) |
//! | 0x14 | 1 | device_status |
//! | 0x15 | 1 | config_generation (RO) |
//! | 0x16 | 2 | queue_select |
//! | 0x18 | 2 | queue_size |
//! | 0x1a | 2 | queue_msix_vector |
//! | 0x1c | 2 | queue_enable |
//! | 0x1e | 2 | queue_notify_off (RO) |
//! | 0x20 | 8 | queue_desc |
//! | 0x28 | 8 | queue_driver (avail ring) |
//! | 0x30 | 8 | queue_device (used ring) |

use log::debug;
use thiserror::Error;

use super::interrupt::VirtioInterrupts;
use super::{F_VERSION_1, NO_VECTOR, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};

/// Size of the common configuration structure.
pub const COMMON_CFG_SIZE: u64 = 0x38;

/// Errors building the common configuration.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommonCfgError {
    /// A device needs at least one queue and at most 0xffff.
    #[error("a virtio device needs 1..=65535 queues, not {0}")]
    QueueCount(usize),
}

/// Guest-programmed setup of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSetup {
    /// Largest size the device supports.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// queue_enable.
    pub enabled: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Available (driver) ring address.
    pub avail: u64,
    /// Used (device) ring address.
    pub used: u64,
}

impl QueueSetup {
    /// A queue at reset.
    fn new(max_size: u16) -> Self {
        QueueSetup {
            max_size,
            size: max_size,
            enabled: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// What the transport must do after a status write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// Nothing beyond storing the status.
    None,
    /// The driver wrote 0: reset the device.
    Reset,
    /// The driver set DRIVER_OK: start the device.
    Activate,
}

/// Register state of the common configuration structure.
#[derive(Debug, Clone)]
pub struct CommonCfg {
    /// Features the device offers.
    device_features: u64,
    /// device_feature_select.
    device_feature_select: u32,
    /// driver_feature_select.
    driver_feature_select: u32,
    /// Features the driver accepted so far.
    driver_features: u64,
    /// device_status (without NEEDS_RESET, which comes from the interrupts).
    status: u8,
    /// queue_select.
    queue_select: u16,
    /// The queues.
    queues: Vec<QueueSetup>,
}

impl CommonCfg {
    /// Common configuration of a device offering `features` with queues of
    /// the given maximum sizes.
    pub fn new(features: u64, max_sizes: &[u16]) -> Result<Self, CommonCfgError> {
        if max_sizes.is_empty() || max_sizes.len() > usize::from(u16::MAX) {
            return Err(CommonCfgError::QueueCount(max_sizes.len()));
        }
        Ok(CommonCfg {
            device_features: features,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            queues: max_sizes.iter().map(|m| QueueSetup::new(*m)).collect(),
        })
    }

    /// Back to the reset state (features offered and queue maxima kept).
    pub fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueSetup::new(q.max_size);
        }
    }

    /// device_status as stored (NEEDS_RESET not included).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Adds status bits from the device side (NEEDS_RESET on a failed activation).
    pub fn set_status_bits(&mut self, bits: u8) {
        self.status |= bits;
    }

    /// Features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The queues as the driver set them up.
    pub fn queues(&self) -> &[QueueSetup] {
        &self.queues
    }

    /// Whether the driver may still change features and queues.
    fn setup_open(&self) -> bool {
        self.status & STATUS_DRIVER_OK == 0
    }

    /// The selected queue, if queue_select names one.
    fn selected(&self) -> Option<&QueueSetup> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The register image at `offset` for a read (no side effects).
    fn register_image(&self, irq: &VirtioInterrupts) -> [u8; COMMON_CFG_SIZE as usize] {
        let mut img = [0u8; COMMON_CFG_SIZE as usize];
        let mut put = |off: usize, bytes: &[u8]| {
            if let Some(dst) = img.get_mut(off..off + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        let feature_half = match self.device_feature_select {
            // Truncations intended: the selected half of the feature word.
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        };
        let driver_half = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        let status = self.status
            | if irq.needs_reset() {
                STATUS_NEEDS_RESET
            } else {
                0
            };
        // Fewer than 65536 queues (checked in new).
        let num_queues = self.queues.len() as u16;
        put(0x00, &self.device_feature_select.to_le_bytes());
        put(0x04, &feature_half.to_le_bytes());
        put(0x08, &self.driver_feature_select.to_le_bytes());
        put(0x0c, &driver_half.to_le_bytes());
        put(0x10, &irq.config_vector().to_le_bytes());
        put(0x12, &num_queues.to_le_bytes());
        put(0x14, &[status]);
        put(0x15, &[0]);
        put(0x16, &self.queue_select.to_le_bytes());
        if let Some(q) = self.selected() {
            let index = usize::from(self.queue_select);
            put(0x18, &q.size.to_le_bytes());
            put(0x1a, &irq.queue_vector(index).to_le_bytes());
            put(0x1c, &u16::from(q.enabled).to_le_bytes());
            put(0x1e, &self.queue_select.to_le_bytes());
            put(0x20, &q.desc.to_le_bytes());
            put(0x28, &q.avail.to_le_bytes());
            put(0x30, &q.used.to_le_bytes());
        }
        // A nonexistent queue reads as size 0, which tells the driver it is absent.
        img
    }

    /// Guest read of `data.len()` bytes at `offset` (any size; zero outside).
    pub fn read(&self, offset: u64, data: &mut [u8], irq: &VirtioInterrupts) {
        let img = self.register_image(irq);
        super::read_image(&img, offset, data);
    }

    /// Guest write at `offset`. Fields are written at their own width; the
    /// 64-bit addresses also as two 32-bit halves. Anything else is ignored.
    pub fn write(&mut self, offset: u64, data: &[u8], irq: &VirtioInterrupts) -> StatusAction {
        let value = match data.len() {
            1 | 2 | 4 | 8 => {
                let mut bytes = [0u8; 8];
                bytes[..data.len()].copy_from_slice(data);
                u64::from_le_bytes(bytes)
            }
            _ => return StatusAction::None,
        };
        // Truncations below are intended: each field takes its own width.
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = value as u32,
            (0x08, 4) => self.driver_feature_select = value as u32,
            (0x0c, 4) => self.write_driver_features(value as u32),
            (0x10, 2) => {
                irq.set_config_vector(value as u16);
            }
            (0x14, 1) => return self.write_status(value as u8),
            (0x16, 2) => self.queue_select = value as u16,
            (0x18, 2) => self.with_queue(|q| q.size = value as u16),
            (0x1a, 2) => {
                let index = usize::from(self.queue_select);
                if self.setup_open() || value as u16 == NO_VECTOR {
                    irq.set_queue_vector(index, value as u16);
                }
            }
            (0x1c, 2) => {
                if value == 1 {
                    self.with_queue(|q| q.enabled = true);
                }
            }
            (0x20 | 0x28 | 0x30, 8) => self.write_address(offset, 0, value, u64::MAX),
            (0x20 | 0x24 | 0x28 | 0x2c | 0x30 | 0x34, 4) => {
                let shift = if offset % 8 == 4 { 32 } else { 0 };
                self.write_address(offset & !7, shift, value, 0xffff_ffff);
            }
            _ => debug!(
                "virtio: ignoring {}-byte common cfg write at {offset:#x}",
                data.len()
            ),
        }
        StatusAction::None
    }

    /// Applies `f` to the selected queue while setup is open.
    fn with_queue(&mut self, f: impl FnOnce(&mut QueueSetup)) {
        if !self.setup_open() {
            return;
        }
        let index = usize::from(self.queue_select);
        if let Some(q) = self.queues.get_mut(index) {
            f(q);
        }
    }

    /// Stores `value & mask` at bit `shift` of the address field at `field`.
    fn write_address(&mut self, field: u64, shift: u32, value: u64, mask: u64) {
        self.with_queue(|q| {
            let slot = match field {
                0x20 => &mut q.desc,
                0x28 => &mut q.avail,
                _ => &mut q.used,
            };
            *slot = (*slot & !(mask << shift)) | ((value & mask) << shift);
        });
    }

    /// Stores the selected half of the driver features (until FEATURES_OK).
    fn write_driver_features(&mut self, half: u32) {
        if self.status & STATUS_FEATURES_OK != 0 {
            return;
        }
        let half = u64::from(half);
        match self.driver_feature_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | half,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (half << 32),
            _ => {}
        }
    }

    /// The status state machine: 0 resets; FEATURES_OK sticks only for an
    /// acceptable feature set; DRIVER_OK needs FEATURES_OK; bits never clear
    /// except by reset.
    fn write_status(&mut self, value: u8) -> StatusAction {
        if value == 0 {
            return StatusAction::Reset;
        }
        let old = self.status;
        let mut new = old | (value & !STATUS_NEEDS_RESET);
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let unknown = self.driver_features & !self.device_features;
            if unknown != 0 || self.driver_features & F_VERSION_1 == 0 {
                debug!(
                    "virtio: refusing features {:#x} (offered {:#x})",
                    self.driver_features, self.device_features
                );
                new &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 && new & STATUS_FEATURES_OK == 0 {
            new &= !STATUS_DRIVER_OK;
        }
        self.status = new;
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            StatusAction::Activate
        } else {
            StatusAction::None
        }
    }
}
