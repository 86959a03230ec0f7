//! vfio-vmm: a small KVM virtual machine monitor for PCI passthrough.
//!
//! Data flows one way: a [`config::VmConfig`] is built into a [`vstate::vm::Vm`]
//! (memory, boot state, devices), whose vCPUs then run until the guest stops.

pub mod bench;
pub mod boot;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod layout;
pub mod memory;
pub mod vmm;
pub mod vstate;
