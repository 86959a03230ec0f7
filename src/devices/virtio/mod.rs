//! Emulated virtio 1.x devices on PCI: the seam between the modern PCI
//! transport and a device model, and the device models: virtio-net on a tap,
//! virtio-rng.
//!
//! | file | owns |
//! | --- | --- |
//! | `pci_transport.rs` | [`VirtioPciDevice`]: config space, the virtio capabilities and BAR 0 layout, notify ioeventfds, activation and reset |
//! | `common_cfg.rs` | the common configuration structure: features, queue setup, the device status state machine |
//! | `interrupt.rs` | [`VirtioInterrupts`]: MSI-X vectors per queue, ISR status and the INTx fallback, NEEDS_RESET |
//! | `queue.rs` | bounded, checked copies between guest descriptor chains and host buffers |
//! | `blk/` | [`Block`] (virtio-blk): [`DiskOptions`], disk images (raw, block devices, qcow2), OFD locks, requests, its worker |
//! | `net.rs` | [`Net`]: features, config space, starting the worker |
//! | `tap.rs` | [`Tap`]: opening or creating a tap with a virtio-net header, offloads |
//! | `thread.rs` | what every device worker thread shares: start, stop and join ([`thread::WorkerHandle`]), taking chains off a queue |
//! | `worker.rs` | the per-device thread moving frames between the queues and the tap |
//! | `rng.rs` | [`Rng`]: virtio-rng, its queue served from the host's entropy source on its own thread |
//! | `vsock/` | [`vsock::Vsock`]: virtio-vsock with the hybrid UNIX-socket backend (`CONNECT <port>`, `PATH_P`) |
//! | `tests.rs`, `net_tests.rs` | transport tests with fakes; virtio-net end to end on a real tap |
//!
//! # Wiring in the VMM
//!
//! ```text
//! let addr = PciAddress::new(0, slot, 0)?;           // the slot it will occupy
//! let dev = virtio::new_net_pci(&net_config, index, addr, mem.clone(),
//!                               interrupts.clone(), vm_fd.clone())?;
//! bus.lock().add_device_at(addr.device(), Box::new(dev))?;
//! // ... bus.assign_bars(); dropping the bus at exit stops the worker and closes the tap.
//! ```

pub mod blk;
pub mod common_cfg;
pub mod interrupt;
pub mod net;
pub mod pci_transport;
pub mod queue;
pub mod rng;
pub mod seccomp;
pub mod tap;
pub mod thread;
pub mod vsock;
pub mod worker;

#[cfg(test)]
mod fuzz_chains;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod rng_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::config::NetConfig;
use crate::memory::GuestMemory;

pub use blk::{BlkError, Block, DiskOptions};
pub use interrupt::VirtioInterrupts;
pub use net::{Net, NetError};
pub use pci_transport::{TransportError, VirtioPciDevice};
pub use rng::{Rng, RngError};
pub use tap::{Tap, TapError};

/// Virtio device status: the driver found the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Virtio device status: the driver knows how to drive it.
pub const STATUS_DRIVER: u8 = 2;
/// Virtio device status: the driver is ready; the device may run.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Virtio device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Virtio device status: the device hit an error and needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 64;
/// Virtio device status: the driver gave up on the device.
pub const STATUS_FAILED: u8 = 128;

/// Feature bit: virtio 1.x (modern) device.
pub const F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// Feature bit: indirect descriptors.
pub const F_INDIRECT_DESC: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// Feature bit: used_event / avail_event notification suppression.
pub const F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Vector number meaning "no MSI-X vector".
pub const NO_VECTOR: u16 = 0xffff;

/// Where notification eventfds get registered: KVM in the VMM, a fake in tests.
pub trait IoEventRegistry: Send + Sync {
    /// Makes guest writes to MMIO address `addr` signal `evt` (any length, any data).
    fn register(&self, evt: &EventFd, addr: u64) -> std::io::Result<()>;
    /// Undoes [`IoEventRegistry::register`].
    fn unregister(&self, evt: &EventFd, addr: u64) -> std::io::Result<()>;
}

impl IoEventRegistry for VmFd {
    fn register(&self, evt: &EventFd, addr: u64) -> std::io::Result<()> {
        self.register_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, evt: &EventFd, addr: u64) -> std::io::Result<()> {
        self.unregister_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

/// What a device model gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    /// Guest RAM, shared with the worker.
    pub mem: GuestMemory,
    /// Features the driver accepted.
    pub features: u64,
    /// The queues, validated against guest RAM, in queue index order.
    pub queues: Vec<Queue>,
    /// One notification eventfd per queue (duplicates of the transport's).
    pub queue_evts: Vec<EventFd>,
    /// Interrupt delivery and the NEEDS_RESET flag.
    pub interrupts: Arc<VirtioInterrupts>,
}

/// A virtio device model behind [`VirtioPciDevice`].
pub trait VirtioDevice: Send {
    /// Virtio device type (1 for a network card); the PCI device ID is 0x1040 + type.
    fn device_type(&self) -> u16;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration at `offset` (zero past its end).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration at `offset` (read-only fields ignore it).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device; an error marks it NEEDS_RESET.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), String>;
    /// Stops the device (worker joined) so that it can be activated again.
    fn reset(&mut self);
}

/// Answers a guest read of `data.len()` bytes at `offset` from a register
/// block laid out as bytes in `image` (any size; zero past its end).
pub fn read_image(image: &[u8], offset: u64, data: &mut [u8]) {
    for (i, out) in data.iter_mut().enumerate() {
        *out = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| image.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// Builds the PCI virtio-net device for `config` (the `index`th `--net`) at
/// `address`, with its tap opened (created if missing) and its vectors allocated.
pub fn new_net_pci(
    config: &NetConfig,
    index: usize,
    address: pci::PciAddress,
    mem: GuestMemory,
    interrupts: Arc<dyn pci::InterruptManager>,
    ioevents: Arc<dyn IoEventRegistry>,
) -> Result<VirtioPciDevice, NetError> {
    let net = Net::new(config, index)?;
    VirtioPciDevice::new(Box::new(net), address, mem, interrupts.as_ref(), ioevents)
        .map_err(NetError::Transport)
}

/// Builds the PCI virtio-blk device for `options` at `address`, with its
/// image opened, checked and locked and its vectors allocated.
pub fn new_blk_pci(
    options: &DiskOptions,
    address: pci::PciAddress,
    mem: GuestMemory,
    interrupts: Arc<dyn pci::InterruptManager>,
    ioevents: Arc<dyn IoEventRegistry>,
) -> Result<VirtioPciDevice, BlkError> {
    let blk = Block::new(options)?;
    VirtioPciDevice::new(Box::new(blk), address, mem, interrupts.as_ref(), ioevents).map_err(
        |source| BlkError::Transport {
            path: options.path.clone(),
            source,
        },
    )
}
