//! The connection multiplexer: every connection of one vsock device, keyed
//! by (our port, the guest's port), the host streams that have not yet sent
//! their `CONNECT` line, and the order in which connections get the guest's
//! receive buffers (round robin, so one busy connection cannot starve the
//! others).
//!
//! It routes each packet the guest sends to its connection, opens
//! connections the guest asks for (to `PATH_P`), answers packets for unknown
//! connections with RST, and owns the epoll set the worker waits on (the
//! worker adds its queue eventfds with tokens below [`TOKEN_LISTENER`]).

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Instant;

use log::debug;
use thiserror::Error;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{
    Connection, ConnectionError, Header, State, HOST_CID, OP_REQUEST, OP_RST, TYPE_STREAM,
};
use super::unix::{self, ConnectLine, CONNECT_TIMEOUT};

/// Epoll token of the listener; the worker's own tokens are below it.
pub const TOKEN_LISTENER: u64 = 16;
/// First token given to a host stream.
const FIRST_STREAM_TOKEN: u64 = 32;
/// Most connections at once (each holds a host file descriptor).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host streams at once that have not sent their `CONNECT` line.
pub const MAX_UNANNOUNCED: usize = 64;
/// Most RSTs to unknown connections waiting for receive buffers; more are
/// dropped (the guest is not posting buffers, and its connects time out).
pub const MAX_QUEUED_RSTS: usize = 1024;
/// First port we give the host end of a host-initiated connection.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Errors setting up the multiplexer.
#[derive(Debug, Error)]
pub enum MuxerError {
    /// The epoll set could not be created or the listener added to it.
    #[error("vsock epoll set: {0}")]
    Epoll(#[source] std::io::Error),
}

/// A connection's identity: our port and the guest's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Our (the host's) port.
    pub local: u32,
    /// The guest's port.
    pub peer: u32,
}

/// A connection and its bookkeeping.
struct Entry {
    /// The connection.
    conn: Connection,
    /// Its epoll token.
    token: u64,
    /// Whether its key is in the receive order.
    queued: bool,
}

/// A host stream that has not said where it wants to go.
struct Unannounced {
    /// The stream.
    stream: UnixStream,
    /// When we give up on it.
    deadline: Instant,
}

/// See the module documentation.
pub struct Muxer {
    /// The guest's CID.
    guest_cid: u64,
    /// The listener's path (`PATH_P` derive from it).
    path: PathBuf,
    /// The host listener.
    listener: UnixListener,
    /// The epoll set.
    epoll: Epoll,
    /// Connections.
    conns: HashMap<ConnKey, Entry>,
    /// Connection by epoll token.
    by_token: HashMap<u64, ConnKey>,
    /// Host streams before their `CONNECT` line, by token.
    unannounced: HashMap<u64, Unannounced>,
    /// Connections that may have packets for the guest, in turn.
    rx_order: VecDeque<ConnKey>,
    /// RSTs for packets of unknown connections.
    rsts: VecDeque<Header>,
    /// Next candidate for a host-initiated connection's port.
    next_port: u32,
    /// Next epoll token.
    next_token: u64,
}

impl Muxer {
    /// A multiplexer for guest `guest_cid` serving `listener` (bound at `path`).
    pub fn new(guest_cid: u64, path: PathBuf, listener: UnixListener) -> Result<Self, MuxerError> {
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        let event = EpollEvent::new(EventSet::IN, TOKEN_LISTENER);
        epoll
            .ctl(ControlOperation::Add, listener.as_raw_fd(), event)
            .map_err(MuxerError::Epoll)?;
        Ok(Muxer {
            guest_cid,
            path,
            listener,
            epoll,
            conns: HashMap::new(),
            by_token: HashMap::new(),
            unannounced: HashMap::new(),
            rx_order: VecDeque::new(),
            rsts: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            next_token: FIRST_STREAM_TOKEN,
        })
    }

    /// The epoll set.
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Number of connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Handles readiness of one of our file descriptors.
    pub fn handle_event(&mut self, token: u64, events: EventSet) {
        if token == TOKEN_LISTENER {
            self.accept_hosts();
        } else if self.unannounced.contains_key(&token) {
            self.read_connect(token);
        } else if let Some(key) = self.by_token.get(&token).copied() {
            if let Some(entry) = self.conns.get_mut(&key) {
                entry.conn.on_host_event(
                    events.intersects(EventSet::IN | EventSet::READ_HANG_UP),
                    events.contains(EventSet::OUT),
                    events.intersects(EventSet::HANG_UP | EventSet::ERROR),
                );
            }
            self.after_change(key);
        } else {
            debug!("vsock: stray epoll token {token}");
        }
    }

