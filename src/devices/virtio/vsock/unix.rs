//! The hybrid vsock-over-UNIX-socket protocol of Firecracker and
//! cloud-hypervisor, the one Kata's runtime speaks:
//!
//! - The VMM listens on the UNIX socket `PATH`. A host program connects,
//!   sends `CONNECT <port>\n` (decimal guest port) and, once the guest's
//!   listener on that port accepted, reads `OK <host-port>\n` (the port the
//!   VMM assigned to the host end of this connection); then the stream
//!   carries the connection's bytes. If the guest refuses, or does not answer
//!   within [`CONNECT_TIMEOUT`], the VMM closes the stream without `OK`.
//! - A guest connection to CID 2 port `P` is a connection to the UNIX socket
//!   `PATH_P` (`PATH`, an underscore, `P` in decimal), which a host program
//!   listens on; if nobody does, the guest's connect fails (RST).
//!
//! Everything here is non-blocking: a host that sends its `CONNECT` line
//! byte by byte, or a `PATH_P` whose listener's backlog is full, never holds
//! up the device.

use std::ffi::OsString;
use std::io::{ErrorKind, IoSlice};
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, recv, sendmsg, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};
use thiserror::Error;

/// How long a host has to send its `CONNECT` line, and the guest to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `CONNECT` line we read (`CONNECT 4294967295\r\n` is 20 bytes).
pub const MAX_LINE: usize = 32;

/// Errors of the UNIX socket side.
#[derive(Debug, Error)]
pub enum UnixError {
    /// Another process listens on the socket path.
    #[error("vsock socket {0}: in use by a running program")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("vsock socket {0}: exists and is not a socket; remove it or choose another path")]
    NotASocket(PathBuf),
    /// Binding or configuring the listener failed.
    #[error("vsock socket {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The host's first line is not `CONNECT <port>`.
    #[error("expected `CONNECT <port>`, got {0:?}")]
    BadConnect(String),
    /// The host closed or broke the stream before its `CONNECT` line ended.
    #[error("host closed before its CONNECT line: {0}")]
    Closed(#[source] std::io::Error),
    /// Connecting to a host listener `PATH_P` failed.
    #[error("cannot connect to {path:?}: {source}")]
    Connect {
        /// The host socket.
        path: OsString,
        /// What the system said.
        #[source]
        source: Errno,
    },
}

/// Binds the non-blocking listener at `path`. A stale socket file that
/// nobody listens on (a VMM that was killed) is replaced; a live one, or a
/// file that is not a socket, is an error.
pub fn listen(path: &Path) -> Result<UnixListener, UnixError> {
    let listen_error = |source| UnixError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(UnixError::NotASocket(path.to_path_buf()));
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(UnixError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(listen_error)?;
            }
            Err(e) => return Err(listen_error(e)),
        }
    }
    let listener = UnixListener::bind(path).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    Ok(listener)
}

/// What the host's first bytes amount to so far.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectLine {
    /// A complete `CONNECT <port>` line, consumed from the stream.
    Port(u32),
    /// No complete line yet; wait for more bytes.
    Incomplete,
}

/// Looks for the host's `CONNECT <port>\n` line on `stream` without
/// consuming anything past it (bytes after the newline are the stream's data).
pub fn read_connect(stream: &UnixStream) -> Result<ConnectLine, UnixError> {
    let mut buf = [0u8; MAX_LINE];
    let fd = stream.as_raw_fd();
    let peeked = loop {
        match recv(fd, &mut buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Err(UnixError::Closed(ErrorKind::UnexpectedEof.into())),
            Ok(n) => break n,
            Err(Errno::EAGAIN) => return Ok(ConnectLine::Incomplete),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(UnixError::Closed(e.into())),
        }
    };
    let seen = buf.get(..peeked).unwrap_or_default();
    let Some(end) = seen.iter().position(|b| *b == b'\n') else {
        if peeked == MAX_LINE {
            return Err(UnixError::BadConnect(String::from_utf8_lossy(seen).into()));
        }
        return Ok(ConnectLine::Incomplete);
    };
    let port = parse_connect(seen.get(..end).unwrap_or_default())?;
    // Consume exactly the line; the bytes are there (we just peeked them).
    let mut line = [0u8; MAX_LINE];
    let want = line.get_mut(..=end).unwrap_or_default();
    recv(fd, want, MsgFlags::MSG_DONTWAIT).map_err(|e| UnixError::Closed(e.into()))?;
    Ok(ConnectLine::Port(port))
}

