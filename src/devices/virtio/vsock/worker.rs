//! The thread behind an active virtio-vsock device: it waits with epoll on
//! the three queue eventfds, the host listener and streams (through the
//! [`Muxer`]), a stop eventfd and the INTx resample eventfd, with a timeout
//! at the muxer's next deadline, and moves packets: transmit queue to the
//! muxer, muxer to receive queue.
//!
//! Packets are parsed by rust-vmm's virtio-vsock crate ([`VsockPacket`]). A
//! transmit chain it refuses (header too short, payload past its buffer or
//! over 64 KiB, buffers outside guest RAM) is returned used; if its header
//! can still be read, its connection is reset (or an RST answers it), so a
//! stream never silently misses bytes. A receive chain it refuses is
//! returned used and empty. Rings the virtio-queue crate refuses mark the
//! device NEEDS_RESET and the worker touches the queues no more.
//!
//! The event queue is held but never written: its one event,
//! TRANSPORT_RESET, is for a device that lost its connections behind the
//! driver's back (snapshot restore); here connections only end with a
//! driver-initiated reset, after which the driver starts afresh anyway.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};
use thiserror::Error;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::Bytes;
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::connection::{Header, HEADER_SIZE};
use super::muxer::Muxer;
use crate::devices::virtio::interrupt::VirtioInterrupts;
use crate::devices::virtio::thread::next_chain;
use crate::devices::virtio::ActivateContext;
use crate::memory::GuestMemory;

/// Index of the receive queue (device to driver).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (driver to device).
pub const TX_QUEUE: usize = 1;
/// Index of the event queue.
pub const EVENT_QUEUE: usize = 2;
/// Largest payload of one packet we accept or send (Linux sends at most 64 KiB).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// Epoll token: stop.
const TOKEN_STOP: u64 = 0;
/// Epoll token: receive queue notification.
const TOKEN_RX: u64 = 1;
/// Epoll token: transmit queue notification.
const TOKEN_TX: u64 = 2;
/// Epoll token: event queue notification.
const TOKEN_EVENT: u64 = 3;
/// Epoll token: INTx resample.
const TOKEN_RESAMPLE: u64 = 4;

/// Errors starting a worker.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The device was activated with the wrong number of queues or eventfds.
    #[error("virtio-vsock needs 3 queues and 3 eventfds, got {queues} and {evts}")]
    QueueCount {
        /// Queues given.
        queues: usize,
        /// Eventfds given.
        evts: usize,
    },
    /// An eventfd, the epoll set or the thread could not be created.
    #[error("cannot start the virtio-vsock worker: {0}")]
    Os(#[from] std::io::Error),
}

/// Everything the worker thread owns.
pub struct VsockWorker {
    /// Guest RAM.
    mem: GuestMemory,
    /// Connections and the host listener.
    muxer: Muxer,
    /// Receive, transmit and event queues.
    queues: [Queue; 3],
    /// Their notification eventfds.
    evts: [EventFd; 3],
    /// Interrupts and NEEDS_RESET.
    irq: Arc<VirtioInterrupts>,
    /// INTx resample notifications, if the line has them.
    resample: Option<EventFd>,
    /// Payload of the packet being moved.
    buf: Vec<u8>,
    /// Set once the guest broke the rings.
    broken: bool,
}

impl VsockWorker {
    /// Takes the queues of an activation and the device's multiplexer.
    pub fn new(ctx: ActivateContext, muxer: Muxer) -> Result<Self, WorkerError> {
        let count_error = WorkerError::QueueCount {
            queues: ctx.queues.len(),
            evts: ctx.queue_evts.len(),
        };
        let queues: [Queue; 3] = ctx.queues.try_into().map_err(|_| count_error)?;
        let count_error = WorkerError::QueueCount {
            queues: 3,
            evts: ctx.queue_evts.len(),
        };
        let evts: [EventFd; 3] = ctx.queue_evts.try_into().map_err(|_| count_error)?;
        let add = |fd: i32, token: u64| {
            let event = EpollEvent::new(EventSet::IN, token);
            muxer.epoll().ctl(ControlOperation::Add, fd, event)
        };
        for (evt, token) in evts.iter().zip([TOKEN_RX, TOKEN_TX, TOKEN_EVENT]) {
            add(evt.as_raw_fd(), token)?;
        }
        let resample = ctx.interrupts.resample_eventfd();
        if let Some(evt) = &resample {
            add(evt.as_raw_fd(), TOKEN_RESAMPLE)?;
        }
        Ok(VsockWorker {
            mem: ctx.mem,
            muxer,
            queues,
            evts,
            irq: ctx.interrupts,
            resample,
            buf: vec![0; MAX_PAYLOAD as usize],
            broken: false,
        })
    }

