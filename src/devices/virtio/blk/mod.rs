//! virtio-blk: the device model [`Block`] for a disk image, built from plain
//! [`DiskOptions`] — the features it offers, its configuration space, its
//! serial number, and the worker it starts on DRIVER_OK.
//!
//! rust-vmm publishes no virtio-blk crate: the rings are `virtio-queue`'s
//! (as for virtio-net), and the requests on them are parsed by hand in
//! `request.rs`.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`DiskOptions`], [`Block`]: features, configuration space, serial, activation |
//! | `image.rs` | [`DiskImage`]: opening and checking raw files, block devices and qcow2 (imago), OFD locking, I/O |
//! | `format.rs` | the format an image opens as: the one stated (never probed), or probed with QEMU's warning and block-0 guard |
//! | `request.rs` | one request: descriptor chain checks, the I/O, the status byte |
//! | `worker.rs` | the per-disk thread serving the request queue |
//! | `image_tests.rs`, `format_tests.rs`, `tests.rs`, `fuzz_tests.rs`, `transport_tests.rs` | images and locks; requests over a fake queue in guest RAM, hand-made and random; the device behind the PCI transport |
//!
//! Offered: VERSION_1, INDIRECT_DESC, EVENT_IDX, SEG_MAX, BLK_SIZE, FLUSH,
//! and DISCARD and WRITE_ZEROES for a writable disk or RO for a read-only
//! one. GET_ID needs no feature bit. One request queue.
//!
//! # Wiring in the VMM
//!
//! ```text
//! let options = DiskOptions { path, readonly, direct, id, serial, format };  // from --disk
//! let dev = virtio::new_blk_pci(&options, addr, mem.clone(),
//!                               interrupts.clone(), vm_fd.clone())?;  // opens + locks: before the guest starts
//! bus.lock().add_device_at(addr.device(), Box::new(dev))?;
//! // Dropping the bus at exit stops the worker, closes the image and drops its lock.
//! ```

pub mod batch;
pub mod buffer;
pub mod format;
pub mod image;
pub mod request;
pub mod worker;
pub mod zerocopy;

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod image_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transport_tests;
#[cfg(test)]
mod zerocopy_tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_queue::QueueT;

use super::thread::WorkerHandle;
pub use image::{DiskImage, Format, ImageError, DIRECT_ALIGN, SECTOR_SIZE};
use request::{Handler, ID_LEN, MAX_ZERO_SECTORS, MAX_ZERO_SEGMENTS, SEG_MAX};
use worker::{BlkWorker, WorkerError};

use super::{ActivateContext, VirtioDevice, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1};

/// Virtio device type of a block device.
pub const BLK_DEVICE_TYPE: u16 = 2;
/// Ring size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Length of the configuration space we expose (up to `write_zeroes_may_unmap` and its padding).
pub const CONFIG_LEN: usize = 60;

/// Feature bit `bit` as a mask.
const fn bit(bit: u32) -> u64 {
    1 << bit
}

/// Features offered for every disk.
const BASE_FEATURES: u64 = F_VERSION_1
    | F_INDIRECT_DESC
    | F_EVENT_IDX
    | bit(VIRTIO_BLK_F_SEG_MAX)
    | bit(VIRTIO_BLK_F_BLK_SIZE)
    | bit(VIRTIO_BLK_F_FLUSH);

/// How to open one disk: what `--disk path=FILE[,readonly=on][,direct=on][,id=NAME][,serial=S][,format=F]`
/// says, validated by the configuration (`config::disk`), which owns the type.
pub type DiskOptions = crate::config::DiskConfig;

/// Errors building a virtio-blk device.
#[derive(Debug, Error)]
pub enum BlkError {
    /// The image could not be opened, checked or locked.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The serial given is too long or not printable ASCII.
    #[error("disk {path}: serial {serial:?} must be at most 20 printable ASCII characters")]
    BadSerial {
        /// The image.
        path: PathBuf,
        /// The serial given.
        serial: String,
    },
    /// The PCI side of the device could not be built.
    #[error("virtio-blk PCI function for {path}: {source}")]
    Transport {
        /// The image.
        path: PathBuf,
        /// What the transport said.
        #[source]
        source: super::pci_transport::TransportError,
    },
}

// BlkError crosses threads like NetError: checked at compile time.
const _: fn() = || {
    fn error_that_crosses_threads<T: std::error::Error + Send + Sync + 'static>() {}
    error_that_crosses_threads::<BlkError>();
};

/// The serial for `path` when none is given: the file name (printable
/// ASCII kept, other bytes as `_`), its last 20 bytes if longer, since
/// names tend to differ at the end (`vm-17-root.img`).
pub fn serial_from_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned());
    let clean: Vec<u8> = name
        .bytes()
        .map(|b| if b.is_ascii_graphic() { b } else { b'_' })
        .collect();
    let tail = &clean[clean.len().saturating_sub(ID_LEN)..];
    String::from_utf8_lossy(tail).into_owned()
}

