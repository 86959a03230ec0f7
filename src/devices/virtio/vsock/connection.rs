//! One stream connection between a guest socket and a host UNIX stream: its
//! state machine (connecting, established, closing) and the credit-based
//! flow control of virtio-vsock in both directions.
//!
//! Guest to host: the guest may send at most `BUF_ALLOC - (rx_cnt -
//! fwd_cnt)` bytes that we have not yet written to the host; what the host
//! socket does not take at once waits in `out`, so a slow host never loses
//! bytes and never makes us buffer more than we advertised. `fwd_cnt` grows
//! as bytes reach the host and the guest hears of it (in every header we
//! send, or a CREDIT_UPDATE once a quarter of the buffer was freed).
//!
//! Host to guest: we read the host socket only while the guest has credit
//! (`peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`) left, so a guest that never
//! reads leaves the bytes in the host socket (whose sender then blocks), and
//! the host socket is watched edge-triggered, so nothing spins meanwhile.
//!
//! Closing: the host closing its stream (after its last bytes went to the
//! guest) resets the connection (RST); a host half-close (`shutdown(SHUT_WR)`)
//! becomes SHUTDOWN(SEND), and a full close after it an RST. A host that
//! goes away before the guest accepted its CONNECT resets it too. A guest SHUTDOWN(SEND) half-closes the host stream
//! once the buffered bytes are written; SHUTDOWN of both directions is
//! answered with RST then, as Linux expects. A guest RST drops the connection
//! after one last non-blocking attempt to write what is buffered.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, Read};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use thiserror::Error;

/// CID of the host.
pub const HOST_CID: u64 = 2;
/// Socket type: stream (the only one we carry).
pub const TYPE_STREAM: u16 = 1;
/// Operation: connection request.
pub const OP_REQUEST: u16 = 1;
/// Operation: connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Operation: reset (connection refused or torn down).
pub const OP_RST: u16 = 3;
/// Operation: one or both directions shut down (flags say which).
pub const OP_SHUTDOWN: u16 = 4;
/// Operation: data.
pub const OP_RW: u16 = 5;
/// Operation: the sender's buf_alloc and fwd_cnt changed.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Operation: please send a CREDIT_UPDATE.
pub const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;
/// Bytes of guest data we buffer per connection (our buf_alloc).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Freed bytes after which we volunteer a CREDIT_UPDATE.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// A packet header, detached from the guest memory it came from or goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags (SHUTDOWN).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed of what it received.
    pub fwd_cnt: u32,
}

/// Size of a packet header.
pub const HEADER_SIZE: usize = 44;

impl Header {
    /// Decodes a header from its little-endian bytes. The worker parses
    /// packets with the virtio-vsock crate; this serves only chains the
    /// crate refuses (payload past its buffer, over 64 KiB), so that their
    /// connection is reset rather than silently missing bytes.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Header {
        let mut at = 0;
        let mut take = |n: usize| {
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(&b[at..at + n]);
            at += n;
            u64::from_le_bytes(v)
        };
        // Each field is read with its own width: the casts do not truncate.
        Header {
            src_cid: take(8),
            dst_cid: take(8),
            src_port: take(4) as u32,
            dst_port: take(4) as u32,
            len: take(4) as u32,
            type_: take(2) as u16,
            op: take(2) as u16,
            flags: take(4) as u32,
            buf_alloc: take(4) as u32,
            fwd_cnt: take(4) as u32,
        }
    }
}