    /// The thread body: runs until `stop` is signalled.
    pub(crate) fn run(mut self, stop: EventFd) {
        let event = EpollEvent::new(EventSet::IN, TOKEN_STOP);
        let epoll = self.muxer.epoll();
        if let Err(e) = epoll.ctl(ControlOperation::Add, stop.as_raw_fd(), event) {
            self.irq
                .mark_broken(&format!("virtio-vsock worker: epoll: {e}"));
            return;
        }
        // Work the guest queued before we were listening.
        self.process_tx();
        self.process_rx();
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let timeout = self.timeout_ms();
            let n = match self.muxer.epoll().wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.irq
                        .mark_broken(&format!("virtio-vsock worker: epoll_wait: {e}"));
                    return;
                }
            };
            for event in events.iter().take(n) {
                if event.data() == TOKEN_STOP {
                    return;
                }
                self.dispatch(event.data(), event.event_set());
            }
            self.muxer.on_timer(Instant::now());
            self.process_rx();
        }
    }

    /// Milliseconds until the muxer's next deadline (-1: none), rounded up.
    fn timeout_ms(&self) -> i32 {
        match self.muxer.next_deadline() {
            None => -1,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
            }
        }
    }

    /// Handles one epoll event.
    fn dispatch(&mut self, token: u64, events: EventSet) {
        match token {
            TOKEN_RX | TOKEN_TX | TOKEN_EVENT => {
                // Tokens 1..=3 are queues 0..=2.
                let _ = self.evts[(token - 1) as usize].read();
                if token == TOKEN_TX {
                    self.process_tx();
                }
            }
            TOKEN_RESAMPLE => {
                if let Some(evt) = &self.resample {
                    let _ = evt.read();
                }
                self.irq.resample();
            }
            other => self.muxer.handle_event(other, events),
        }
    }

    /// Marks the queues broken (NEEDS_RESET).
    fn fail(&mut self, queue: &str, e: virtio_queue::Error) {
        self.broken = true;
        self.irq
            .mark_broken(&format!("virtio-vsock {queue} queue: {e}"));
    }

    /// Hands every packet the guest queued to the muxer.
    fn process_tx(&mut self) {
        if self.broken {
            return;
        }
        match self.tx_loop() {
            Ok(used) => self.notify(TX_QUEUE, used),
            Err(e) => self.fail("transmit", e),
        }
    }

    /// The transmit loop; returns whether any chain was used.
    fn tx_loop(&mut self) -> Result<bool, virtio_queue::Error> {
        let mut used = false;
        let mem = &self.mem;
        while let Some(mut chain) = next_chain(&mut self.queues[TX_QUEUE], mem)? {
            let head = chain.head_index();
            let first = chain.clone().next();
            match read_packet(mem, &mut chain, &mut self.buf) {
                Ok((hdr, len)) => {
                    let data = self.buf.get(..len).unwrap_or_default();
                    self.muxer.on_guest_packet(&hdr, data);
                }
                Err(e) => match first.and_then(|desc| read_header(mem, &desc)) {
                    Some(hdr) => self.muxer.on_malformed_packet(&hdr, e.to_string()),
                    None => debug!("virtio-vsock: dropping a transmit chain: {e}"),
                },
            }
            self.queues[TX_QUEUE].add_used(mem, head, 0)?;
            used = true;
        }
        Ok(used)
    }

    /// Gives the muxer's packets to the guest while it has receive buffers.
    fn process_rx(&mut self) {
        if self.broken || !self.muxer.has_rx() {
            return;
        }
        match self.rx_loop() {
            Ok(used) => self.notify(RX_QUEUE, used),
            Err(e) => self.fail("receive", e),
        }
    }

    /// The receive loop; returns whether any chain was used.
    fn rx_loop(&mut self) -> Result<bool, virtio_queue::Error> {
        let mut used = false;
        let mem = &self.mem;
        while self.muxer.has_rx() {
            let Some(mut chain) = next_chain(&mut self.queues[RX_QUEUE], mem)? else {
                break;
            };
            let head = chain.head_index();
            let mut pkt = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PAYLOAD) {
                Ok(pkt) => pkt,
                Err(e) => {
                    debug!("virtio-vsock: unusable receive chain: {e}");
                    self.queues[RX_QUEUE].add_used(mem, head, 0)?;
                    used = true;
                    continue;
                }
            };
            let room = pkt.data_slice().map_or(0, |d| d.len());
            let buf = self
                .buf
                .get_mut(..room.min(MAX_PAYLOAD as usize))
                .unwrap_or_default();
            let Some(hdr) = self.muxer.next_rx(buf) else {
                // Nothing after all: the chain stays for the next packet.
                self.queues[RX_QUEUE].go_to_previous_position();
                break;
            };
            let len = write_packet(&mut pkt, &hdr, buf);
            self.queues[RX_QUEUE].add_used(mem, head, len)?;
            used = true;
        }
        Ok(used)
    }

    /// Interrupts the guest for `queue` if it used buffers and wants to hear of it.
    fn notify(&mut self, queue: usize, used: bool) {
        if !used {
            return;
        }
        match self.queues[queue].needs_notification(&self.mem) {
            Ok(true) => self.irq.signal_queue(queue),
            Ok(false) => {}
            Err(e) => self.fail("used", e),
        }
    }
}

