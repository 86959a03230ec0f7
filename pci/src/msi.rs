//! MSI: the capability layout ([`MsiCapability`]: 32/64-bit address, 1..32
//! messages, optional per-vector masking) and the runtime ([`Msi`]) that keeps
//! the VMM's vectors in line with what the guest programmed.
//!
//! Config space stays the source of truth: after a guest config write the
//! device calls [`Msi::config_written`], which re-reads the capability and
//! routes, masks or unmasks vectors. With per-vector masking, a trigger while
//! masked sets the pending bit in config space and unmasking fires it.

use thiserror::Error;

use crate::capability::{CapabilityError, CapabilityPlace, PciCapability, CAP_ID_MSI};
use crate::config::PciConfig;
use crate::interrupt::{Delivery, InterruptError, MsiMessage, MsiVector, RoutedVector};

/// Message control: MSI enable.
const CONTROL_ENABLE: u16 = 1 << 0;
/// Message control: shift of Multiple Message Capable.
const CONTROL_MMC_SHIFT: u16 = 1;
/// Message control: shift of Multiple Message Enable.
const CONTROL_MME_SHIFT: u16 = 4;
/// Message control: 64-bit address capable.
const CONTROL_64BIT: u16 = 1 << 7;
/// Message control: per-vector masking capable.
const CONTROL_PER_VECTOR_MASK: u16 = 1 << 8;
/// Message control bits the guest may write (enable, MME).
const CONTROL_WRITABLE: u16 = CONTROL_ENABLE | (0x7 << CONTROL_MME_SHIFT);

/// Errors of the MSI capability and runtime.
#[derive(Debug, Error)]
pub enum MsiError {
    /// MSI supports 1, 2, 4, 8, 16 or 32 messages.
    #[error("MSI supports 1, 2, 4, 8, 16 or 32 vectors, not {0}")]
    BadVectorCount(usize),
    /// The number of backend vectors differs from the capability's.
    #[error("MSI capability has {expected} vectors but {given} were provided")]
    VectorCountMismatch {
        /// Vectors the capability declares.
        expected: usize,
        /// Vectors provided.
        given: usize,
    },
    /// The vector index is beyond the capability's vectors.
    #[error("MSI vector {0} does not exist")]
    NoSuchVector(usize),
    /// The capability could not be added to config space.
    #[error("cannot add the MSI capability")]
    Capability(#[from] CapabilityError),
    /// The interrupt backend failed.
    #[error("MSI interrupt backend failed")]
    Interrupt(#[from] InterruptError),
}

/// Layout of an MSI capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiCapability {
    /// Number of messages the function can use (power of two, 1..=32).
    vectors: usize,
    /// 64-bit message address.
    is_64bit: bool,
    /// Mask and pending registers present.
    per_vector_mask: bool,
}

impl MsiCapability {
    /// Describes an MSI capability with `vectors` messages.
    pub fn new(vectors: usize, is_64bit: bool, per_vector_mask: bool) -> Result<Self, MsiError> {
        if !vectors.is_power_of_two() || vectors > 32 {
            return Err(MsiError::BadVectorCount(vectors));
        }
        Ok(MsiCapability {
            vectors,
            is_64bit,
            per_vector_mask,
        })
    }

    /// Number of messages the function can use.
    pub fn vectors(&self) -> usize {
        self.vectors
    }

    /// Offset of the message data register from the capability start.
    fn data_offset(&self) -> usize {
        if self.is_64bit {
            0xc
        } else {
            0x8
        }
    }

    /// Offset of the mask bits register from the capability start.
    fn mask_offset(&self) -> usize {
        self.data_offset() + 4
    }

    /// Offset of the pending bits register from the capability start.
    fn pending_offset(&self) -> usize {
        self.data_offset() + 8
    }

    /// Length of the capability including its header.
    pub fn size(&self) -> usize {
        if self.per_vector_mask {
            self.pending_offset() + 4
        } else {
            self.data_offset() + 4
        }
    }

    /// Multiple Message Capable encoding (log2 of the vector count).
    fn mmc(&self) -> u16 {
        // At most 5: vectors is a power of two no larger than 32.
        self.vectors.trailing_zeros() as u16
    }

    /// Mask of the implemented vectors' bits in the mask/pending registers.
    fn vector_bits(&self) -> u32 {
        u32::MAX >> (32 - self.vectors)
    }
}

impl PciCapability for MsiCapability {
    fn id(&self) -> u8 {
        CAP_ID_MSI
    }

    fn body(&self) -> Vec<u8> {
        let mut control = self.mmc() << CONTROL_MMC_SHIFT;
        if self.is_64bit {
            control |= CONTROL_64BIT;
        }
        if self.per_vector_mask {
            control |= CONTROL_PER_VECTOR_MASK;
        }
        let mut body = vec![0u8; self.size() - 2];
        body[..2].copy_from_slice(&control.to_le_bytes());
        body
    }

