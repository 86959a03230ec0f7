//! BAR mappings as KVM memory slots: [`KvmBarMapper`] implements
//! `pci::vfio::GuestMapper`, numbering slots from [`FIRST_BAR_SLOT`] up to
//! KVM's limit and reusing freed numbers, so BARs can move freely.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, VmFd};
use pci::vfio::{GuestMapper, MapError, SlotId};

/// First KVM memory slot used for BARs (guest RAM uses the slots below).
pub const FIRST_BAR_SLOT: u32 = 16;

/// Maps BAR pieces into the guest as KVM memory slots, numbered from
/// [`FIRST_BAR_SLOT`] up to KVM's limit, reusing freed numbers.
pub struct KvmBarMapper {
    /// The VM.
    vm: Arc<VmFd>,
    /// Slot numbers in use.
    used: Mutex<BTreeSet<u32>>,
    /// One past the highest slot KVM accepts.
    limit: u32,
}

impl KvmBarMapper {
    /// A mapper for `vm`, handing out slots from [`FIRST_BAR_SLOT`] up.
    pub fn new(vm: Arc<VmFd>) -> Self {
        let limit = u32::try_from(vm.check_extension_int(Cap::NrMemslots))
            .unwrap_or(0)
            .max(FIRST_BAR_SLOT + 16);
        KvmBarMapper {
            vm,
            used: Mutex::default(),
            limit,
        }
    }

    /// Sets slot `slot` (size 0 deletes it).
    fn set(&self, slot: u32, gpa: u64, size: u64, host: u64) -> Result<(), kvm_ioctls::Error> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: `host..host + size` is a live mmap of a device region owned
        // by the BarMappings that asked for it, which deletes the slot (this
        // call with size 0) before dropping the mapping.
        unsafe { self.vm.set_user_memory_region(region) }
    }
}

impl GuestMapper for KvmBarMapper {
    fn map(&self, gpa: u64, size: u64, host_addr: u64) -> Result<SlotId, MapError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (FIRST_BAR_SLOT..self.limit)
            .find(|s| !used.contains(s))
            .ok_or(MapError::NoSlot { used: used.len() })?;
        self.set(slot, gpa, size, host_addr)
            .map_err(|e| MapError::Map {
                gpa,
                size,
                reason: e.to_string(),
            })?;
        used.insert(slot);
        Ok(SlotId(slot))
    }

    fn unmap(&self, slot: SlotId) -> Result<(), MapError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.set(slot.0, 0, 0, 0).map_err(|e| MapError::Map {
            gpa: 0,
            size: 0,
            reason: format!("deleting slot {}: {e}", slot.0),
        })?;
        used.remove(&slot.0);
        Ok(())
    }
}
