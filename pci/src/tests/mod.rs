//! Unit and property tests of the PCI crate, one file per concept, plus the
//! fakes they share.

mod bar;
pub(crate) mod bus_setup;
mod config;
mod ecam;
pub(crate) mod fakes;
pub(crate) mod fuzz_pci;
pub(crate) mod fuzz_support;
mod intx;
mod legacy_io;
mod msi;
mod msix;
pub(crate) mod proptests;
mod routing;