    fn write_mask(&self) -> Vec<u8> {
        let mut mask = vec![0u8; self.size() - 2];
        let mut put = |offset: usize, bytes: &[u8]| {
            mask[offset - 2..offset - 2 + bytes.len()].copy_from_slice(bytes);
        };
        put(2, &CONTROL_WRITABLE.to_le_bytes());
        put(4, &0xffff_fffcu32.to_le_bytes());
        if self.is_64bit {
            put(8, &u32::MAX.to_le_bytes());
        }
        put(self.data_offset(), &0xffffu16.to_le_bytes());
        if self.per_vector_mask {
            put(self.mask_offset(), &self.vector_bits().to_le_bytes());
        }
        mask
    }
}

/// Runtime state of a function's MSI capability.
pub struct Msi {
    /// Capability layout.
    cap: MsiCapability,
    /// Offset of the capability in config space.
    offset: usize,
    /// The backend's vectors, one per message.
    vectors: Vec<RoutedVector>,
    /// Whether the guest enabled MSI, as of the last sync.
    enabled: bool,
}

/// Refuses a capability and vector list that do not match one to one.
fn check_vector_count(cap: &MsiCapability, vectors: &[Box<dyn MsiVector>]) -> Result<(), MsiError> {
    if vectors.len() != cap.vectors {
        return Err(MsiError::VectorCountMismatch {
            expected: cap.vectors,
            given: vectors.len(),
        });
    }
    Ok(())
}

impl Msi {
    /// Adds the MSI capability to `config` where `place` says and takes
    /// ownership of `vectors` (one per message, as allocated by the
    /// [`crate::InterruptManager`]).
    pub fn add(
        config: &mut PciConfig,
        place: CapabilityPlace,
        cap: MsiCapability,
        vectors: Vec<Box<dyn MsiVector>>,
    ) -> Result<Self, MsiError> {
        check_vector_count(&cap, &vectors)?;
        let offset = config.place_capability(&cap, place)?;
        Ok(Self::with_vectors(cap, offset, vectors))
    }

    /// The runtime state for a capability already written at `offset`.
    fn with_vectors(cap: MsiCapability, offset: usize, vectors: Vec<Box<dyn MsiVector>>) -> Self {
        Msi {
            cap,
            offset,
            vectors: vectors.into_iter().map(RoutedVector::new).collect(),
            enabled: false,
        }
    }

    /// Offset of the capability in config space.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Whether the guest enabled MSI.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The backend vector `index` (for its eventfd).
    pub fn vector(&self, index: usize) -> Option<&dyn MsiVector> {
        self.vectors.get(index).map(RoutedVector::vector)
    }

    /// Call after every guest config write of `len` bytes at `offset`;
    /// re-applies the capability if the write touched it.
    pub fn config_written(
        &mut self,
        config: &mut PciConfig,
        offset: usize,
        len: usize,
    ) -> Result<(), MsiError> {
        let end = offset.saturating_add(len);
        if end <= self.offset || offset >= self.offset + self.cap.size() {
            return Ok(());
        }
        self.sync(config)
    }

    /// Number of messages the guest enabled (MME, clamped to what we offer).
    fn enabled_count(&self, config: &PciConfig) -> usize {
        let control = config.read_u16(self.offset + 2);
        let mme = ((control >> CONTROL_MME_SHIFT) & 0x7).min(self.cap.mmc());
        1 << mme
    }

    /// The message for vector `index` as currently programmed.
    fn message(&self, config: &PciConfig, index: usize, count: usize) -> MsiMessage {
        let low = u64::from(config.read_u32(self.offset + 4) & !0x3);
        let high = if self.cap.is_64bit {
            u64::from(config.read_u32(self.offset + 8))
        } else {
            0
        };
        let data = u32::from(config.read_u16(self.offset + self.cap.data_offset()));
        // Vector indices are below 32, so these conversions are lossless.
        let count = count as u32;
        MsiMessage {
            address: (high << 32) | low,
            data: (data & !(count - 1)) | index as u32,
        }
    }

    /// Guest mask bits (zero without per-vector masking).
    fn mask_bits(&self, config: &PciConfig) -> u32 {
        if self.cap.per_vector_mask {
            config.read_u32(self.offset + self.cap.mask_offset())
        } else {
            0
        }
    }

    /// Pending bits (zero without per-vector masking).
    fn pending_bits(&self, config: &PciConfig) -> u32 {
        if self.cap.per_vector_mask {
            config.read_u32(self.offset + self.cap.pending_offset())
        } else {
            0
        }
    }

    /// Writes the pending bits register.
    fn set_pending_bits(&self, config: &mut PciConfig, bits: u32) {
        if self.cap.per_vector_mask {
            config.write_internal(self.offset + self.cap.pending_offset(), &bits.to_le_bytes());
        }
    }

    /// Routes, masks and unmasks every vector per the capability, firing
    /// pending vectors that became unmasked.
    fn sync(&mut self, config: &mut PciConfig) -> Result<(), MsiError> {
        self.enabled = config.read_u16(self.offset + 2) & CONTROL_ENABLE != 0;
        let count = self.enabled_count(config);
        let masks = self.mask_bits(config);
        let mut pending = self.pending_bits(config);
        for index in 0..self.vectors.len() {
            let bit = 1u32 << index;
            let active = self.enabled && index < count && masks & bit == 0;
            let msg = self.message(config, index, count);
            self.vectors[index].apply(active, msg)?;
            if active && pending & bit != 0 {
                pending &= !bit;
                self.set_pending_bits(config, pending);
                self.vectors[index].trigger()?;
            }
        }
        Ok(())
    }

    /// Signals vector `index`: injected, latched as pending (masked), or
    /// dropped (MSI disabled or the vector not enabled by the guest).
    pub fn trigger(&mut self, config: &mut PciConfig, index: usize) -> Result<Delivery, MsiError> {
        let Some(vector) = self.vectors.get(index) else {
            return Err(MsiError::NoSuchVector(index));
        };
        if !self.enabled || index >= self.enabled_count(config) {
            return Ok(Delivery::Dropped);
        }
        let bit = 1u32 << index;
        if self.mask_bits(config) & bit != 0 {
            let pending = self.pending_bits(config) | bit;
            self.set_pending_bits(config, pending);
            return Ok(Delivery::Pending);
        }
        vector.trigger()?;
        Ok(Delivery::Sent)
    }
}
