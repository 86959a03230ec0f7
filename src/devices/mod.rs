//! Emulated devices and the buses that route guest port and MMIO accesses to them.

pub mod bus;
pub mod cmos;
pub mod ged;
pub mod legacy;
pub mod pci_hotplug;
pub mod pci_root;
pub mod serial;
pub mod vfio;
pub mod virtio;

pub use bus::{Bus, BusDevice};