/// Errors of a connection's host side.
#[derive(Debug, Error)]
pub enum ConnectionError {
    /// The guest sent more than the credit we gave it.
    #[error("the guest sent {len} bytes with {room} bytes of credit")]
    CreditExceeded {
        /// Bytes in the packet.
        len: usize,
        /// Credit it had.
        room: u32,
    },
    /// The host stream failed (closed, reset).
    #[error("host stream: {0}")]
    Host(#[source] std::io::Error),
    /// The guest sent a packet that could not be parsed.
    #[error("malformed packet from the guest: {0}")]
    Malformed(String),
    /// The guest sent an operation that makes no sense in this state.
    #[error("unexpected operation {op} from the guest in state {state:?}")]
    Unexpected {
        /// The operation.
        op: u16,
        /// Our state.
        state: State,
    },
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The host asked for it (CONNECT); the guest has not answered our REQUEST.
    Connecting {
        /// When we give up waiting for the guest's RESPONSE.
        deadline: Instant,
    },
    /// Both sides may exchange data.
    Established,
    /// An RST goes to the guest next, then the connection is gone.
    Resetting,
    /// Nothing more to do: remove it.
    Closed,
}

/// Control packets waiting for a receive buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending {
    /// REQUEST (host-initiated connection).
    request: bool,
    /// RESPONSE (guest-initiated connection accepted).
    response: bool,
    /// SHUTDOWN with these flags (0: none).
    shutdown: u32,
    /// CREDIT_UPDATE.
    credit_update: bool,
    /// CREDIT_REQUEST.
    credit_request: bool,
}

/// One connection; see the module documentation.
pub struct Connection {
    /// The host side.
    stream: UnixStream,
    /// Our port (the host's, as the guest sees it).
    pub local_port: u32,
    /// The guest's port.
    pub peer_port: u32,
    /// State.
    state: State,
    /// Control packets to send.
    pending: Pending,
    /// Bytes for the host stream not yet written.
    out: VecDeque<u8>,
    /// Leading bytes of `out` that are ours (the `OK` line), not guest data.
    out_control: usize,
    /// Guest data bytes received.
    rx_cnt: Wrapping<u32>,
    /// Guest data bytes written to the host.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as the guest last heard it.
    fwd_cnt_sent: Wrapping<u32>,
    /// Bytes sent to the guest.
    tx_cnt: Wrapping<u32>,
    /// The guest's receive buffer size.
    peer_buf_alloc: u32,
    /// Bytes the guest has consumed.
    peer_fwd_cnt: Wrapping<u32>,
    /// SHUTDOWN flags the guest sent.
    guest_shut: u32,
    /// Whether the host stream may have bytes to read.
    host_readable: bool,
    /// Whether the host stream may take bytes.
    host_writable: bool,
    /// Whether the host stream hit end of file.
    host_eof: bool,
    /// Whether we shut the host stream's write side.
    host_write_shut: bool,
}

impl Connection {
    /// A connection the guest asked for (REQUEST `hdr`) and that reached the
    /// host's listener on `stream`: RESPONSE goes out next.
    pub fn accepted(stream: UnixStream, hdr: &Header) -> Self {
        let mut conn = Connection::new(stream, hdr.dst_port, hdr.src_port, State::Established);
        conn.update_peer_credit(hdr);
        conn.pending.response = true;
        conn
    }

    /// A connection the host asked for (CONNECT) to guest port `peer_port`
    /// from our `local_port`: REQUEST goes out next; RESPONSE is due by `deadline`.
    pub fn requested(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        deadline: Instant,
    ) -> Self {
        let mut conn = Connection::new(
            stream,
            local_port,
            peer_port,
            State::Connecting { deadline },
        );
        conn.pending.request = true;
        conn
    }

    fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state,
            pending: Pending::default(),
            out: VecDeque::new(),
            out_control: 0,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            guest_shut: 0,
            // Edge-triggered: assume both until the socket says otherwise.
            host_readable: true,
            host_writable: true,
            host_eof: false,
            host_write_shut: false,
        }
    }

    /// The host stream (for epoll).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes of guest data waiting for the host.
    pub fn buffered(&self) -> usize {
        self.out.len() - self.out_control
    }

    /// Credit the guest gave us: bytes we may still send it.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Credit we give the guest: bytes it may still send us.
    pub fn our_credit(&self) -> u32 {
        BUF_ALLOC.saturating_sub((self.rx_cnt - self.fwd_cnt).0)
    }

    /// Whether the connection has a packet for the guest if it gets a buffer.
    pub fn wants_rx(&self) -> bool {
        match self.state {
            State::Resetting => true,
            State::Closed => false,
            State::Connecting { .. } => self.pending.request,
            State::Established => {
                let p = self.pending;
                p.response
                    || p.shutdown != 0
                    || p.credit_update
                    || p.credit_request
                    || self.can_send_data()
            }
        }
    }

    /// Whether we would read the host stream for the guest now.
    fn can_send_data(&self) -> bool {
        self.host_readable
            && !self.host_eof
            && self.guest_shut & SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }

    /// The guest's buf_alloc and fwd_cnt from any packet of this connection.
    fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
    }

    /// Handles a packet the guest sent on this connection; an error means
    /// the connection is to be reset.
    pub fn on_guest_packet(&mut self, hdr: &Header, data: &[u8]) -> Result<(), ConnectionError> {
        if matches!(self.state, State::Closed | State::Resetting) {
            return Ok(());
        }
        self.update_peer_credit(hdr);
        let unexpected = |state| ConnectionError::Unexpected { op: hdr.op, state };
        match (hdr.op, self.state) {
            (OP_RESPONSE, State::Connecting { .. }) => {
                self.state = State::Established;
                let ok = format!("OK {}\n", self.local_port);
                self.out_control = ok.len();
                self.out.extend(ok.as_bytes());
                self.flush()?;
            }
            (OP_RW, State::Established) => self.take_data(data)?,
            (OP_CREDIT_UPDATE, _) => {}
            (OP_CREDIT_REQUEST, _) => self.pending.credit_update = true,
            (OP_SHUTDOWN, State::Established) => {
                self.guest_shut |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.flush()?;
            }
            (OP_RST, _) => {
                // One last try for what the host has not taken yet.
                let _ = self.flush();
                self.state = State::Closed;
            }
            (_, state) => return Err(unexpected(state)),
        }
        Ok(())
    }

    /// Buffers guest data for the host and writes what the host takes.
    fn take_data(&mut self, data: &[u8]) -> Result<(), ConnectionError> {
        let room = self.our_credit();
        if data.len() > room as usize || self.guest_shut & SHUTDOWN_SEND != 0 {
            return Err(ConnectionError::CreditExceeded {
                len: data.len(),
                room,
            });
        }
        self.out.extend(data);
        // At most BUF_ALLOC: fits u32.
        self.rx_cnt += data.len() as u32;
        self.flush()
    }

    /// Writes buffered bytes to the host while it takes them, then carries
    /// out a guest shutdown whose data is all written.
    pub fn flush(&mut self) -> Result<(), ConnectionError> {
        while !self.out.is_empty() && self.host_writable {
            let (a, b) = self.out.as_slices();
            let n = match super::unix::send(&self.stream, &[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.host_writable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnectionError::Host(e)),
            };
            self.out.drain(..n);
            let control = n.min(self.out_control);
            self.out_control -= control;
            // n - control <= BUF_ALLOC: fits u32.
            self.fwd_cnt += (n - control) as u32;
        }
        if (self.fwd_cnt - self.fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending.credit_update = true;
        }
        if self.out.is_empty() && self.state == State::Established {
            self.finish_guest_shutdown();
        }
        Ok(())
    }

    /// Passes a guest shutdown on to the host once nothing is buffered.
    fn finish_guest_shutdown(&mut self) {
        if self.guest_shut & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.guest_shut == SHUTDOWN_RCV | SHUTDOWN_SEND {
            self.state = State::Resetting;
        }
    }

    /// Takes note of epoll readiness of the host stream.
    pub fn on_host_event(&mut self, readable: bool, writable: bool, hung_up: bool) {
        self.host_readable |= readable || hung_up;
        if writable || hung_up {
            self.host_writable = true;
            if let Err(e) = self.flush() {
                self.fail(e);
            }
        }
        if !hung_up {
            return;
        }
        let nothing_left_to_read = self.host_eof || self.guest_shut & SHUTDOWN_RCV != 0;
        match self.state {
            // The host gave up before the guest answered.
            State::Connecting { .. } => self.state = State::Resetting,
            // Otherwise the reads find the end of file after the last bytes.
            State::Established if nothing_left_to_read => self.state = State::Resetting,
            _ => {}
        }
    }

    /// The host stream failed or the guest broke the protocol: reset (RST).
    pub fn fail(&mut self, e: ConnectionError) {
        log::debug!(
            "vsock: connection {}:{}: {e}",
            self.local_port,
            self.peer_port
        );
        if self.state != State::Closed {
            self.state = State::Resetting;
        }
    }

    /// The REQUEST was not answered in time.
    pub fn check_deadline(&mut self, now: Instant) {
        if let State::Connecting { deadline } = self.state {
            if now >= deadline {
                self.state = State::Resetting;
            }
        }
    }

    /// A header from this connection to the guest, carrying our credit.
    fn header(&mut self, op: u16) -> Header {
        self.fwd_cnt_sent = self.fwd_cnt;
        self.pending.credit_update = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: 0,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next packet for the guest, data in `buf` (whose length is the
    /// room in the guest's buffer); `None` if there is none now. The caller
    /// sets `dst_cid`.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<Header> {
        match self.state {
            State::Closed => None,
            State::Resetting => {
                self.state = State::Closed;
                Some(self.header(OP_RST))
            }
            State::Connecting { .. } => {
                let request = std::mem::take(&mut self.pending.request);
                request.then(|| self.header(OP_REQUEST))
            }
            State::Established => self.next_established_rx(buf),
        }
    }

    /// [`Connection::next_rx`] of an established connection.
    fn next_established_rx(&mut self, buf: &mut [u8]) -> Option<Header> {
        if std::mem::take(&mut self.pending.response) {
            return Some(self.header(OP_RESPONSE));
        }
        if self.can_send_data() && !buf.is_empty() {
            if let Some(hdr) = self.read_host(buf) {
                return Some(hdr);
            }
        }
        let shutdown = std::mem::take(&mut self.pending.shutdown);
        if shutdown != 0 {
            let mut hdr = self.header(OP_SHUTDOWN);
            hdr.flags = shutdown;
            return Some(hdr);
        }
        if self.pending.credit_update {
            return Some(self.header(OP_CREDIT_UPDATE));
        }
        if std::mem::take(&mut self.pending.credit_request) {
            return Some(self.header(OP_CREDIT_REQUEST));
        }
        if self.state == State::Resetting {
            return self.next_rx(buf);
        }
        None
    }

    /// Reads host bytes into `buf` within the guest's credit: an RW packet,
    /// or `None` with the end of file or a would-block noted.
    fn read_host(&mut self, buf: &mut [u8]) -> Option<Header> {
        let credit = usize::try_from(self.peer_credit()).unwrap_or(usize::MAX);
        let want = buf.len().min(credit);
        let buf = buf.get_mut(..want)?;
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.host_eof = true;
                    self.host_closed();
                    return None;
                }
                Ok(n) => {
                    // n <= buf.len() <= credit: fits u32.
                    self.tx_cnt += n as u32;
                    if self.peer_credit() == 0 {
                        // Ask once; the guest's next header resets it.
                        self.pending.credit_request = true;
                    }
                    let mut hdr = self.header(OP_RW);
                    hdr.len = n as u32;
                    return Some(hdr);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.host_readable = false;
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(ConnectionError::Host(e));
                    return None;
                }
            }
        }
    }

    /// End of file from the host: a full close resets the connection, a
    /// half-close tells the guest the host sends no more.
    fn host_closed(&mut self) {
        if super::unix::peer_hung_up(&self.stream) {
            self.state = State::Resetting;
        } else {
            self.pending.shutdown = SHUTDOWN_SEND;
        }
    }
}

#[cfg(test)]
mod tests;
