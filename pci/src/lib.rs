//! PCI for vfio-vmm: configuration space, BARs, MSI/MSI-X, the bus of
//! segment 0 with its host bridge, and the two ways the guest reaches
//! config space (legacy ports 0xCF8/0xCFC and ECAM).
//!
//! Nothing here talks to KVM. Interrupt delivery goes through the traits in
//! [`interrupt`], which the VMM implements (GSI routes + irqfds).
//!
//! | file | owns |
//! | --- | --- |
//! | `config.rs` | [`PciConfig`]: register bytes, write / RW1C masks, header, BAR registers |
//! | `capability.rs` | capability list builder and walker, [`PciCapability`] |
//! | `bar.rs` | [`BarKind`], [`BarDef`], [`BarMove`], [`BarPlacement`] |
//! | `bar_allocator.rs` | [`PciWindows`] and [`BarAllocator`] (firmware-style placement) |
//! | `bar_routing.rs` | routing MMIO/PIO to BARs, accepting or refusing BAR moves |
//! | `msi.rs` / `msix.rs` | [`Msi`] and [`Msix`] capabilities and runtime |
//! | `interrupt.rs` | [`MsiVector`], [`IntxLine`], [`InterruptManager`] |
//! | `intx.rs` | [`Intx`]: level, INTx Disable, Interrupt Status bit |
//! | `device.rs` | [`PciDevice`] trait, [`PciAddress`] |
//! | `bus.rs` | [`PciBus`]: slots, BAR assignment, config dispatch |
//! | `host_bridge.rs` | [`HostBridge`] at 00:00.0 |
//! | `legacy_io.rs` / `ecam.rs` | the two config access front ends |
//! | `vfio/` | [`vfio::VfioPciDevice`]: a host function passed through VFIO |
//!
//! # Wiring in the VMM
//!
//! ```text
//! let mut bus = PciBus::new(PciWindows {
//!     mmio32: Some(Window { base: 0xc000_0000, size: 0x3000_0000 }),  // below the ECAM/APIC hole
//!     mmio64: Some(Window { base: 1 << 40, size: 1 << 38 }),
//!     io: Some(Window { base: 0xc000, size: 0x4000 }),
//! })?;
//! bus.reserve_mmio(Window { base: ECAM_BASE, size: ECAM_BUS_SIZE });
//! bus.reserve_io(Window { base: 0xcf8, size: 8 });
//! let addr = bus.add_device(Box::new(my_device))?;
//! for p in bus.assign_bars()? { /* map VFIO BAR p at p.base, register ioeventfds */ }
//! let bus = Mutex::new(bus);
//!
//! // vCPU exit handlers:
//! // port I/O 0xCF8..=0xCFF   -> bus.config_port_read(port - 0xCF8, data)
//! //                             bus.config_port_write(port - 0xCF8, data) -> Vec<BarMove>
//! // MMIO [ECAM_BASE, +1 MiB) -> bus.ecam_read(addr - ECAM_BASE, data)
//! //                             bus.ecam_write(addr - ECAM_BASE, data)     -> Vec<BarMove>
//! // any other MMIO           -> if !bus.mmio_read(addr, data) { /* not PCI: next handler */ }
//! //                             bus.mmio_write(addr, data) -> bool
//! // any other port I/O       -> bus.pio_read(port, data) / bus.pio_write(port, data) -> bool
//! //
//! // Each BarMove { address, bar, kind, old, new, size } says a BAR was
//! // accepted at `new`: move whatever the VMM mapped at `old` (KVM memory
//! // slots of a VFIO BAR, ioeventfds of a virtio notify BAR).
//! ```
//!
//! # Writing a device
//!
//! A device owns a [`PciConfig`] (built from a [`PciHeader`], BARs declared
//! with [`PciConfig::add_bar`]), optionally an [`Msi`] / [`Msix`] built with
//! `add(&mut config, CapabilityPlace::Append, capability, vectors)` from vectors the
//! [`InterruptManager`] allocated, and implements [`PciDevice`]. Its
//! `config_write` applies the write to the config and then calls
//! `msix.config_written(&config, offset, len)` (and the MSI equivalent); its
//! `bar_read`/`bar_write` offer the access to `msix.bar_read`/`bar_write`
//! first. To signal, it calls `msix.trigger(vector)`; a VFIO device instead
//! hands `msix.vector(i).and_then(|v| v.eventfd())` to the kernel. INTx
//! goes through [`Intx`] (`set_level`, plus `config_written` for INTx
//! Disable) on a line from [`InterruptManager::allocate_intx`].

#![forbid(unsafe_code)]

pub mod bar;
pub mod bar_allocator;
pub mod bar_routing;
pub mod bus;
pub mod capability;
pub mod config;
pub mod device;
pub mod ecam;
pub mod host_bridge;
pub mod interrupt;
pub mod intx;
pub mod legacy_io;
pub mod msi;
pub mod msix;
pub mod vfio;

#[cfg(test)]
mod tests;

pub use bar::{BarDef, BarError, BarKind, BarMove, BarPlacement, NUM_BARS, ROM_BAR};
pub use bar_allocator::{BarAllocError, BarAllocator, PciWindows, Window, WindowKind};
pub use bar_routing::PlacementError;
pub use bus::{BusError, PciBus};
pub use capability::{CapabilityError, CapabilityPlace, PciCapability, RawCapability};
pub use config::{ConfigError, PciConfig, PciHeader};
pub use device::{DeviceError, PciAddress, PciDevice};
pub use ecam::ECAM_BUS_SIZE;
pub use host_bridge::HostBridge;
pub use interrupt::{
    Delivery, InterruptError, InterruptManager, IntxLine, IntxPin, MsiMessage, MsiVector,
};
pub use intx::Intx;
pub use legacy_io::{CONFIG_ADDRESS_PORT, CONFIG_PORTS_LEN};
pub use msi::{Msi, MsiCapability, MsiError};
pub use msix::{Msix, MsixCapability, MsixEntry, MsixError};