    /// Accepts every waiting host stream.
    fn accept_hosts(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("vsock: accepting on {}: {e}", self.path.display());
                    return;
                }
            };
            let full =
                self.unannounced.len() >= MAX_UNANNOUNCED || self.conns.len() >= MAX_CONNECTIONS;
            if full {
                debug!("vsock: too many connections; closing a new host stream");
                continue;
            }
            let Some(token) = self.watch(&stream) else {
                continue;
            };
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            self.unannounced
                .insert(token, Unannounced { stream, deadline });
            self.read_connect(token);
        }
    }

    /// Adds a host stream to the epoll set (non-blocking, edge-triggered);
    /// returns its token.
    fn watch(&mut self, stream: &UnixStream) -> Option<u64> {
        let token = self.next_token;
        self.next_token += 1;
        let events =
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        let added = stream.set_nonblocking(true).and_then(|()| {
            let event = EpollEvent::new(events, token);
            self.epoll
                .ctl(ControlOperation::Add, stream.as_raw_fd(), event)
        });
        match added {
            Ok(()) => Some(token),
            Err(e) => {
                log::warn!("vsock: cannot watch a host stream: {e}");
                None
            }
        }
    }

    /// Removes a host stream from the epoll set.
    fn unwatch(&self, stream: &UnixStream) {
        let fd = stream.as_raw_fd();
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    /// Looks for the `CONNECT` line of an unannounced host stream; a
    /// complete one starts a connection to the guest.
    fn read_connect(&mut self, token: u64) {
        let Some(host) = self.unannounced.get(&token) else {
            return;
        };
        let port = match unix::read_connect(&host.stream) {
            Ok(ConnectLine::Incomplete) => return,
            Ok(ConnectLine::Port(port)) => Some(port),
            Err(e) => {
                debug!("vsock: host stream on {}: {e}", self.path.display());
                None
            }
        };
        let Some(host) = self.unannounced.remove(&token) else {
            return;
        };
        let Some(peer) = port else {
            self.unwatch(&host.stream);
            return;
        };
        let local = self.free_port(peer);
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let conn = Connection::requested(host.stream, local, peer, deadline);
        self.insert(conn, token);
    }

    /// A port for our end of a new connection to guest port `peer`.
    fn free_port(&mut self, peer: u32) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            // At most MAX_CONNECTIONS ports are taken: this ends.
            if !self.conns.contains_key(&ConnKey { local: port, peer }) {
                return port;
            }
        }
    }

    /// Adds a connection whose stream is watched under `token`.
    fn insert(&mut self, conn: Connection, token: u64) {
        let key = ConnKey {
            local: conn.local_port,
            peer: conn.peer_port,
        };
        self.by_token.insert(token, key);
        let entry = Entry {
            conn,
            token,
            queued: false,
        };
        if let Some(old) = self.conns.insert(key, entry) {
            // Callers make sure the key is free; never leak a watched stream.
            self.unwatch(old.conn.stream());
            self.by_token.remove(&old.token);
        }
        self.after_change(key);
    }

    /// Removes a closed connection, or gives one with packets for the guest
    /// its turn.
    fn after_change(&mut self, key: ConnKey) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        if entry.conn.state() == State::Closed {
            if let Some(entry) = self.conns.remove(&key) {
                self.unwatch(entry.conn.stream());
                self.by_token.remove(&entry.token);
            }
        } else if entry.conn.wants_rx() && !entry.queued {
            entry.queued = true;
            self.rx_order.push_back(key);
        }
    }

    /// Handles a packet the guest sent, with its payload.
    pub fn on_guest_packet(&mut self, hdr: &Header, data: &[u8]) {
        if hdr.src_cid != self.guest_cid {
            debug!("vsock: dropping a packet from CID {}", hdr.src_cid);
            return;
        }
        let key = ConnKey {
            local: hdr.dst_port,
            peer: hdr.src_port,
        };
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            self.refuse(hdr);
            return;
        }
        let Some(entry) = self.conns.get_mut(&key) else {
            if hdr.op == OP_REQUEST {
                self.guest_connect(hdr);
            } else {
                self.refuse(hdr);
            }
            return;
        };
        let result = if hdr.op == OP_REQUEST {
            Err(ConnectionError::Unexpected {
                op: hdr.op,
                state: entry.conn.state(),
            })
        } else {
            entry.conn.on_guest_packet(hdr, data)
        };
        if let Err(e) = result {
            entry.conn.fail(e);
        }
        self.after_change(key);
    }

    /// Handles a packet whose header could be read but whose chain the
    /// parser refused: its connection, if any, is reset; otherwise RST.
    pub fn on_malformed_packet(&mut self, hdr: &Header, why: String) {
        if hdr.src_cid != self.guest_cid {
            return;
        }
        let key = ConnKey {
            local: hdr.dst_port,
            peer: hdr.src_port,
        };
        match self.conns.get_mut(&key) {
            Some(entry) => {
                entry.conn.fail(ConnectionError::Malformed(why));
                self.after_change(key);
            }
            None => self.refuse(hdr),
        }
    }

    /// Opens the connection the guest asked for (REQUEST `hdr`) to `PATH_P`.
    fn guest_connect(&mut self, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            debug!("vsock: too many connections; refusing the guest's");
            self.refuse(hdr);
            return;
        }
        let stream = match unix::connect_port(&self.path, hdr.dst_port) {
            Ok(stream) => stream,
            Err(e) => {
                debug!("vsock: guest port {}: {e}", hdr.src_port);
                self.refuse(hdr);
                return;
            }
        };
        let Some(token) = self.watch(&stream) else {
            self.refuse(hdr);
            return;
        };
        self.insert(Connection::accepted(stream, hdr), token);
    }

    /// Answers a packet nobody takes with RST (an RST gets no answer).
    fn refuse(&mut self, hdr: &Header) {
        if hdr.op == OP_RST {
            return;
        }
        if self.rsts.len() >= MAX_QUEUED_RSTS {
            debug!("vsock: the guest posts no receive buffers; dropping an RST");
            return;
        }
        self.rsts.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: hdr.dst_port,
            dst_port: hdr.src_port,
            type_: hdr.type_,
            op: OP_RST,
            ..Header::default()
        });
    }

    /// Whether some packet may be waiting for a guest receive buffer.
    pub fn has_rx(&self) -> bool {
        !self.rsts.is_empty() || !self.rx_order.is_empty()
    }

    /// The next packet for the guest, its payload in `buf` (as long as the
    /// room in the guest's buffer allows); `None` if there is none now.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<Header> {
        if let Some(hdr) = self.rsts.pop_front() {
            return Some(hdr);
        }
        // Each connection gets one try per call.
        for _ in 0..self.rx_order.len() {
            let key = self.rx_order.pop_front()?;
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            entry.queued = false;
            let hdr = entry.conn.next_rx(buf);
            self.after_change(key);
            if let Some(mut hdr) = hdr {
                hdr.dst_cid = self.guest_cid;
                return Some(hdr);
            }
        }
        None
    }

    /// The earliest deadline: an unannounced host stream or an unanswered REQUEST.
    pub fn next_deadline(&self) -> Option<Instant> {
        let hosts = self.unannounced.values().map(|h| h.deadline);
        let conns = self.conns.values().filter_map(|e| match e.conn.state() {
            State::Connecting { deadline } => Some(deadline),
            _ => None,
        });
        hosts.chain(conns).min()
    }

    /// Gives up on host streams and REQUESTs whose time is up.
    pub fn on_timer(&mut self, now: Instant) {
        if self.next_deadline().is_none_or(|at| at > now) {
            return;
        }
        let late: Vec<u64> = self
            .unannounced
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in late {
            if let Some(host) = self.unannounced.remove(&token) {
                debug!("vsock: a host stream sent no CONNECT line in time");
                self.unwatch(&host.stream);
            }
        }
        let late: Vec<ConnKey> = self
            .conns
            .iter_mut()
            .filter_map(|(key, entry)| {
                entry.conn.check_deadline(now);
                (entry.conn.state() == State::Resetting).then_some(*key)
            })
            .collect();
        for key in late {
            self.after_change(key);
        }
    }
}
