//! IOMMU side of vfio-vmm. This crate owns the host view of IOMMU groups and the host
//! tooling built on it (`vfio-vmm host check|list|bind|unbind`): reading sysfs through a
//! replaceable root ([`sysfs`]), PCI addresses ([`bdf`]), group viability ([`group`]),
//! pci.ids names ([`pciids`]) and the commands themselves ([`host`]).

pub mod bdf;
pub mod group;
pub mod host;
pub mod pciids;
pub mod sysfs;

pub use bdf::{Bdf, BdfError};
