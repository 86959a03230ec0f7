//! The thread behind an active virtio-net device: it waits with epoll on the
//! receive and transmit queue eventfds (the guest's notifications), the tap
//! and a stop eventfd, and moves frames — tap to receive queue, transmit
//! queue to tap — with the 12-byte virtio-net header passed through as is.
//!
//! Guest mistakes end in one of two ways. A frame that does not fit (a
//! receive chain too short, a transmit chain over 64 KiB) is dropped and its
//! chain returned empty. Rings or buffers outside guest RAM, an available
//! index running ahead of the ring, or a head index past the table mark the
//! device NEEDS_RESET; the worker then touches the queues no more.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use log::{debug, warn};
use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::VirtioInterrupts;
use super::queue::{ChainError, Segments};
use super::tap::{Tap, VNET_HDR_LEN};
use super::ActivateContext;
use crate::devices::virtio::thread::next_chain;
use crate::memory::GuestMemory;

/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Largest frame with its header: 64 KiB of IP plus Ethernet and VLAN headers.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65_550;

/// Epoll token: stop.
const TOKEN_STOP: u64 = 0;
/// Epoll token: receive queue notification.
const TOKEN_RX: u64 = 1;
/// Epoll token: transmit queue notification.
const TOKEN_TX: u64 = 2;
/// Epoll token: tap readable.
const TOKEN_TAP: u64 = 3;
/// Epoll token: INTx resample.
const TOKEN_RESAMPLE: u64 = 4;

/// Errors starting a worker.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The device was activated with the wrong number of queues or eventfds.
    #[error("virtio-net needs 2 queues and 2 eventfds, got {queues} and {evts}")]
    QueueCount {
        /// Queues given.
        queues: usize,
        /// Eventfds given.
        evts: usize,
    },
    /// An eventfd, epoll instance or thread could not be created.
    #[error("cannot start the virtio-net worker: {0}")]
    Os(#[from] std::io::Error),
}

/// Why the worker gave up on the queues.
#[derive(Debug, Error)]
enum Broken {
    /// The ring itself is unusable.
    #[error("{queue} queue: {source}")]
    Ring {
        /// Which queue.
        queue: &'static str,
        /// What virtio-queue said.
        #[source]
        source: virtio_queue::Error,
    },
    /// A buffer lies outside guest RAM.
    #[error("{queue} queue: {source}")]
    Buffer {
        /// Which queue.
        queue: &'static str,
        /// The copy error.
        #[source]
        source: ChainError,
    },
}

/// A queue's work: receive delivers frames from the tap until it is empty or
/// the guest has no receive buffers left (the frame then waits for the next
/// notification); transmit sends every frame the guest queued. Both re-arm
/// notifications when they run out of work.
#[derive(Clone, Copy)]
enum Side {
    /// The receive queue.
    Receive,
    /// The transmit queue.
    Transmit,
}

impl Side {
    /// The queue's name in messages.
    fn name(self) -> &'static str {
        match self {
            Side::Receive => "receive",
            Side::Transmit => "transmit",
        }
    }

    /// What makes the queue unusable when virtio-queue refuses its ring.
    fn broken_ring(self) -> impl Fn(virtio_queue::Error) -> Broken + Copy {
        move |source| Broken::Ring {
            queue: self.name(),
            source,
        }
    }

    /// The queue's index.
    fn index(self) -> usize {
        match self {
            Side::Receive => RX_QUEUE,
            Side::Transmit => TX_QUEUE,
        }
    }
}

/// Everything the worker thread owns.
pub struct NetWorker {
    /// Guest RAM.
    mem: GuestMemory,
    /// Our duplicate of the tap.
    tap: Tap,
    /// Receive queue.
    rx: Queue,
    /// Transmit queue.
    tx: Queue,
    /// Receive queue notifications.
    rx_evt: EventFd,
    /// Transmit queue notifications.
    tx_evt: EventFd,
    /// Interrupts and NEEDS_RESET.
    irq: Arc<VirtioInterrupts>,
    /// INTx resample notifications, if the line has them.
    resample: Option<EventFd>,
    /// Frame read from the tap.
    rx_frame: Vec<u8>,
    /// Length of a frame read but not yet delivered (no receive buffer).
    rx_pending: Option<usize>,
    /// Frame gathered from a transmit chain.
    tx_frame: Vec<u8>,
    /// Set once the guest broke the rings.
    broken: bool,
}

impl NetWorker {
    /// Takes the queues of an activation and a tap duplicate.
    pub fn new(ctx: ActivateContext, tap: Tap) -> Result<Self, WorkerError> {
        let (queues, evts) = (ctx.queues.len(), ctx.queue_evts.len());
        let count_error = WorkerError::QueueCount { queues, evts };
        let mut queues = ctx.queues.into_iter();
        let mut evts = ctx.queue_evts.into_iter();
        let (Some(rx), Some(tx), None) = (queues.next(), queues.next(), queues.next()) else {
            return Err(count_error);
        };
        let (Some(rx_evt), Some(tx_evt), None) = (evts.next(), evts.next(), evts.next()) else {
            return Err(count_error);
        };
        Ok(NetWorker {
            mem: ctx.mem,
            tap,
            rx,
            tx,
            rx_evt,
            tx_evt,
            resample: ctx.interrupts.resample_eventfd(),
            irq: ctx.interrupts,
            rx_frame: vec![0; MAX_FRAME],
            rx_pending: None,
            tx_frame: Vec::with_capacity(MAX_FRAME),
            broken: false,
        })
    }

