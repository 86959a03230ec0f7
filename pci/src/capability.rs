//! The capability list: the [`PciCapability`] description a capability gives
//! of itself, the builder that chains capabilities through the pointer at
//! 0x34 (setting status bit 4), and a walker over the chain.
//!
//! MSI and MSI-X describe themselves in [`crate::msi`] and [`crate::msix`];
//! [`RawCapability`] covers anything else (e.g. virtio's vendor-specific ones).

use thiserror::Error;

use crate::config::{
    PciConfig, CAPABILITIES_POINTER, CONFIG_SPACE_SIZE, STATUS, STATUS_CAPABILITIES_LIST,
};

/// Power management capability ID.
pub const CAP_ID_POWER_MANAGEMENT: u8 = 0x01;
/// MSI capability ID.
pub const CAP_ID_MSI: u8 = 0x05;
/// Vendor-specific capability ID (used by virtio-pci).
pub const CAP_ID_VENDOR_SPECIFIC: u8 = 0x09;
/// PCI Express capability ID.
pub const CAP_ID_PCI_EXPRESS: u8 = 0x10;
/// MSI-X capability ID.
pub const CAP_ID_MSIX: u8 = 0x11;

/// First offset after the type 0 header, where capabilities may start.
const FIRST_CAPABILITY: usize = 0x40;
/// Longest chain the walker follows (48 dword-aligned slots fit in 0x40..0x100).
const MAX_CHAIN: usize = (CONFIG_SPACE_SIZE - FIRST_CAPABILITY) / 4;

/// Errors adding a capability.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CapabilityError {
    /// There is no room left in the 256-byte space.
    #[error("no room for a capability of {needed} bytes (only {available} left)")]
    NoSpace {
        /// Bytes the capability needs, header included.
        needed: usize,
        /// Bytes still free.
        available: usize,
    },
    /// The write mask is longer than the body.
    #[error("capability write mask has {mask} bytes but the body only {body}")]
    MaskTooLong {
        /// Mask length.
        mask: usize,
        /// Body length.
        body: usize,
    },
}

/// A capability as it describes itself to the list builder.
pub trait PciCapability {
    /// Capability ID.
    fn id(&self) -> u8;
    /// Contents after the two-byte header (ID and next pointer).
    fn body(&self) -> Vec<u8>;
    /// Guest-writable bits of the body, byte for byte; bytes past the end of
    /// the mask are read-only.
    fn write_mask(&self) -> Vec<u8>;
}

/// A capability given as plain bytes (vendor-specific, PCIe, power management).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCapability {
    /// Capability ID.
    pub id: u8,
    /// Contents after the two-byte header.
    pub body: Vec<u8>,
    /// Guest-writable bits of the body.
    pub write_mask: Vec<u8>,
}

impl PciCapability for RawCapability {
    fn id(&self) -> u8 {
        self.id
    }

    fn body(&self) -> Vec<u8> {
        self.body.clone()
    }

    fn write_mask(&self) -> Vec<u8> {
        self.write_mask.clone()
    }
}

/// Where a capability goes in config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityPlace {
    /// Appended to the list the config space chains itself.
    Append,
    /// At `offset` with `next` as its next pointer, the chain left alone: for
    /// passthrough devices that mirror the layout of real hardware and link
    /// the list themselves.
    At {
        /// Offset of the capability header.
        offset: usize,
        /// Its next pointer.
        next: u8,
    },
}

impl PciConfig {
    /// Appends `cap` to the capability list and returns its offset.
    pub fn add_capability(&mut self, cap: &dyn PciCapability) -> Result<usize, CapabilityError> {
        self.place_capability(cap, CapabilityPlace::Append)
    }

    /// Writes `cap` where `place` says, sets the capability list status bit,
    /// and returns its offset.
    pub fn place_capability(
        &mut self,
        cap: &dyn PciCapability,
        place: CapabilityPlace,
    ) -> Result<usize, CapabilityError> {
        match place {
            CapabilityPlace::Append => {
                let offset = self.next_capability.next_multiple_of(4);
                let end = self.write_capability(offset, 0, cap)?;
                let link = if self.last_capability == 0 {
                    CAPABILITIES_POINTER
                } else {
                    self.last_capability + 1
                };
                // `write_capability` placed it inside the 256-byte space: the offset fits a byte.
                self.write_internal(link, &[offset as u8]);
                self.last_capability = offset;
                self.next_capability = end;
                Ok(offset)
            }
            CapabilityPlace::At { offset, next } => {
                self.write_capability(offset, next, cap)?;
                Ok(offset)
            }
        }
    }

    /// Writes `cap`'s header (with `next`), body and write mask at `offset`
    /// and sets the capability list status bit; returns the offset past it.
    fn write_capability(
        &mut self,
        offset: usize,
        next: u8,
        cap: &dyn PciCapability,
    ) -> Result<usize, CapabilityError> {
        let body = cap.body();
        let mask = cap.write_mask();
        if mask.len() > body.len() {
            return Err(CapabilityError::MaskTooLong {
                mask: mask.len(),
                body: body.len(),
            });
        }
        let needed = body.len().saturating_add(2);
        let available = CONFIG_SPACE_SIZE.saturating_sub(offset);
        if offset < FIRST_CAPABILITY || needed > available {
            return Err(CapabilityError::NoSpace { needed, available });
        }
        self.write_internal(offset, &[cap.id(), next]);
        self.write_internal(offset + 2, &body);
        self.set_write_mask(offset + 2, &mask);
        let status = self.status() | STATUS_CAPABILITIES_LIST;
        self.write_internal(STATUS, &status.to_le_bytes());
        Ok(offset + needed)
    }

    /// Walks the capability list as the guest would: `(offset, id)` pairs.
    /// Stops at a null pointer, a pointer into the header, or after a bounded
    /// number of steps, so a corrupt chain cannot loop.
    pub fn capabilities(&self) -> Vec<(usize, u8)> {
        let mut found = Vec::new();
        if self.status() & STATUS_CAPABILITIES_LIST == 0 {
            return found;
        }
        let mut next = usize::from(self.read_u8(CAPABILITIES_POINTER) & !0x3);
        while next >= FIRST_CAPABILITY && found.len() < MAX_CHAIN {
            found.push((next, self.read_u8(next)));
            next = usize::from(self.read_u8(next + 1) & !0x3);
        }
        found
    }

    /// Offset of the first capability with `id`.
    pub fn find_capability(&self, id: u8) -> Option<usize> {
        self.capabilities()
            .into_iter()
            .find(|(_, cap)| *cap == id)
            .map(|(offset, _)| offset)
    }
}
