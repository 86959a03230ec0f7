//! IOMMU side of vfio-vmm, in three layers; imports only go down.
//! - At the bottom, the host as the kernel shows it: PCI addresses ([`bdf`]), reads of
//!   sysfs/procfs through a replaceable root ([`sysfs`]), IOMMU groups and their viability
//!   ([`group`]), processes holding VFIO files and this process's limits ([`process`]),
//!   pci.ids names ([`pciids`]) and the size grammar and printer ([`size`]).
//! - The VFIO runtime a VM uses ([`vfio`]): preflight from sysfs, the container, device
//!   handles, DMA mapping, IOVA limits and the guest layout that respects them.
//! - The admin tooling ([`setup`]) behind `vfio-vmm host check|list|bind|unbind`, which
//!   also writes to sysfs. `vfio` and `setup` never import each other.

pub mod bdf;
pub mod group;
pub mod pciids;
pub mod process;
pub mod setup;
pub mod size;
pub mod sysfs;
pub mod vfio;

pub use bdf::{Bdf, BdfError};
