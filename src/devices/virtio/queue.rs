//! Moving bytes between host buffers and the guest buffers of a descriptor
//! chain. Every guest access goes through vm-memory's checked `read_slice` /
//! `write_slice`, so a descriptor pointing outside guest RAM is an error,
//! never an out-of-bounds access; lengths are summed with checked arithmetic.
//!
//! The rings themselves (descriptor table walk, available and used rings,
//! notification suppression) are the `virtio-queue` crate's `Queue`.

use std::ops::Deref;

use thiserror::Error;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::memory::GuestMemory;

/// Errors copying to or from a chain.
#[derive(Debug, Error)]
pub enum ChainError {
    /// A descriptor names memory outside guest RAM (the guest is broken).
    #[error("descriptor {addr:#x}+{len:#x} is outside guest RAM: {source}")]
    BadBuffer {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
        /// What vm-memory said.
        #[source]
        source: GuestMemoryError,
    },
    /// The chain's buffers add up to more than we accept.
    #[error("descriptor chain carries {len} bytes, more than {max}")]
    TooLong {
        /// Bytes in the chain (saturated).
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The chain's buffers cannot hold the data.
    #[error("descriptor chain has room for {room} bytes, {needed} needed")]
    TooShort {
        /// Room in the chain.
        room: usize,
        /// Bytes to place.
        needed: usize,
    },
}

/// The guest buffers of one chain in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// Descriptor index of the chain head (what goes into the used ring).
    pub head: u16,
    /// (address, length) of each buffer, in chain order.
    pub parts: Vec<(GuestAddress, u32)>,
    /// Sum of the lengths (saturating at `usize::MAX`).
    pub total: usize,
}

impl Segments {
    /// Collects the device-writable (`writable`) or device-readable buffers
    /// of `chain`. The chain walker stops at a bad descriptor index or a loop
    /// (its length is bounded by the queue size).
    pub fn collect<M>(chain: DescriptorChain<M>, writable: bool) -> Self
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let head = chain.head_index();
        let mut parts = Vec::new();
        let mut total = 0usize;
        for desc in chain.filter(|d| d.is_write_only() == writable) {
            if desc.len() == 0 {
                continue;
            }
            total = total.saturating_add(usize::try_from(desc.len()).unwrap_or(usize::MAX));
            parts.push((desc.addr(), desc.len()));
        }
        Segments { head, parts, total }
    }

    /// Copies the buffers, in order, into `out` (cleared first). Fails
    /// without touching guest memory when they hold more than `max` bytes.
    pub fn gather(
        &self,
        mem: &GuestMemory,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ChainError> {
        if self.total > max {
            return Err(ChainError::TooLong {
                len: self.total,
                max,
            });
        }
        out.clear();
        out.resize(self.total, 0);
        let mut at = 0usize;
        for (addr, len) in &self.parts {
            let n = *len as usize;
            let Some(dst) = at.checked_add(n).and_then(|end| out.get_mut(at..end)) else {
                // Cannot happen: total is the sum of the lengths and <= max.
                return Err(ChainError::TooLong {
                    len: self.total,
                    max,
                });
            };
            mem.read_slice(dst, *addr)
                .map_err(|source| ChainError::BadBuffer {
                    addr: addr.0,
                    len: *len,
                    source,
                })?;
            at += n;
        }
        Ok(())
    }

    /// Copies `data` into the buffers in order. Fails without touching guest
    /// memory when they cannot hold it all.
    pub fn scatter(&self, mem: &GuestMemory, data: &[u8]) -> Result<(), ChainError> {
        if self.total < data.len() {
            return Err(ChainError::TooShort {
                room: self.total,
                needed: data.len(),
            });
        }
        let mut rest = data;
        for (addr, len) in &self.parts {
            if rest.is_empty() {
                break;
            }
            let n = rest.len().min(*len as usize);
            let (now, later) = rest.split_at(n);
            mem.write_slice(now, *addr)
                .map_err(|source| ChainError::BadBuffer {
                    addr: addr.0,
                    len: *len,
                    source,
                })?;
            rest = later;
        }
        Ok(())
    }
}
