//! virtio-net on a tap: the device model [`Net`] for a
//! [`NetConfig`] (parsed in `config::net`) — the
//! features it offers (checksum and TSO offloads in both directions, the
//! guest-bound ones only if the tap accepts them), its configuration space
//! (MAC, link up) and the worker it starts on DRIVER_OK.
//!
//! One receive queue (0) and one transmit queue (1); no control queue, no
//! mergeable receive buffers: a guest that accepts TSO posts 64 KiB buffers.

use thiserror::Error;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::QueueT;

use super::tap::{Tap, TapError, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use super::thread::WorkerHandle;
use super::worker::{NetWorker, WorkerError};
use super::{ActivateContext, VirtioDevice, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1};
use crate::config::{MacAddress, NetConfig};

/// Virtio device type of a network card.
pub const NET_DEVICE_TYPE: u16 = 1;
/// Ring size of each queue.
pub const QUEUE_SIZE: u16 = 256;

/// Feature bit `bit` as a mask.
const fn bit(bit: u32) -> u64 {
    1 << bit
}

/// Features offered whatever the tap supports.
const BASE_FEATURES: u64 = F_VERSION_1
    | F_EVENT_IDX
    | F_INDIRECT_DESC
    | bit(VIRTIO_NET_F_MAC)
    | bit(VIRTIO_NET_F_STATUS)
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6);
/// Guest-bound offloads, offered when the tap takes TUNSETOFFLOAD.
const GUEST_OFFLOADS: u64 =
    bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6);

/// Errors building a virtio-net device.
#[derive(Debug, Error)]
pub enum NetError {
    /// The tap could not be opened or configured.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The PCI side of the device could not be built.
    #[error("virtio-net PCI function: {0}")]
    Transport(#[source] super::pci_transport::TransportError),
}

// NetError crosses threads (the builder reports it from wherever the device
// was built): checked at compile time.
const _: fn() = || {
    fn error_that_crosses_threads<T: std::error::Error + Send + Sync + 'static>() {}
    error_that_crosses_threads::<NetError>();
};

/// The virtio-net device model.
pub struct Net {
    /// The tap (the worker gets a duplicate).
    tap: Tap,
    /// The guest's MAC address.
    mac: MacAddress,
    /// Features offered.
    features: u64,
    /// Maximum queue sizes (receive, transmit).
    queue_sizes: [u16; 2],
    /// The running worker, between DRIVER_OK and reset.
    worker: Option<WorkerHandle>,
}

impl Net {
    /// Opens the tap of `config` (the `index`th `--net`) and works out the
    /// features it supports.
    pub fn new(config: &NetConfig, index: usize) -> Result<Self, NetError> {
        let tap = Tap::open(&config.tap)?;
        Ok(Net::with_tap(tap, config.mac_for(index)))
    }

    /// A device on an already open tap.
    pub fn with_tap(tap: Tap, mac: MacAddress) -> Self {
        let mut features = BASE_FEATURES;
        // Guest-bound offloads only if the kernel lets this tap carry them;
        // until the driver says what it accepts, the tap gets none.
        if tap
            .set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            .is_ok()
        {
            features |= GUEST_OFFLOADS;
        }
        if let Err(e) = tap.set_offload(0) {
            log::warn!("tap {}: {e}", tap.name());
        }
        Net {
            tap,
            mac,
            features,
            queue_sizes: [QUEUE_SIZE; 2],
            worker: None,
        }
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddress {
        self.mac
    }

    /// The tap's name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// The configuration space: mac[6], status, max_virtqueue_pairs.
    fn config_image(&self) -> [u8; 10] {
        let mut img = [0u8; 10];
        img[..6].copy_from_slice(&self.mac.0);
        // Constant that fits 16 bits.
        img[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        img[8..10].copy_from_slice(&1u16.to_le_bytes());
        img
    }
}

/// The tap offloads matching the guest-bound features the driver accepted.
pub fn tap_offloads(features: u64) -> u32 {
    let mut flags = 0;
    if features & bit(VIRTIO_NET_F_GUEST_CSUM) != 0 {
        flags |= TUN_F_CSUM;
        if features & bit(VIRTIO_NET_F_GUEST_TSO4) != 0 {
            flags |= TUN_F_TSO4;
        }
        if features & bit(VIRTIO_NET_F_GUEST_TSO6) != 0 {
            flags |= TUN_F_TSO6;
        }
    }
    flags
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        NET_DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let img = self.config_image();
        super::read_image(&img, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-net {}: ignoring {}-byte config write at {offset:#x}",
            self.tap.name(),
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), String> {
        self.reset();
        if let Some(i) = ctx.queues.iter().position(|q| !q.ready()) {
            return Err(format!("the driver did not enable queue {i}"));
        }
        let offloads = tap_offloads(ctx.features);
        self.tap.set_offload(offloads).map_err(|e| e.to_string())?;
        let tap = self.tap.try_clone().map_err(|e| e.to_string())?;
        let worker = NetWorker::new(ctx, tap).map_err(|e| e.to_string())?;
        let name = format!("virtio-net-{}", self.tap.name());
        let handle = WorkerHandle::spawn("virtio-net", name, move |stop| worker.run(stop))
            .map_err(|e| WorkerError::Os(e).to_string())?;
        self.worker = Some(handle);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_offloads_follow_the_guest_features() {
        assert_eq!(tap_offloads(0), 0);
        assert_eq!(
            tap_offloads(GUEST_OFFLOADS),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        );
        // TSO without checksum offload is not something the tap accepts.
        assert_eq!(tap_offloads(bit(VIRTIO_NET_F_GUEST_TSO4)), 0);
    }
}