    /// The thread body: runs until `stop` is signalled.
    pub(crate) fn run(mut self, stop: EventFd) {
        let epoll = match self.epoll(&stop) {
            Ok(epoll) => epoll,
            Err(e) => {
                self.irq
                    .mark_broken(&format!("virtio-net worker: epoll: {e}"));
                return;
            }
        };
        // Work the guest queued before we were listening.
        self.process(Side::Transmit);
        self.process(Side::Receive);
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.irq
                        .mark_broken(&format!("virtio-net worker: epoll_wait: {e}"));
                    return;
                }
            };
            for event in events.iter().take(n) {
                match event.data() {
                    TOKEN_STOP => return,
                    TOKEN_RX => {
                        let _ = self.rx_evt.read();
                        self.process(Side::Receive);
                    }
                    TOKEN_TX => {
                        let _ = self.tx_evt.read();
                        self.process(Side::Transmit);
                    }
                    TOKEN_TAP => self.process(Side::Receive),
                    TOKEN_RESAMPLE => {
                        if let Some(evt) = &self.resample {
                            let _ = evt.read();
                        }
                        self.irq.resample();
                    }
                    other => debug!("virtio-net worker: stray epoll token {other}"),
                }
            }
        }
    }

    /// The epoll set: stop, both queue eventfds, the tap (edge-triggered:
    /// we read it until it is empty or the guest has no buffers) and resample.
    fn epoll(&self, stop: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let add = |fd: i32, events: EventSet, token: u64| {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
        };
        add(stop.as_raw_fd(), EventSet::IN, TOKEN_STOP)?;
        add(self.rx_evt.as_raw_fd(), EventSet::IN, TOKEN_RX)?;
        add(self.tx_evt.as_raw_fd(), EventSet::IN, TOKEN_TX)?;
        add(
            self.tap.as_raw_fd(),
            EventSet::IN | EventSet::EDGE_TRIGGERED,
            TOKEN_TAP,
        )?;
        if let Some(evt) = &self.resample {
            add(evt.as_raw_fd(), EventSet::IN, TOKEN_RESAMPLE)?;
        }
        Ok(epoll)
    }

    /// Records that the guest broke the queues and tells it (NEEDS_RESET).
    fn fail(&mut self, why: Broken) {
        self.broken = true;
        self.irq.mark_broken(&why.to_string());
    }

    /// Runs `side`'s loop (see [`Side`]) unless the guest broke the queues,
    /// then interrupts the guest if it used buffers and wants to hear of it.
    fn process(&mut self, side: Side) {
        if self.broken {
            return;
        }
        let (used, queue) = match side {
            Side::Receive => (self.rx_loop(), &mut self.rx),
            Side::Transmit => (self.tx_loop(), &mut self.tx),
        };
        let notify = used.and_then(|used| {
            Ok(used
                && queue
                    .needs_notification(&self.mem)
                    .map_err(side.broken_ring())?)
        });
        match notify {
            Ok(true) => self.irq.signal_queue(side.index()),
            Ok(false) => {}
            Err(why) => self.fail(why),
        }
    }

    /// The receive loop; returns whether any buffer was used.
    fn rx_loop(&mut self) -> Result<bool, Broken> {
        let ring = Side::Receive.broken_ring();
        let mut used = false;
        loop {
            let len = match self.rx_pending {
                Some(len) => len,
                None => match self.tap.read_frame(&mut self.rx_frame) {
                    Ok(len) if len < VNET_HDR_LEN => continue,
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(used),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!("virtio-net: reading tap {}: {e}", self.tap.name());
                        return Ok(used);
                    }
                },
            };
            self.rx_pending = Some(len);
            let Some(chain) = next_chain(&mut self.rx, &self.mem).map_err(ring)? else {
                // Out of buffers: the frame waits for the next notification.
                return Ok(used);
            };
            let segments = Segments::collect(chain, true);
            let Some(frame) = self.rx_frame.get_mut(..len) else {
                return Ok(used);
            };
            // num_buffers: one buffer per frame without VIRTIO_NET_F_MRG_RXBUF.
            if let Some(field) = frame.get_mut(10..12) {
                field.copy_from_slice(&1u16.to_le_bytes());
            }
            let written = match segments.scatter(&self.mem, frame) {
                Ok(()) => len,
                Err(e @ ChainError::TooShort { .. }) => {
                    debug!("virtio-net: dropping a received frame: {e}");
                    0
                }
                Err(source) => {
                    return Err(Broken::Buffer {
                        queue: "receive",
                        source,
                    })
                }
            };
            self.rx_pending = None;
            // Frames are at most MAX_FRAME bytes: fits u32.
            self.rx
                .add_used(&self.mem, segments.head, written as u32)
                .map_err(ring)?;
            used = true;
        }
    }

    /// The transmit loop; returns whether any chain was used.
    fn tx_loop(&mut self) -> Result<bool, Broken> {
        let ring = Side::Transmit.broken_ring();
        let mut used = false;
        loop {
            let Some(chain) = next_chain(&mut self.tx, &self.mem).map_err(ring)? else {
                return Ok(used);
            };
            let segments = Segments::collect(chain, false);
            match segments.gather(&self.mem, MAX_FRAME, &mut self.tx_frame) {
                Ok(()) if self.tx_frame.len() > VNET_HDR_LEN => {
                    if let Err(e) = self.tap.write_frame(&self.tx_frame) {
                        debug!("virtio-net: tap {} dropped a frame: {e}", self.tap.name());
                    }
                }
                Ok(()) => debug!("virtio-net: dropping a transmit chain without a frame"),
                Err(e @ ChainError::TooLong { .. }) => debug!("virtio-net: dropping: {e}"),
                Err(source) => {
                    return Err(Broken::Buffer {
                        queue: "transmit",
                        source,
                    })
                }
            }
            self.tx
                .add_used(&self.mem, segments.head, 0)
                .map_err(ring)?;
            used = true;
        }
    }
}
