//! The vCPU threads' allow-list: KVM_RUN, and what the device emulation
//! its exits reach does: VFIO config space and trapped BAR accesses
//! (pread/pwrite), MSI/MSI-X and INTx changes (VFIO_DEVICE_SET_IRQS, KVM
//! irqfd and GSI routing), BARs moved by the guest (memory slots, mmap),
//! virtio activation (eventfds, tap offloads, the vsock muxer's epoll set;
//! the worker itself comes from the spawner), the serial console's output,
//! and the exit latch.

use std::mem::size_of;

use kvm_bindings::{
    kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irqfd, kvm_msi, kvm_userspace_memory_region,
};
use nix::{request_code_none, request_code_write};

use crate::seccomp::{base, AllowList, FIONBIO};

const KVMIO: u8 = 0xae;
const VFIO: u8 = b';';

/// The ioctls a vCPU thread makes.
fn ioctls() -> Vec<u64> {
    vec![
        request_code_none!(KVMIO, 0x80), // KVM_RUN
        request_code_write!(KVMIO, 0x76, size_of::<kvm_irqfd>()) as u64, // KVM_IRQFD
        request_code_write!(KVMIO, 0x79, size_of::<kvm_ioeventfd>()) as u64, // KVM_IOEVENTFD
        request_code_write!(KVMIO, 0x6a, size_of::<kvm_irq_routing>()) as u64, // KVM_SET_GSI_ROUTING
        request_code_write!(KVMIO, 0x46, size_of::<kvm_userspace_memory_region>()) as u64, // KVM_SET_USER_MEMORY_REGION
        request_code_write!(KVMIO, 0x61, size_of::<kvm_irq_level>()) as u64, // KVM_IRQ_LINE
        request_code_write!(KVMIO, 0xa5, size_of::<kvm_msi>()) as u64,       // KVM_SIGNAL_MSI
        request_code_none!(VFIO, 100 + 8), // VFIO_DEVICE_GET_REGION_INFO
        request_code_none!(VFIO, 100 + 9), // VFIO_DEVICE_GET_IRQ_INFO
        request_code_none!(VFIO, 100 + 10), // VFIO_DEVICE_SET_IRQS
        request_code_none!(VFIO, 100 + 11), // VFIO_DEVICE_RESET
        request_code_write!(b'T', 208, size_of::<libc::c_uint>()) as u64, // TUNSETOFFLOAD
        request_code_write!(b'T', 216, size_of::<libc::c_int>()) as u64, // TUNSETVNETHDRSZ
        FIONBIO,
    ]
}

/// What a vCPU thread may call.
pub fn vcpu() -> AllowList {
    base()
        .calls(&[
            libc::SYS_read,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_eventfd2,
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            libc::SYS_fcntl,
            libc::SYS_dup,
            libc::SYS_tgkill,
            libc::SYS_gettid,
            libc::SYS_getpid,
        ])
        .ioctls(&ioctls())
}
