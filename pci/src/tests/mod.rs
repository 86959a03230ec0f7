//! Unit and property tests of the PCI crate, one file per concept, plus the
//! fakes they share.

mod bar;
mod bus_setup;
mod config;
mod ecam;
mod fakes;
mod intx;
mod legacy_io;
mod msi;
mod msix;
mod proptests;
mod routing;
