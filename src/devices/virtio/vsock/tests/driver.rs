//! A fake guest for the end-to-end tests: it drives a [`Vsock`] through the
//! PCI transport, builds split rings in guest RAM and speaks virtio-vsock
//! like Linux's driver does, with its own credit accounting (it never sends
//! past the device's credit and records any packet the device sends past
//! its own). It runs on the test thread; host programs run on others.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pci::PciAddress;
use vm_memory::{Bytes, GuestAddress};

use super::super::connection::*;
use super::super::Vsock;
use crate::devices::virtio::pci_transport::{VirtioPciDevice, NOTIFY_OFFSET};
use crate::devices::virtio::tests::{
    enable_msix, negotiate, place_bar, read, setup_queue, write, FakeIoEvents, FakeManager, Fired,
};
use crate::devices::virtio::F_VERSION_1;
use crate::memory::GuestMemory;

/// Entries in each ring.
const RING: u16 = 64;
/// Bytes of each receive buffer (header and 4 KiB, as Linux posts them).
pub const RX_BUF: u32 = 44 + 4096;
/// Largest payload the fake guest sends in one packet.
pub const TX_CHUNK: usize = 16 * 1024;
/// Transmit chains in flight at most (two descriptors each).
const TX_SLOTS: u16 = RING / 2;
/// Receive buffers.
const RX_BASE: u64 = 0x10_0000;
/// Transmit headers.
pub const TX_HDR_BASE: u64 = 0x20_0000;
/// Transmit payloads.
pub const TX_DATA_BASE: u64 = 0x30_0000;
/// A header the tests write by hand, away from the slots' buffers.
pub const RAW_HDR: u64 = 0x21_0000;
/// A payload the tests write by hand, away from the slots' buffers.
pub const RAW_DATA: u64 = 0x22_0000;
/// How long any wait of the tests lasts at most.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A split ring the fake guest owns.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    fn new(base: u64) -> Self {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Writes descriptor `index`.
    fn set(&self, mem: &GuestMemory, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc + 16 * u64::from(index);
        mem.write_obj(addr, GuestAddress(at)).unwrap();
        mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Makes the chain at `head` available.
    fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % RING);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Used entries (head, length) since the last call.
    fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used + 4 + 8 * u64::from(self.used_seen % RING);
            let head: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((head as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// The fake guest's side of one connection.
#[derive(Default)]
pub struct GuestConn {
    /// Bytes received from the host.
    pub received: Vec<u8>,
    /// Bytes to send to the host.
    pub to_send: Vec<u8>,
    /// How much of `to_send` went out.
    pub sent: usize,
    /// Whether a SHUTDOWN(both) goes out once everything is sent.
    pub close_after_send: bool,
    /// Whether the application stopped reading (no credit given back).
    pub paused: bool,
    /// RESPONSE seen (or sent).
    pub established: bool,
    /// RST seen.
    pub rst: bool,
    /// SHUTDOWN flags seen.
    pub shutdown: u32,
    /// CREDIT_REQUESTs seen.
    pub credit_requests: usize,
    /// Bytes the device sent past our credit (must stay 0).
    pub over_credit: usize,
    rx_cnt: u32,
    fwd_cnt: u32,
    fwd_sent: u32,
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
}

impl GuestConn {
    /// Bytes received that the application has not read.
    pub fn unread(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// Credit the device gave us.
    pub fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

/// Our receive buffer per connection, smaller than Linux's 256 KiB so that
/// credit runs out often.
pub const GUEST_BUF_ALLOC: u32 = 64 * 1024;

/// The fake guest.
pub struct Driver {
    /// The device.
    pub dev: VirtioPciDevice,
    /// Guest RAM.
    pub mem: GuestMemory,
    /// Interrupts the device raised.
    pub fired: Arc<Fired>,
    /// Our CID.
    pub cid: u64,
    rx: Ring,
    tx: Ring,
    free_tx: Vec<u16>,
    /// Connections by (guest port, host port).
    pub conns: HashMap<(u32, u32), GuestConn>,
    /// Guest ports with a listener, and what it sends to each connection.
    pub listening: HashMap<u32, Vec<u8>>,
    /// Every packet the device sent us, in order.
    pub log: Vec<Header>,
    /// Whether REQUESTs from the host go unanswered.
    pub ignore_requests: bool,
    /// Whether the next receive buffer re-posted is too short for a header.
    pub short_rx: bool,
    /// Lengths of the used receive buffers, in order.
    pub rx_used_lens: Vec<u32>,
    /// Connections refused by RST to a REQUEST of ours.
    pub refused: HashSet<(u32, u32)>,
    next_port: u32,
}

impl Driver {
    /// A guest with CID `cid` whose device listens on `path`, activated.
    pub fn new(cid: u64, path: &Path) -> Driver {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let fired = Arc::new(Fired::default());
        let mut dev = VirtioPciDevice::new(
            Box::new(Vsock::new(cid, path).unwrap()),
            PciAddress::new(0, 5, 0).unwrap(),
            mem.clone(),
            &FakeManager(fired.clone()),
            Arc::new(FakeIoEvents::default()),
        )
        .unwrap();
        place_bar(&mut dev);
        enable_msix(&mut dev, 4);
        let mut driver = Driver {
            dev,
            mem,
            fired,
            cid,
            rx: Ring::new(0x1_0000),
            tx: Ring::new(0x2_0000),
            free_tx: Vec::new(),
            conns: HashMap::new(),
            listening: HashMap::new(),
            log: Vec::new(),
            refused: HashSet::new(),
            ignore_requests: false,
            short_rx: false,
            rx_used_lens: Vec::new(),
            next_port: 50_000,
        };
        driver.start();
        driver
    }

    /// Sets the device up from reset to DRIVER_OK with fresh rings and no
    /// connections, and posts every receive buffer.
    pub fn start(&mut self) {
        let dev = &mut self.dev;
        write(dev, 0x10, 0, 2);
        assert_ne!(negotiate(dev, F_VERSION_1) & 8, 0, "FEATURES_OK");
        let rings = [
            Ring::new(0x1_0000),
            Ring::new(0x2_0000),
            Ring::new(0x3_0000),
        ];
        for (q, ring) in rings.iter().enumerate() {
            setup_queue(dev, q as u16, RING, ring.desc, ring.avail, ring.used);
            write(dev, 0x1a, q as u64 + 1, 2);
        }
        for ring in &rings {
            // Fresh rings: both sides count from 0 again.
            self.mem.write_obj(0u32, GuestAddress(ring.avail)).unwrap();
            self.mem.write_obj(0u32, GuestAddress(ring.used)).unwrap();
        }
        write(dev, 0x14, 0x0f, 1);
        assert_eq!(read(dev, 0x14, 1), 0x0f, "DRIVER_OK");
        let [rx, tx, _event] = rings;
        (self.rx, self.tx) = (rx, tx);
        self.free_tx = (0..TX_SLOTS).rev().collect();
        self.conns.clear();
        for i in 0..RING {
            self.post_rx(i, RX_BUF);
        }
        self.notify(0);
    }

    /// Makes receive buffer `i` (descriptor `i`, `len` bytes) available.
    pub fn post_rx(&mut self, i: u16, len: u32) {
        let addr = RX_BASE + 0x2000 * u64::from(i);
        self.rx.set(&self.mem, i, addr, len, 2, 0);
        self.rx.publish(&self.mem, i);
    }

    /// Notifies queue `q`.
    pub fn notify(&mut self, q: u64) {
        write(&mut self.dev, NOTIFY_OFFSET + 4 * q, q, 2);
    }

    /// Sends a chain of (address, length) readable buffers already written
    /// in guest RAM (one or two parts); waits for a free slot.
    pub fn send_chain(&mut self, parts: &[(u64, u32)]) {
        let start = Instant::now();
        let slot = loop {
            if let Some(slot) = self.free_tx.pop() {
                break slot;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the device never used our transmit chains"
            );
            self.reclaim_tx();
            std::thread::yield_now();
        };
        for (i, (addr, len)) in parts.iter().enumerate() {
            let index = 2 * slot + i as u16;
            let flags = u16::from(i + 1 < parts.len());
            self.tx.set(&self.mem, index, *addr, *len, flags, index + 1);
        }
        self.tx.publish(&self.mem, 2 * slot);
        self.notify(1);
    }

    /// Sends a packet `hdr` with payload `data` (at most [`TX_CHUNK`]).
    pub fn send(&mut self, mut hdr: Header, data: &[u8]) {
        hdr.len = data.len() as u32;
        let slot = u64::from(self.tx_slot_hint());
        let (h, d) = (
            TX_HDR_BASE + 64 * slot,
            TX_DATA_BASE + TX_CHUNK as u64 * slot,
        );
        self.mem
            .write_slice(&encode(&hdr), GuestAddress(h))
            .unwrap();
        self.mem.write_slice(data, GuestAddress(d)).unwrap();
        if data.is_empty() {
            self.send_chain(&[(h, 44)]);
        } else {
            self.send_chain(&[(h, 44), (d, data.len() as u32)]);
        }
    }

    /// The slot [`Driver::send_chain`] will take next (waiting for one).
    fn tx_slot_hint(&mut self) -> u16 {
        let start = Instant::now();
        while self.free_tx.is_empty() {
            assert!(
                start.elapsed() < PATIENCE,
                "the device never used our transmit chains"
            );
            self.reclaim_tx();
            std::thread::yield_now();
        }
        *self.free_tx.last().unwrap()
    }

    /// Takes back transmit chains the device used.
    fn reclaim_tx(&mut self) {
        for (head, _) in self.tx.take_used(&self.mem) {
            self.free_tx.push(head / 2);
        }
    }

    /// A header from us on connection `key` (guest port, host port).
    pub fn header(&mut self, key: (u32, u32), op: u16) -> Header {
        let conn = self.conns.entry(key).or_default();
        conn.fwd_sent = conn.fwd_cnt;
        Header {
            src_cid: self.cid,
            dst_cid: HOST_CID,
            src_port: key.0,
            dst_port: key.1,
            type_: TYPE_STREAM,
            op,
            buf_alloc: GUEST_BUF_ALLOC,
            fwd_cnt: conn.fwd_cnt,
            ..Header::default()
        }
    }

    /// Opens a connection to host port `port`; returns its key.
    pub fn connect(&mut self, port: u32, data: Vec<u8>) -> (u32, u32) {
        let key = (self.next_port, port);
        self.next_port += 1;
        self.conns.insert(
            key,
            GuestConn {
                to_send: data,
                ..GuestConn::default()
            },
        );
        let hdr = self.header(key, OP_REQUEST);
        self.send(hdr, &[]);
        key
    }

    /// Handles what the device did, sends what is due; true if anything moved.
    pub fn poll(&mut self) -> bool {
        self.reclaim_tx();
        let used = self.rx.take_used(&self.mem);
        let moved = !used.is_empty();
        for (head, len) in used {
            let addr = RX_BASE + 0x2000 * u64::from(head);
            let mut raw = vec![0u8; len as usize];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            self.rx_used_lens.push(len);
            if len >= 44 {
                let hdr = Header::from_bytes(raw[..44].try_into().unwrap());
                self.handle(hdr, &raw[44..]);
            }
            let size = if std::mem::take(&mut self.short_rx) {
                10
            } else {
                RX_BUF
            };
            self.post_rx(head, size);
        }
        if moved {
            self.notify(0);
        }
        self.pump() || moved
    }

    /// One packet from the device.
    fn handle(&mut self, hdr: Header, data: &[u8]) {
        self.log.push(hdr);
        assert_eq!((hdr.src_cid, hdr.dst_cid), (HOST_CID, self.cid), "{hdr:?}");
        assert_eq!(hdr.len as usize, data.len(), "{hdr:?}");
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.op == OP_REQUEST && !self.ignore_requests {
            return self.accept(key, &hdr);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.peer_buf_alloc = hdr.buf_alloc;
        conn.peer_fwd_cnt = hdr.fwd_cnt;
        match hdr.op {
            OP_RESPONSE => conn.established = true,
            OP_RST => {
                conn.rst = true;
                if !conn.established {
                    self.refused.insert(key);
                }
            }
            OP_SHUTDOWN => conn.shutdown |= hdr.flags,
            OP_CREDIT_REQUEST => {
                conn.credit_requests += 1;
                let hdr = self.header(key, OP_CREDIT_UPDATE);
                self.send(hdr, &[]);
            }
            OP_RW => {
                let in_use = conn.rx_cnt.wrapping_sub(conn.fwd_cnt) as usize;
                conn.over_credit += (in_use + data.len()).saturating_sub(GUEST_BUF_ALLOC as usize);
                conn.received.extend_from_slice(data);
                conn.rx_cnt = conn.rx_cnt.wrapping_add(data.len() as u32);
            }
            _ => {}
        }
    }

    /// A REQUEST from the host: RESPONSE if we listen on the port, else RST.
    fn accept(&mut self, key: (u32, u32), hdr: &Header) {
        let Some(data) = self.listening.get(&key.0).cloned() else {
            let hdr = self.header(key, OP_RST);
            self.conns.remove(&key);
            return self.send(hdr, &[]);
        };
        let conn = GuestConn {
            to_send: data,
            established: true,
            peer_buf_alloc: hdr.buf_alloc,
            peer_fwd_cnt: hdr.fwd_cnt,
            ..GuestConn::default()
        };
        self.conns.insert(key, conn);
        let hdr = self.header(key, OP_RESPONSE);
        self.send(hdr, &[]);
    }

    /// Consumes received data (giving credit back) and sends what credit
    /// allows; true if anything went out.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let keys: Vec<(u32, u32)> = self.conns.keys().copied().collect();
        for key in keys {
            let conn = &mut self.conns.get_mut(&key).unwrap();
            if !conn.paused {
                conn.fwd_cnt = conn.rx_cnt;
            }
            if conn.fwd_cnt.wrapping_sub(conn.fwd_sent) >= GUEST_BUF_ALLOC / 4 {
                let hdr = self.header(key, OP_CREDIT_UPDATE);
                self.send(hdr, &[]);
                moved = true;
            }
            moved |= self.send_data(key);
        }
        moved
    }

    /// Sends the next chunk of connection `key` within credit.
    fn send_data(&mut self, key: (u32, u32)) -> bool {
        let conn = &self.conns[&key];
        let left = conn.to_send.len() - conn.sent;
        if !conn.established || conn.rst {
            return false;
        }
        if left == 0 {
            if conn.close_after_send {
                self.conns.get_mut(&key).unwrap().close_after_send = false;
                let mut hdr = self.header(key, OP_SHUTDOWN);
                hdr.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                self.send(hdr, &[]);
                return true;
            }
            return false;
        }
        let n = left.min(TX_CHUNK).min(conn.peer_credit() as usize);
        if n == 0 {
            return false;
        }
        let chunk = conn.to_send[conn.sent..conn.sent + n].to_vec();
        let conn = self.conns.get_mut(&key).unwrap();
        conn.sent += n;
        conn.tx_cnt = conn.tx_cnt.wrapping_add(n as u32);
        let hdr = self.header(key, OP_RW);
        self.send(hdr, &chunk);
        true
    }

    /// Runs the guest until `done` holds; fails the test saying `what` after
    /// [`PATIENCE`].
    pub fn run_until(&mut self, what: &str, mut done: impl FnMut(&Driver) -> bool) {
        let start = Instant::now();
        loop {
            let moved = self.poll();
            if done(self) {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
            if !moved {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// The 44 little-endian bytes of a header.
pub fn encode(h: &Header) -> [u8; 44] {
    let mut b = [0u8; 44];
    b[0..8].copy_from_slice(&h.src_cid.to_le_bytes());
    b[8..16].copy_from_slice(&h.dst_cid.to_le_bytes());
    b[16..20].copy_from_slice(&h.src_port.to_le_bytes());
    b[20..24].copy_from_slice(&h.dst_port.to_le_bytes());
    b[24..28].copy_from_slice(&h.len.to_le_bytes());
    b[28..30].copy_from_slice(&h.type_.to_le_bytes());
    b[30..32].copy_from_slice(&h.op.to_le_bytes());
    b[32..36].copy_from_slice(&h.flags.to_le_bytes());
    b[36..40].copy_from_slice(&h.buf_alloc.to_le_bytes());
    b[40..44].copy_from_slice(&h.fwd_cnt.to_le_bytes());
    b
}
