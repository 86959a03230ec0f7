//! HTTP/1.1 on a UNIX stream, as far as the control API needs it: one
//! request at a time read with `recvmsg` (so descriptors passed with
//! SCM_RIGHTS arrive with the bytes that carry them), its head parsed by
//! `httparse`, its body read by `Content-Length` up to a limit, all before a
//! deadline; responses written whole. The client side (`client.rs`) uses the
//! same reader for responses and [`send_with_fds`] for requests.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::cmsg_space;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// Most headers a request or response may have.
const MAX_HEADERS: usize = 32;
/// Most descriptors one message may carry (Kata passes one per queue).
pub const MAX_FDS: usize = 16;

/// Why a request or response could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection before sending anything.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// The message did not arrive before its deadline.
    #[error("the message did not arrive within {0:?}")]
    Timeout(Duration),
    /// The head is not HTTP/1.x.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    /// The head is longer than the limit.
    #[error("HTTP head longer than {0} bytes")]
    HeadTooLarge(usize),
    /// The body is longer than the limit.
    #[error("body of {0} bytes is over the limit of {1} bytes")]
    BodyTooLarge(usize, usize),
}

/// Sizes and times a message must keep to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest head (request line and headers).
    pub head: usize,
    /// Longest body.
    pub body: usize,
    /// Time from a message's first byte to its last.
    pub message: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: 16 << 10,
            body: 1 << 20,
            message: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

/// One request: method, path (query dropped), body and passed descriptors.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, e.g. `/api/v1/vmm.ping`.
    pub path: String,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
    /// Descriptors that came with the request (SCM_RIGHTS).
    pub fds: Vec<OwnedFd>,
    /// Whether the client asked to close the connection after this request.
    pub close: bool,
}

/// One response: status and an optional JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, JSON.
    pub body: Option<String>,
}

impl Response {
    /// A response without a body.
    pub fn empty(status: u16) -> Self {
        Response { status, body: None }
    }

    /// A response with a JSON body.
    pub fn json(status: u16, body: String) -> Self {
        Response {
            status,
            body: Some(body),
        }
    }

    /// cloud-hypervisor's error shape: a JSON array of messages, outermost first.
    pub fn error(status: u16, message: &str) -> Self {
        Response::json(status, serde_json::json!([message]).to_string())
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if close {
            out.push_str("Connection: close\r\n");
        }
        match &self.body {
            Some(body) => {
                out.push_str("Content-Type: application/json\r\n");
                out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
            }
            None if self.status == 204 => out.push_str("\r\n"),
            None => out.push_str("Content-Length: 0\r\n\r\n"),
        }
        out.into_bytes()
    }
}

/// The reason phrase of the codes the API answers with.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A stream with the bytes and descriptors read past the last message.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// What a parsed head says about the message.
struct Head {
    len: usize,
    content_length: usize,
    close: bool,
    first: Option<String>,
    second: Option<String>,
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// The stream, for writing.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reads one request. `Closed` when the peer ended the connection
    /// between requests or stayed idle past `limits.idle`.
    pub fn read_request(&mut self, limits: &Limits) -> Result<Request, HttpError> {
        let (head, body) = self.read_message(limits, parse_request_head)?;
        Ok(Request {
            method: head.first.unwrap_or_default(),
            path: head.second.unwrap_or_default(),
            body,
            fds: std::mem::take(&mut self.fds),
            close: head.close,
        })
    }

    /// Reads one response: its status and body.
    pub fn read_response(&mut self, limits: &Limits) -> Result<Response, HttpError> {
        let (head, body) = self.read_message(limits, parse_response_head)?;
        let status = head.first.and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
        Ok(Response { status, body })
    }

    /// Writes `response` whole.
    pub fn write_response(&mut self, response: &Response, close: bool) -> std::io::Result<()> {
        (&self.stream).write_all(&response.to_bytes(close))
    }

    fn read_message(
        &mut self,
        limits: &Limits,
        parse: fn(&[u8]) -> Result<Option<Head>, HttpError>,
    ) -> Result<(Head, Vec<u8>), HttpError> {
        let mut deadline = None;
        let head = loop {
            if let Some(head) = parse(&self.buf)? {
                break head;
            }
            if self.buf.len() > limits.head {
                return Err(HttpError::HeadTooLarge(limits.head));
            }
            let started = deadline.is_some() || !self.buf.is_empty();
            let until = *deadline.get_or_insert_with(|| Instant::now() + limits.message);
            let wait_until = if started {
                until
            } else {
                Instant::now() + limits.idle
            };
            match self.fill(wait_until) {
                Ok(()) => {}
                Err(HttpError::Closed | HttpError::Timeout(_)) if !started => {
                    return Err(HttpError::Closed)
                }
                Err(HttpError::Closed) => return Err(HttpError::Truncated),
                Err(HttpError::Timeout(_)) => return Err(HttpError::Timeout(limits.message)),
                Err(e) => return Err(e),
            }
        };
        if head.content_length > limits.body {
            return Err(HttpError::BodyTooLarge(head.content_length, limits.body));
        }
        let until = deadline.unwrap_or_else(|| Instant::now() + limits.message);
        while self.buf.len() < head.len + head.content_length {
            match self.fill(until) {
                Ok(()) => {}
                Err(HttpError::Closed) => return Err(HttpError::Truncated),
                Err(HttpError::Timeout(_)) => return Err(HttpError::Timeout(limits.message)),
                Err(e) => return Err(e),
            }
        }
        let rest = self.buf.split_off(head.len + head.content_length);
        let body = self.buf.split_off(head.len);
        self.buf = rest;
        Ok((head, body))
    }

