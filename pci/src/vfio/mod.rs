//! PCI passthrough through VFIO: [`VfioPciDevice`] is a host PCI function
//! presented on our bus. Its logic only talks to the [`VfioDeviceOps`] and
//! [`GuestMapper`] traits, which the VMM implements over `vfio-ioctls` and
//! KVM memory slots, so everything here is unit tested with fakes.
//!
//! | file | owns |
//! | --- | --- |
//! | `ops.rs` | the backend traits, region/interrupt indices, [`RegionInfo`] |
//! | `config.rs` | [`ConfigLayout`]: shadow vs device per config byte, hidden capabilities |
//! | `bars.rs` | [`mmap_areas`] (what of a BAR maps without exits), [`BarMappings`] / [`BarHandle`] |
//! | `irq.rs` | [`IrqRouting`]: INTx / MSI / MSI-X through VFIO with one eventfd per vector |
//! | `build.rs` | [`VfioPciDevice::attach`] and [`VfioPciError`] |
//! | `device.rs` | the [`crate::PciDevice`] implementation |
//! | `stats.rs` | [`VfioStats`]: trapped accesses and relayed interrupts for the exit report |
//!
//! # Using it from the VMM
//!
//! ```text
//! let dev = VfioPciDevice::attach(ops, AttachContext { name, address, interrupts, mapper, options })?;
//! let bars = dev.bar_handle();            // keep: maps BARs after assign_bars
//! let stats = dev.stats();                // keep: printed at exit
//! bus.add_device_at(address.device(), Box::new(dev))?;
//! for p in bus.assign_bars()? { if p.address == address { bars.place(p.bar, p.base)?; } }
//! ```
//!
//! Guest BAR moves arrive through `PciDevice::move_bar` and move the slots.

mod bars;
mod build;
mod config;
mod device;
mod irq;
mod ops;
mod stats;

#[cfg(test)]
mod tests;

pub use bars::{mmap_areas, BarHandle, BarMappings};
pub use build::{AttachContext, VfioPciError, VfioPciOptions};
pub use config::{extended_capabilities, standard_capabilities, ConfigLayout, HIDDEN_EXT_CAPS};
pub use device::VfioPciDevice;
pub use irq::{IrqError, IrqMode, IrqRouting};
pub use ops::{
    Area, GuestMapper, MapError, MappedArea, RegionInfo, ResetOutcome, SlotId, VfioDeviceOps,
    VfioOpsError, BAR0_REGION, CONFIG_REGION, INTX_IRQ, MSIX_IRQ, MSI_IRQ, PAGE_SIZE, ROM_REGION,
};
pub use stats::{BarSummary, CountingLine, CountingVector, VfioStats};