/// The 20 GET_ID bytes for `serial`: zero-padded, not NUL-terminated when 20 long.
fn serial_bytes(path: &Path, serial: &str) -> Result<[u8; ID_LEN], BlkError> {
    if serial.len() > ID_LEN || !serial.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(BlkError::BadSerial {
            path: path.to_path_buf(),
            serial: serial.to_string(),
        });
    }
    let mut bytes = [0u8; ID_LEN];
    bytes[..serial.len()].copy_from_slice(serial.as_bytes());
    Ok(bytes)
}

/// The virtio-blk device model.
pub struct Block {
    /// The image and what serves requests on it (the worker shares it).
    handler: Arc<Mutex<Handler>>,
    /// The path, for messages and the default id.
    path: PathBuf,
    /// The device's name for the API.
    id: String,
    /// The serial as the guest reads it.
    serial: String,
    /// Features offered.
    features: u64,
    /// The configuration space.
    config: [u8; CONFIG_LEN],
    /// Maximum queue size.
    queue_sizes: [u16; 1],
    /// The running worker, between DRIVER_OK and reset.
    worker: Option<WorkerHandle>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("serial", &self.serial)
            .field("features", &format_args!("{:#x}", self.features))
            .finish()
    }
}

impl Block {
    /// Opens, checks and locks the image of `options`; errors say what to do.
    pub fn new(options: &DiskOptions) -> Result<Self, BlkError> {
        let path = options.path.clone();
        let serial = match &options.serial {
            Some(s) => s.clone(),
            None => serial_from_path(&path),
        };
        let serial_id = serial_bytes(&path, &serial)?;
        let image = DiskImage::open_as(&path, options.readonly, options.direct, options.format)?;
        Ok(Block::with_image(
            image,
            options.id.clone(),
            serial,
            serial_id,
        ))
    }

    /// A device on an opened image.
    fn with_image(
        image: DiskImage,
        id: Option<String>,
        serial: String,
        serial_id: [u8; ID_LEN],
    ) -> Self {
        let path = image.path().to_path_buf();
        let mut features = BASE_FEATURES;
        if image.readonly() {
            features |= bit(VIRTIO_BLK_F_RO);
        } else {
            features |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
        }
        let config = config_image(&image);
        Block {
            handler: Arc::new(Mutex::new(Handler::new(image, serial_id))),
            id: id.unwrap_or_else(|| path.display().to_string()),
            path,
            serial,
            features,
            config,
            queue_sizes: [QUEUE_SIZE],
            worker: None,
        }
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device's name for the API.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The serial the guest reads.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The disk's size in bytes, as the guest sees it.
    pub fn size(&self) -> u64 {
        u64::from_le_bytes(self.config[..8].try_into().unwrap_or_default()) * SECTOR_SIZE
    }

    /// Whether the device refuses writes.
    pub fn readonly(&self) -> bool {
        self.features & bit(VIRTIO_BLK_F_RO) != 0
    }
}

/// The configuration space: capacity, seg_max, blk_size, the discard and
/// write-zeroes limits (read-only fields; the layout is `virtio_blk_config`).
fn config_image(image: &DiskImage) -> [u8; CONFIG_LEN] {
    let mut img = [0u8; CONFIG_LEN];
    let mut put = |at: usize, bytes: &[u8]| img[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &(image.size() / SECTOR_SIZE).to_le_bytes());
    put(12, &SEG_MAX.to_le_bytes());
    let block_size = if image.direct() {
        DIRECT_ALIGN as u32
    } else {
        SECTOR_SIZE as u32
    };
    put(20, &block_size.to_le_bytes());
    put(34, &1u16.to_le_bytes()); // num_queues (only read with VIRTIO_BLK_F_MQ)
    if !image.readonly() {
        let alignment = block_size / SECTOR_SIZE as u32;
        put(36, &MAX_ZERO_SECTORS.to_le_bytes());
        put(40, &MAX_ZERO_SEGMENTS.to_le_bytes());
        put(44, &alignment.to_le_bytes());
        put(48, &MAX_ZERO_SECTORS.to_le_bytes());
        put(52, &MAX_ZERO_SEGMENTS.to_le_bytes());
        put(56, &[1]); // write_zeroes_may_unmap
    }
    img
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        BLK_DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_image(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `writeback` is writable, and only with CONFIG_WCE, not offered.
        log::debug!(
            "virtio-blk {}: ignoring {}-byte config write at {offset:#x}",
            self.path.display(),
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), String> {
        self.reset();
        if let Some(i) = ctx.queues.iter().position(|q| !q.ready()) {
            return Err(format!("the driver did not enable queue {i}"));
        }
        let worker = BlkWorker::new(ctx, self.handler.clone()).map_err(|e| e.to_string())?;
        // The id comes from the user: no NUL in a thread name.
        let name = format!("virtio-blk-{}", self.id.replace('\0', ""));
        let handle = WorkerHandle::spawn("virtio-blk", name, move |stop| worker.run(stop))
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

impl Drop for Block {
    fn drop(&mut self) {
        self.reset();
    }
}
