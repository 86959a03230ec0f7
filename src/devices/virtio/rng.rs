//! virtio-rng (device type 4) for an [`RngConfig`] (parsed in `config::rng`):
//! one request queue whose device-writable buffers are filled from the host
//! source, `/dev/urandom` by default. Like virtio-net, it is built on the
//! `virtio-queue` crate and served by its own thread, woken through epoll by
//! the queue's ioeventfd.
//!
//! Each request gets at most [`MAX_REQUEST`] bytes, whatever lengths the
//! guest claims, and the used length says how many it got. A source that
//! has nothing to give (a file at its end, a device that would block) gives
//! fewer bytes, possibly none. Buffers outside guest RAM or a broken ring
//! mark the device NEEDS_RESET; the worker then touches the queue no more.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use log::{debug, warn};
use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::VirtioInterrupts;
use super::pci_transport::TransportError;
use super::queue::Segments;
use super::{ActivateContext, VirtioDevice, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1};
use crate::config::RngConfig;
use crate::devices::virtio::thread::{next_chain, run_one_queue, OneQueueWorker, WorkerHandle};
use crate::memory::GuestMemory;

/// Virtio device type of an entropy source.
pub const RNG_DEVICE_TYPE: u16 = 4;
/// Ring size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes one request gets.
pub const MAX_REQUEST: usize = 64 << 10;

/// Errors building or starting a virtio-rng device.
#[derive(Debug, Error)]
pub enum RngError {
    /// The entropy source cannot be opened.
    #[error("cannot open the entropy source {path}: {err}")]
    Open {
        /// The source.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// The PCI side of the device could not be built.
    #[error("virtio-rng PCI function: {0}")]
    Transport(#[source] TransportError),
    /// The worker could not be started (activation fails with this message).
    #[error("cannot start the virtio-rng worker: {0}")]
    Worker(#[from] std::io::Error),
    /// The device was activated without exactly one queue and one eventfd.
    #[error("virtio-rng needs 1 queue and 1 eventfd, got {0} and {1}")]
    QueueCount(usize, usize),
}

/// The virtio-rng device model.
pub struct Rng {
    /// The open source (the worker reads a duplicate, sharing its offset).
    source: File,
    /// Its path, for messages.
    path: PathBuf,
    /// Maximum queue size.
    queue_sizes: [u16; 1],
    /// The running worker, between DRIVER_OK and reset.
    worker: Option<WorkerHandle>,
}

impl Rng {
    /// Opens the source of `config` (non-blocking, so that a device with
    /// nothing to give never holds the worker).
    pub fn new(config: &RngConfig) -> Result<Self, RngError> {
        let source = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&config.src)
            .map_err(|err| RngError::Open {
                path: config.src.clone(),
                err,
            })?;
        Ok(Rng {
            source,
            path: config.src.clone(),
            queue_sizes: [QUEUE_SIZE],
            worker: None,
        })
    }

    fn start(&mut self, ctx: ActivateContext) -> Result<WorkerHandle, RngError> {
        let (queues, evts) = (ctx.queues.len(), ctx.queue_evts.len());
        let mut q = ctx.queues.into_iter();
        let mut e = ctx.queue_evts.into_iter();
        let (Some(queue), None, Some(evt), None) = (q.next(), q.next(), e.next(), e.next()) else {
            return Err(RngError::QueueCount(queues, evts));
        };
        let worker = RngWorker {
            mem: ctx.mem,
            source: self.source.try_clone()?,
            queue,
            evt,
            resample: ctx.interrupts.resample_eventfd(),
            irq: ctx.interrupts,
            buf: vec![0; MAX_REQUEST],
            broken: false,
        };
        let run = move |stop| worker.run(stop);
        Ok(WorkerHandle::spawn("virtio-rng", "virtio-rng".into(), run)?)
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u16 {
        RNG_DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        super::read_image(&[], offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            "virtio-rng: ignoring {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), String> {
        self.reset();
        if let Some(i) = ctx.queues.iter().position(|q| !q.ready()) {
            return Err(format!("the driver did not enable queue {i}"));
        }
        let worker = self
            .start(ctx)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
        }
    }
}

impl Drop for Rng {
    fn drop(&mut self) {
        self.reset();
    }
}

/// Everything the worker thread owns.
struct RngWorker {
    /// Guest RAM.
    mem: GuestMemory,
    /// Our duplicate of the source.
    source: File,
    /// The request queue.
    queue: Queue,
    /// Its notifications.
    evt: EventFd,
    /// INTx resample notifications, if the line has them.
    resample: Option<EventFd>,
    /// Interrupts and NEEDS_RESET.
    irq: Arc<VirtioInterrupts>,
    /// Bytes read from the source for one request.
    buf: Vec<u8>,
    /// Set once the guest broke the queue.
    broken: bool,
}

impl RngWorker {
    /// The thread body: runs until `stop` is signalled.
    pub(crate) fn run(mut self, stop: EventFd) {
        run_one_queue(&mut self, &stop);
    }

    /// Serves every request, then interrupts the guest if it wants to hear of it.
    fn process(&mut self) {
        if self.broken {
            return;
        }
        let notify = self.serve().and_then(|used| {
            Ok(used
                && self
                    .queue
                    .needs_notification(&self.mem)
                    .map_err(|e| format!("virtio-rng queue: {e}"))?)
        });
        match notify {
            Ok(true) => self.irq.signal_queue(0),
            Ok(false) => {}
            Err(why) => {
                self.broken = true;
                self.irq.mark_broken(&why);
            }
        }
    }

    /// Fills each available chain; returns whether any was used.
    fn serve(&mut self) -> Result<bool, String> {
        let ring = |e: virtio_queue::Error| format!("virtio-rng queue: {e}");
        let mut used = false;
        while let Some(chain) = next_chain(&mut self.queue, &self.mem).map_err(ring)? {
            let segments = Segments::collect(chain, true);
            let want = segments.total.min(MAX_REQUEST);
            let got = read_some(&mut self.source, &mut self.buf[..want]);
            segments
                .scatter(&self.mem, &self.buf[..got])
                .map_err(|e| format!("virtio-rng queue: {e}"))?;
            // At most MAX_REQUEST: fits u32.
            self.queue
                .add_used(&self.mem, segments.head, got as u32)
                .map_err(ring)?;
            used = true;
        }
        Ok(used)
    }
}

impl OneQueueWorker for RngWorker {
    fn device(&self) -> &'static str {
        "virtio-rng"
    }

    fn queue_evt(&self) -> &EventFd {
        &self.evt
    }

    fn resample_evt(&self) -> Option<&EventFd> {
        self.resample.as_ref()
    }

    fn irq(&self) -> &VirtioInterrupts {
        &self.irq
    }

    fn process(&mut self) {
        RngWorker::process(self)
    }
}

/// Reads from `source` until `buf` is full or it has nothing more now;
/// returns the bytes read.
fn read_some(source: &mut File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match source.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => {
                warn!("virtio-rng: reading the entropy source: {e}");
                break;
            }
        }
    }
    got
}