/// Parses `CONNECT <port>` (without the newline; a trailing `\r` is allowed).
pub fn parse_connect(line: &[u8]) -> Result<u32, UnixError> {
    let bad = || UnixError::BadConnect(String::from_utf8_lossy(line).into());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut words = text.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("CONNECT"), Some(port), None) if port.bytes().all(|b| b.is_ascii_digit()) => {
            port.parse().map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// The host socket a guest connection to host port `port` goes to: `PATH_P`.
pub fn port_path(path: &Path, port: u32) -> OsString {
    let mut p = path.as_os_str().to_owned();
    p.push(format!("_{port}"));
    p
}

/// Connects, without blocking, to the host listener for guest connections
/// to host port `port`.
pub fn connect_port(path: &Path, port: u32) -> Result<UnixStream, UnixError> {
    let target = port_path(path, port);
    let fail = |source| UnixError::Connect {
        path: target.clone(),
        source,
    };
    let addr = UnixAddr::new(Path::new(&target)).map_err(fail)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(fail)?;
    // Non-blocking: a full backlog is EAGAIN, a refusal, not a wait.
    connect(fd.as_raw_fd(), &addr).map_err(fail)?;
    Ok(UnixStream::from(fd))
}

/// Writes what the (non-blocking) stream takes of `bufs`, without SIGPIPE
/// when the host has gone.
pub fn send(stream: &UnixStream, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    sendmsg::<()>(stream.as_raw_fd(), bufs, &[], flags, None).map_err(std::io::Error::from)
}

/// Whether the host end of `stream` is fully closed (not only half-closed).
pub fn peer_hung_up(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

/// A fresh directory under the system's temporary directory (tests).
#[cfg(test)]
pub(crate) fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let name = format!("vfio-vmm-vsock-{}-{n}", std::process::id());
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1024").unwrap(), 1024);
        assert_eq!(parse_connect(b"CONNECT 4294967295\r").unwrap(), u32::MAX);
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT ",
            b"CONNECT 4294967296",
            b"CONNECT -1",
            b"CONNECT +1",
            b"connect 5",
            b"CONNECT 5 6",
            b"CONNECT  5",
            b"\xff\xfe",
            b"",
        ] {
            assert!(parse_connect(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connect_line_in_pieces_leaves_the_data_after_it() {
        let (mut host, vmm) = UnixStream::pair().unwrap();
        vmm.set_nonblocking(true).unwrap();
        assert_eq!(read_connect(&vmm).unwrap(), ConnectLine::Incomplete);
        host.write_all(b"CONN").unwrap();
        assert_eq!(read_connect(&vmm).unwrap(), ConnectLine::Incomplete);
        host.write_all(b"ECT 52\nhello").unwrap();
        assert_eq!(read_connect(&vmm).unwrap(), ConnectLine::Port(52));
        let mut rest = [0u8; 5];
        (&vmm).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"hello");
    }

    #[test]
    fn garbage_or_endless_first_lines_are_refused() {
        let (mut host, vmm) = UnixStream::pair().unwrap();
        vmm.set_nonblocking(true).unwrap();
        host.write_all(&[b'A'; MAX_LINE]).unwrap();
        assert!(matches!(read_connect(&vmm), Err(UnixError::BadConnect(_))));
        let (host, vmm) = UnixStream::pair().unwrap();
        drop(host);
        assert!(matches!(read_connect(&vmm), Err(UnixError::Closed(_))));
    }

    #[test]
    fn listen_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = tempdir();
        let path = dir.join("v.sock");
        drop(UnixListener::bind(&path).unwrap()); // stale file stays
        let live = listen(&path).unwrap();
        assert!(matches!(listen(&path), Err(UnixError::InUse(_))));
        drop(live);
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(listen(&file), Err(UnixError::NotASocket(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn port_paths_and_refused_connects() {
        let dir = tempdir();
        let path = dir.join("v.sock");
        assert_eq!(port_path(&path, 7), dir.join("v.sock_7").into_os_string());
        assert!(matches!(
            connect_port(&path, 7),
            Err(UnixError::Connect {
                source: Errno::ENOENT,
                ..
            })
        ));
        let _l = UnixListener::bind(dir.join("v.sock_7")).unwrap();
        connect_port(&path, 7).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hang_up_is_told_from_half_close() {
        let (host, vmm) = UnixStream::pair().unwrap();
        host.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(!peer_hung_up(&vmm));
        drop(host);
        assert!(peer_hung_up(&vmm));
    }
}