    /// One `recvmsg` into the buffer, waiting at most until `until`.
    fn fill(&mut self, until: Instant) -> Result<(), HttpError> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout(Duration::ZERO));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 4096];
        let mut cmsg = cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let msg = match recvmsg::<UnixAddr>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EAGAIN) => return Err(HttpError::Timeout(left)),
            Err(nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => return Err(HttpError::Io(e.into())),
        };
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(|e| HttpError::Io(e.into()))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel installed `fd` in this process for
                    // this message; nothing else owns it.
                    self.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if n == 0 {
            return Err(HttpError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn parse_request_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (content_length, close) = framing(req.headers, req.version)?;
            Ok(Some(Head {
                len,
                content_length,
                close,
                first: req.method.map(str::to_string),
                second: req
                    .path
                    .map(|p| p.split('?').next().unwrap_or("").to_string()),
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

fn parse_response_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (content_length, close) = framing(resp.headers, resp.version)?;
            Ok(Some(Head {
                len,
                content_length,
                close,
                first: resp.code.map(|c| c.to_string()),
                second: None,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

/// Content-Length and whether the connection closes after the message.
/// Chunked bodies are refused: no client of this API sends them.
fn framing(headers: &[httparse::Header], version: Option<u8>) -> Result<(usize, bool), HttpError> {
    let mut length = None;
    let mut close = version == Some(0);
    for h in headers {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| HttpError::Malformed(format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("two Content-Length headers".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed(
                "Transfer-Encoding is not supported: send Content-Length".into(),
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok((length.unwrap_or(0), close))
}

/// Writes `bytes`, the descriptors `fds` riding on the first byte (SCM_RIGHTS).
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut sent = 0;
    if !fds.is_empty() {
        let cmsg = [ControlMessage::ScmRights(fds)];
        let iov = [IoSlice::new(bytes)];
        sent = sendmsg::<UnixAddr>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .map_err(std::io::Error::from)?;
    }
    let mut w = stream;
    w.write_all(&bytes[sent..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Conn::new(a), b)
    }

    #[test]
    fn requests_on_one_connection_are_read_in_turn() {
        let (mut conn, peer) = pair();
        let two = b"PUT /api/v1/vm.create?x=1 HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}{}GET /api/v1/vmm.ping HTTP/1.1\r\nConnection: close\r\n\r\n";
        send_with_fds(&peer, two, &[]).unwrap();
        let limits = Limits::default();
        let r = conn.read_request(&limits).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("PUT", "/api/v1/vm.create")
        );
        assert_eq!((r.body.as_slice(), r.close), (&b"{}{}"[..], false));
        let r = conn.read_request(&limits).unwrap();
        assert_eq!(
            (r.path.as_str(), r.body.len(), r.close),
            ("/api/v1/vmm.ping", 0, true)
        );
        drop(peer);
        assert!(matches!(conn.read_request(&limits), Err(HttpError::Closed)));
    }

    #[test]
    fn bad_framing_is_refused() {
        let limits = Limits {
            body: 8,
            ..Limits::default()
        };
        for (text, want) in [
            (
                &b"PUT /x HTTP/1.1\r\nContent-Length: 9\r\n\r\n"[..],
                "over the limit",
            ),
            (
                b"PUT /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (b"\x01\x02 nonsense\r\n\r\n", "malformed HTTP"),
        ] {
            let (mut conn, peer) = pair();
            send_with_fds(&peer, text, &[]).unwrap();
            let err = conn.read_request(&limits).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn a_response_round_trips() {
        let (mut conn, peer) = pair();
        let resp = Response::error(404, "VM is not created");
        send_with_fds(&peer, &resp.to_bytes(false), &[]).unwrap();
        assert_eq!(conn.read_response(&Limits::default()).unwrap(), resp);
        send_with_fds(&peer, &Response::empty(204).to_bytes(true), &[]).unwrap();
        assert_eq!(
            conn.read_response(&Limits::default()).unwrap(),
            Response::empty(204)
        );
    }
}