/// Parses a transmit chain: its header, and its payload copied into `buf`.
fn read_packet(
    mem: &GuestMemory,
    chain: &mut DescriptorChain<&GuestMemory>,
    buf: &mut [u8],
) -> Result<(Header, usize), virtio_vsock::packet::Error> {
    let pkt = VsockPacket::from_tx_virtq_chain(mem, chain, MAX_PAYLOAD)?;
    let hdr = Header {
        src_cid: pkt.src_cid(),
        dst_cid: pkt.dst_cid(),
        src_port: pkt.src_port(),
        dst_port: pkt.dst_port(),
        len: pkt.len(),
        type_: pkt.type_(),
        op: pkt.op(),
        flags: pkt.flags(),
        buf_alloc: pkt.buf_alloc(),
        fwd_cnt: pkt.fwd_cnt(),
    };
    let Some(data) = pkt.data_slice() else {
        return Ok((hdr, 0));
    };
    // The crate made the slice exactly `len` (at most MAX_PAYLOAD) bytes.
    let dst = buf
        .get_mut(..data.len())
        .ok_or(virtio_vsock::packet::Error::InvalidHeaderLen(hdr.len))?;
    data.read_slice(dst, 0)
        .map_err(virtio_vsock::packet::Error::InvalidVolatileAccess)?;
    Ok((hdr, dst.len()))
}

/// The header in a chain's first descriptor, if it is readable and holds one.
fn read_header(mem: &GuestMemory, desc: &virtio_queue::desc::split::Descriptor) -> Option<Header> {
    if desc.is_write_only() || (desc.len() as usize) < HEADER_SIZE {
        return None;
    }
    let mut raw = [0u8; HEADER_SIZE];
    mem.read_slice(&mut raw, desc.addr()).ok()?;
    Some(Header::from_bytes(&raw))
}

/// Fills a receive packet with `hdr` and `data`; returns the used length.
fn write_packet<B: vm_memory::bitmap::BitmapSlice>(
    pkt: &mut VsockPacket<'_, B>,
    hdr: &Header,
    data: &[u8],
) -> u32 {
    // `data` was sized to the data slice by the caller.
    let len = match (pkt.data_slice(), hdr.len) {
        (Some(slice), n) if n > 0 => {
            let part = data.get(..n as usize).unwrap_or_default();
            if slice.write_slice(part, 0).is_err() {
                warn!("virtio-vsock: cannot write a receive buffer");
            }
            n
        }
        _ => 0,
    };
    // The header slice is PKT_HEADER_SIZE bytes: the setters cannot fail.
    pkt.set_src_cid(hdr.src_cid)
        .set_dst_cid(hdr.dst_cid)
        .set_src_port(hdr.src_port)
        .set_dst_port(hdr.dst_port)
        .set_len(len)
        .set_type(hdr.type_)
        .set_op(hdr.op)
        .set_flags(hdr.flags)
        .set_buf_alloc(hdr.buf_alloc)
        .set_fwd_cnt(hdr.fwd_cnt);
    // PKT_HEADER_SIZE + at most MAX_PAYLOAD: fits u32.
    PKT_HEADER_SIZE as u32 + len
}
