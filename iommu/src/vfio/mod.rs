//! VFIO for the VMM: everything between "the user named a PCI device" and
//! "the guest may DMA to its RAM". Checks from sysfs first ([`preflight`](mod@preflight),
//! [`memlock`]), then one container per VM registered with KVM's VFIO
//! pseudo-device ([`container`]), device handles ([`device`]), the IOMMU's
//! address limits ([`iova`]) and a guest layout that respects them
//! ([`layout`]). The ioctls vfio-ioctls lacks are in [`ioctl`].
//!
//! Order of use (see `src/devices/vfio.rs` for the VMM side):
//! 1. [`preflight::preflight`] on the BDFs: every user error, before any file is opened;
//! 2. [`container::Container::new`] on the VM fd, then `open_device` for each;
//! 3. [`iova::IovaConstraints`] from `iova_ranges()` and [`iova::reserved_regions`],
//!    [`layout::plan`] for RAM and the 64-bit window;
//! 4. [`memlock::check`] on the RAM size, then `map_dma` for each RAM region;
//! 5. at exit: [`device::DeviceHandle::release`] each device, `unmap_all`, drop.

pub mod container;
pub mod device;
pub mod ioctl;
pub mod iova;
pub mod layout;
pub mod memlock;
pub mod preflight;

#[cfg(test)]
mod tests;

pub use container::{Container, ContainerError};
pub use device::{DeviceError, DeviceHandle, RegionDesc, RegionMmap};
pub use iova::{IovaConstraints, IovaError, IovaRange, ReservedRegion};
pub use layout::{plan, GuestLayout, LayoutError, LayoutRequest};
pub use memlock::MemlockError;
pub use preflight::{preflight, PlannedDevice, PreflightError};
