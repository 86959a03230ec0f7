//! The KVM VM: opening /dev/kvm with a clear error, registering guest RAM as
//! memory slots, and creating the in-kernel IOAPIC, PIC, LAPICs and PIT (with
//! its tick reinjection policy).

use kvm_bindings::{
    kvm_pit_config, kvm_reinject_control, kvm_userspace_memory_region, CpuId, KVMIO,
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use std::sync::Arc;

use kvm_ioctls::{Kvm, VmFd};
use nix::errno::Errno;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_io_nr;

use crate::layout;
use crate::memory::GuestMemory;

/// Errors while creating the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm does not exist.
    #[error("/dev/kvm does not exist: enable virtualization (VT-x/AMD-V) in firmware and load kvm_intel or kvm_amd")]
    NoKvm,
    /// /dev/kvm is not accessible.
    #[error(
        "cannot open /dev/kvm: permission denied: add this user to the group of /dev/kvm (`usermod -aG kvm USER`, then log in again) or run as root; `vfio-vmm host check --user USER` lists what else it lacks"
    )]
    KvmAccess,
    /// Another error opening /dev/kvm.
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(kvm_ioctls::Error),
    /// A VM-level KVM ioctl failed.
    #[error("KVM cannot {what}: {err}")]
    Kvm {
        /// What we asked of KVM.
        what: &'static str,
        /// The ioctl's error.
        err: kvm_ioctls::Error,
    },
    /// More vCPUs than KVM allows.
    #[error("--cpus {want} is more than KVM allows here ({max}): use fewer vCPUs")]
    TooManyCpus {
        /// Asked for.
        want: u8,
        /// KVM's limit.
        max: usize,
    },
}

// kvm-ioctls 0.25 has no wrapper for it. `_IO`, though it takes a pointer:
// that is how <linux/kvm.h> defines it.
ioctl_io_nr!(KVM_REINJECT_CONTROL, KVMIO, 0x71);

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |err| VmError::Kvm { what, err }
}

/// An open KVM VM.
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
}

impl Vm {
    /// Opens /dev/kvm and creates an empty VM.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(|e| match Errno::from_raw(e.errno()) {
            Errno::ENOENT => VmError::NoKvm,
            Errno::EACCES | Errno::EPERM => VmError::KvmAccess,
            _ => VmError::KvmOpen(e),
        })?;
        let fd = kvm.create_vm().map_err(kvm_err("create a VM"))?;
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
        })
    }

    /// The VM's file descriptor, for devices that register irqfds and slots.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The VM's file descriptor, shared with devices that outlive this borrow.
    pub fn shared_fd(&self) -> Arc<VmFd> {
        self.fd.clone()
    }

    /// Refuses `cpus` above KVM's limit.
    pub fn check_cpus(&self, cpus: u8) -> Result<(), VmError> {
        let max = self.kvm.get_max_vcpus();
        if usize::from(cpus) > max {
            return Err(VmError::TooManyCpus { want: cpus, max });
        }
        Ok(())
    }

    /// The CPUID leaves KVM can give a guest.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("report supported CPUID"))
    }

    /// Makes each RAM region a KVM memory slot.
    pub fn map_memory(&self, mem: &GuestMemory) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the
            // caller keeps alive for as long as the VM (and its vCPUs) run.
            unsafe { self.fd.set_user_memory_region(desc) }.map_err(kvm_err("map guest RAM"))?;
        }
        Ok(())
    }

    /// Creates the in-kernel IOAPIC/PIC/LAPICs and the PIT.
    pub fn create_irqchip_and_pit(&self) -> Result<(), VmError> {
        self.fd
            .set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("set the identity map address"))?;
        self.fd
            .set_tss_address(layout::KVM_TSS_ADDR as usize)
            .map_err(kvm_err("set the TSS address"))?;
        self.fd
            .create_irq_chip()
            .map_err(kvm_err("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(kvm_err("create the PIT"))
    }

    /// Tells KVM whether to reinject PIT ticks the guest missed (KVM's
    /// default) or drop them. Needs the PIT.
    pub fn set_pit_reinject(&self, reinject: bool) -> Result<(), VmError> {
        let control = kvm_reinject_control {
            pit_reinject: u8::from(reinject),
            ..Default::default()
        };
        // SAFETY: the fd is our open VM; KVM_REINJECT_CONTROL reads one
        // kvm_reinject_control, which `control` is, alive for the call.
        let ret = unsafe { ioctl_with_ref(self.fd.as_ref(), KVM_REINJECT_CONTROL(), &control) };
        if ret < 0 {
            return Err(VmError::Kvm {
                what: "set the PIT's tick reinjection (KVM_REINJECT_CONTROL)",
                err: kvm_ioctls::Error::last(),
            });
        }
        Ok(())
    }
}
