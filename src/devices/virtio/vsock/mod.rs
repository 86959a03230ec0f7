//! virtio-vsock (device type 19) with the hybrid UNIX-socket backend of
//! Firecracker and cloud-hypervisor, which Kata's runtime speaks: the
//! device model [`Vsock`] — its features, its configuration space (the
//! guest's CID) and the listener it keeps from creation to drop — and the
//! worker it starts on DRIVER_OK.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`Vsock`]: CID, socket path, features, config space, activation |
//! | `unix.rs` | the host protocol: the listener at `PATH`, `CONNECT <port>` / `OK <port>`, `PATH_P` |
//! | `muxer.rs` | connections by (our port, guest port), RST for unknown ones, fair order for receive buffers |
//! | `connection.rs` | one connection: state machine, credit in both directions, shutdown and reset |
//! | `worker.rs` | the thread: epoll on queues and host sockets, packets parsed by the virtio-vsock crate |
//! | `tests.rs` | end to end with a fake driver over guest RAM and real UNIX sockets |
//!
//! Queues: receive (0), transmit (1), event (2). Stream sockets only (no
//! SEQPACKET feature); the guest reaches only the host (CID 2).

pub mod connection;
pub mod muxer;
pub mod unix;
pub mod worker;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use thiserror::Error;
use virtio_queue::QueueT;

use super::pci_transport::TransportError;
use super::thread::WorkerHandle;
use super::{ActivateContext, VirtioDevice, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1};
use muxer::Muxer;
use unix::UnixError;
use worker::{VsockWorker, WorkerError};

/// Virtio device type of a socket device.
pub const VSOCK_DEVICE_TYPE: u16 = 19;
/// Ring size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The CIDs a guest may have: the configuration's bounds, checked again here.
pub use crate::config::vsock::{MAX_CID, MIN_CID};

/// Errors building a virtio-vsock device.
#[derive(Debug, Error)]
pub enum VsockError {
    /// The CID is reserved or does not fit.
    #[error("vsock cid={0}: a guest CID is {MIN_CID}..={MAX_CID} (0-2 are reserved)")]
    BadCid(u64),
    /// The host socket could not be set up.
    #[error(transparent)]
    Socket(#[from] UnixError),
    /// The listener could not be duplicated for the worker.
    #[error("vsock socket {path}: {source}")]
    Clone {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The worker's epoll set could not be set up.
    #[error(transparent)]
    Muxer(#[from] muxer::MuxerError),
    /// The worker could not be started.
    #[error(transparent)]
    Worker(#[from] worker::WorkerError),
    /// The PCI side of the device could not be built.
    #[error("virtio-vsock PCI function: {0}")]
    Transport(#[source] TransportError),
}

// VsockError crosses threads like NetError: checked at compile time.
const _: fn() = || {
    fn error_that_crosses_threads<T: std::error::Error + Send + Sync + 'static>() {}
    error_that_crosses_threads::<VsockError>();
};

/// The virtio-vsock device model.
pub struct Vsock {
    /// The guest's CID.
    cid: u64,
    /// Where the host connects.
    path: PathBuf,
    /// The listener (each worker gets a duplicate).
    listener: UnixListener,
    /// Maximum queue sizes (receive, transmit, event).
    queue_sizes: [u16; 3],
    /// The running worker, between DRIVER_OK and reset.
    worker: Option<WorkerHandle>,
}

impl Vsock {
    /// A device for a guest with CID `cid` (3 or more), listening on the
    /// UNIX socket `socket`: hosts connect there and send `CONNECT <port>\n`;
    /// guest connections to host port P go to the socket `<socket>_P`. A stale
    /// socket file at `socket` is replaced; one a live program listens on is
    /// an error. The file is removed when the device is dropped.
    pub fn new(cid: u64, socket: &Path) -> Result<Self, VsockError> {
        if !(MIN_CID..=MAX_CID).contains(&cid) {
            return Err(VsockError::BadCid(cid));
        }
        let listener = unix::listen(socket)?;
        Ok(Vsock {
            cid,
            path: socket.to_path_buf(),
            listener,
            queue_sizes: [QUEUE_SIZE; 3],
            worker: None,
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// The host socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Starts the worker for an activation.
    fn start(&mut self, ctx: ActivateContext) -> Result<(), VsockError> {
        let clone_error = |source| VsockError::Clone {
            path: self.path.clone(),
            source,
        };
        let listener = self.listener.try_clone().map_err(clone_error)?;
        let muxer = Muxer::new(self.cid, self.path.clone(), listener)?;
        let worker = VsockWorker::new(ctx, muxer)?;
        let name = format!("virtio-vsock-{}", self.cid);
        let run = move |stop| worker.run(stop);
        let handle = WorkerHandle::spawn("virtio-vsock", name, run).map_err(WorkerError::Os)?;
        self.worker = Some(handle);
        Ok(())
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u16 {
        VSOCK_DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC
    }

    /// The configuration space: guest_cid (le64).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_image(&self.cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-vsock: ignoring {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), String> {
        self.reset();
        if let Some(i) = ctx.queues.iter().position(|q| !q.ready()) {
            return Err(format!("the driver did not enable queue {i}"));
        }
        self.start(ctx).map_err(|e| e.to_string())
    }

    fn reset(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
        }
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.reset();
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::debug!("vsock: removing {}: {e}", self.path.display());
        }
    }
}
