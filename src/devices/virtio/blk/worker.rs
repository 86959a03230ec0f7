//! The thread behind an active virtio-blk device. It waits with epoll on
//! the request queue's eventfd (the guest's notifications), a stop eventfd
//! and the INTx resample eventfd, and serves the queued requests one after
//! another with synchronous I/O.
//!
//! Why one thread with blocking I/O: a disk has one request queue here, the
//! I/O must not run on a vCPU thread (a slow disk would stall the guest's
//! CPU in an MMIO exit), and a dedicated thread keeps each disk's latency
//! independent of other devices. Parallel requests in flight (io_uring or a
//! thread pool) would be the next step for throughput; the request code does
//! not depend on how it is called.
//!
//! Rings or a used ring outside guest RAM, an available index running ahead
//! of the ring or a head index past the table mark the device NEEDS_RESET;
//! bad requests only get an error status (see `request.rs`).

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use log::debug;
use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::request::Handler;
use crate::devices::virtio::interrupt::VirtioInterrupts;
use crate::devices::virtio::thread::next_chain;
use crate::devices::virtio::ActivateContext;
use crate::memory::GuestMemory;

/// Index of the request queue.
pub const REQUEST_QUEUE: usize = 0;

/// Epoll token: stop.
const TOKEN_STOP: u64 = 0;
/// Epoll token: request queue notification.
const TOKEN_QUEUE: u64 = 1;
/// Epoll token: INTx resample.
const TOKEN_RESAMPLE: u64 = 2;

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
        let epoll = match self.epoll(&stop) {
            Ok(epoll) => epoll,
            Err(e) => {
                self.irq
                    .mark_broken(&format!("virtio-blk worker: epoll: {e}"));
                return;
            }
        };
        // Requests the guest queued before we were listening.
        self.process();
        let mut events = vec![EpollEvent::default(); 4];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.irq
                        .mark_broken(&format!("virtio-blk worker: epoll_wait: {e}"));
                    return;
                }
            };
            for event in events.iter().take(n) {
                match event.data() {
                    TOKEN_STOP => return,
                    TOKEN_QUEUE => {
                        let _ = self.queue_evt.read();
                        self.process();
                    }
                    TOKEN_RESAMPLE => {
                        if let Some(evt) = &self.resample {
                            let _ = evt.read();
                        }
                        self.irq.resample();
                    }
                    other => debug!("virtio-blk worker: stray epoll token {other}"),
                }
            }
        }
    }

    /// The epoll set: stop, the queue eventfd and resample.
    fn epoll(&self, stop: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let add = |fd: i32, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(stop.as_raw_fd(), TOKEN_STOP)?;
        add(self.queue_evt.as_raw_fd(), TOKEN_QUEUE)?;
        if let Some(evt) = &self.resample {
            add(evt.as_raw_fd(), TOKEN_RESAMPLE)?;
        }
        Ok(epoll)
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
        while let Some(chain) = next_chain(&mut self.queue, &self.mem)? {
            let (head, len) = handler.serve(&self.mem, chain);
            self.queue.add_used(&self.mem, head, len)?;
            used = true;
        }
        Ok(used)
    }
}
