//! vfio-vmm: a small KVM virtual machine monitor for PCI passthrough.
//!
//! Data flows one way, through three seams:
//! - [`config`]: a [`config::VmConfig`] is plain data, produced by the
//!   command line (the binary's `cli/`) or from JSON (cloud-hypervisor's
//!   `VmConfig`), and validated before any resource is taken;
//! - [`builder`]: the one place a VM is assembled from it (passthrough
//!   checks, console, KVM VM, VFIO devices, RAM, buses, devices, kernel,
//!   ACPI), giving a [`vmm::Machine`] or a [`builder::BuildError`];
//! - [`vmm`]: the machine's vCPUs run until the guest stops, then everything
//!   is torn down in order.

pub mod api;
pub mod bench;
pub mod boot;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod hotplug;
pub mod layout;
pub mod memory;
pub mod seccomp;
pub mod thread_filters;
pub mod vmm;
pub mod vstate;

// The pci crate's fuzz harness, compiled here too (one file, two crates).
#[cfg(test)]
#[path = "../pci/src/tests/fuzz_support.rs"]
mod fuzz_support;
