//! The thread behind an active virtio-blk device. It waits with epoll on
//! the request queue's eventfd (the guest's notifications), a stop eventfd
//! and the INTx resample eventfd, pops every queued request and serves them
//! as a batch with synchronous I/O, reads and writes several at once on
//! short-lived I/O threads (`batch.rs`).
//!
//! Why a thread of its own with blocking I/O: a disk has one request queue
//! here, the I/O must not run on a vCPU thread (a slow disk would stall the
//! guest's CPU in an MMIO exit), and a dedicated thread keeps each disk's
//! latency independent of other devices.
//!
//! Rings or a used ring outside guest RAM, an available index running ahead
//! of the ring or a head index past the table mark the device NEEDS_RESET;
//! bad requests only get an error status (see `request.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::request::Handler;
use crate::devices::virtio::interrupt::VirtioInterrupts;
use crate::devices::virtio::thread::{next_chain, run_one_queue, OneQueueWorker};
use crate::devices::virtio::ActivateContext;
use crate::memory::GuestMemory;

/// Index of the request queue.
pub const REQUEST_QUEUE: usize = 0;

/// Errors starting a worker.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The device was activated with the wrong number of queues or eventfds.
    #[error("virtio-blk needs 1 queue and 1 eventfd, got {queues} and {evts}")]
    QueueCount {
        /// Queues given.
        queues: usize,
        /// Eventfds given.
        evts: usize,
    },
    /// An eventfd or the thread could not be created.
    #[error("cannot start the virtio-blk worker: {0}")]
    Os(#[from] std::io::Error),
}

/// Everything the worker thread owns.
pub struct BlkWorker {
    /// Guest RAM.
    mem: GuestMemory,
    /// The request queue.
    queue: Queue,
    /// Its notifications.
    queue_evt: EventFd,
    /// Interrupts and NEEDS_RESET.
    irq: Arc<VirtioInterrupts>,
    /// INTx resample notifications, if the line has them.
    resample: Option<EventFd>,
    /// The image and what serves requests on it (shared with the device,
    /// which keeps it across resets; only this thread uses it while it runs).
    handler: Arc<Mutex<Handler>>,
    /// Set once the guest broke the ring.
    broken: bool,
}

impl BlkWorker {
    /// Takes the queue of an activation.
    pub fn new(ctx: ActivateContext, handler: Arc<Mutex<Handler>>) -> Result<Self, WorkerError> {
        let count_error = WorkerError::QueueCount {
            queues: ctx.queues.len(),
            evts: ctx.queue_evts.len(),
        };
        let mut queues = ctx.queues.into_iter();
        let mut evts = ctx.queue_evts.into_iter();
        let (Some(queue), None, Some(queue_evt), None) =
            (queues.next(), queues.next(), evts.next(), evts.next())
        else {
            return Err(count_error);
        };
        Ok(BlkWorker {
            mem: ctx.mem,
            queue,
            queue_evt,
            resample: ctx.interrupts.resample_eventfd(),
            irq: ctx.interrupts,
            handler,
            broken: false,
        })
    }

    /// The thread body: runs until `stop` is signalled.
    pub(crate) fn run(mut self, stop: EventFd) {
        run_one_queue(&mut self, &stop);
    }

    /// Serves every queued request, then interrupts the guest if it wants
    /// to hear of them; a broken ring marks the device NEEDS_RESET.
    fn process(&mut self) {
        if self.broken {
            return;
        }
        let notify = self
            .serve_all()
            .and_then(|used| Ok(used && self.queue.needs_notification(&self.mem)?));
        match notify {
            Ok(true) => self.irq.signal_queue(REQUEST_QUEUE),
            Ok(false) => {}
            Err(e) => {
                self.broken = true;
                self.irq
                    .mark_broken(&format!("virtio-blk request queue: {e}"));
            }
        }
    }

    /// Serves requests until the queue is empty; returns whether any was.
    fn serve_all(&mut self) -> Result<bool, virtio_queue::Error> {
        let mut used = false;
        let mut handler = self.handler.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // Everything queued now, served as one batch (`batch.rs`).
            let mut chains = Vec::new();
            while let Some(chain) = next_chain(&mut self.queue, &self.mem)? {
                chains.push(chain);
                if chains.len() >= usize::from(self.queue.size()) {
                    break;
                }
            }
            if chains.is_empty() {
                return Ok(used);
            }
            for (head, len) in handler.serve_batch(&self.mem, chains) {
                self.queue.add_used(&self.mem, head, len)?;
            }
            used = true;
        }
    }
}

impl OneQueueWorker for BlkWorker {
    fn device(&self) -> &'static str {
        "virtio-blk"
    }

    fn queue_evt(&self) -> &EventFd {
        &self.queue_evt
    }

    fn resample_evt(&self) -> Option<&EventFd> {
        self.resample.as_ref()
    }

    fn irq(&self) -> &VirtioInterrupts {
        &self.irq
    }

    fn process(&mut self) {
        BlkWorker::process(self)
    }
}
