//! KVM state: the VM (memory slots, in-kernel irqchip and PIT) and its vCPUs, and the gate that pauses them.

pub mod gate;
pub mod irq;
pub mod seccomp;
pub mod vcpu;
pub mod vm;
