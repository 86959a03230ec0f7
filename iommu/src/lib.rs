//! IOMMU side of vfio-vmm. This crate owns the host view of IOMMU groups and the host
//! tooling built on it (`vfio-vmm host check|list|bind|unbind`): reading sysfs through a
//! replaceable root ([`sysfs`]), PCI addresses ([`bdf`]), group viability ([`group`]),
//! pci.ids names ([`pciids`]) and the commands themselves ([`host`]), plus the VFIO
//! handles a VM uses: container, devices, DMA mapping and IOVA limits ([`vfio`]).

pub mod bdf;
pub mod group;
pub mod host;
pub mod pciids;
pub mod process;
pub mod size;
pub mod sysfs;
pub mod vfio;

pub use bdf::{Bdf, BdfError};
