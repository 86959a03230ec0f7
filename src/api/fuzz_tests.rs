//! Fuzz target of the control API's HTTP reader: request- and response-like
//! byte streams (methods, paths, headers with odd Content-Length,
//! Transfer-Encoding and Connection values, bodies, then bytes flipped or
//! cut) written to one end of a socket pair and read back as messages with
//! small random limits. A seeded structured random test (see
//! `pci/src/tests/fuzz_support.rs`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use arbitrary::Unstructured;

use super::http::{Conn, HttpError, Limits};
use crate::fuzz_support::run;

const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "", "G\0T"];
const PATHS: [&str; 5] = [
    "/api/v1/vmm.ping",
    "/api/v1/vm.info?x=1",
    "*",
    "/",
    "/\u{7f}",
];
const NAMES: [&str; 6] = [
    "Content-Length",
    "content-length",
    "Transfer-Encoding",
    "Connection",
    "Host",
    "X: y",
];
const VALUES: [&str; 9] = [
    "0",
    "5",
    "18446744073709551616",
    "-1",
    " 3 ",
    "close",
    "keep-alive",
    "chunked",
    "\u{e9}",
];

/// One message: a request or status line, headers, the blank line, a body.
fn message(u: &mut Unstructured, response: bool, out: &mut Vec<u8>) -> arbitrary::Result<()> {
    let minor = u.choose(&["0", "1", "2", "x"])?;
    if response {
        let code: u16 = u.arbitrary()?;
        write!(out, "HTTP/1.{minor} {} OK\r\n", code % 1000).ok();
    } else {
        let (method, path) = (u.choose(&METHODS)?, u.choose(&PATHS)?);
        write!(out, "{method} {path} HTTP/1.{minor}\r\n").ok();
    }
    for _ in 0..u.int_in_range(0u8..=40)? {
        let value = match u.ratio(1u8, 3)? {
            true => u.arbitrary::<u16>()?.to_string(),
            false => u.choose(&VALUES)?.to_string(),
        };
        write!(out, "{}: {value}\r\n", u.choose(&NAMES)?).ok();
    }
    out.extend_from_slice(b"\r\n");
    let body_len = u.int_in_range(0u16..=600)?;
    out.extend_from_slice(u.bytes(usize::from(body_len).min(u.len()))?);
    Ok(())
}

/// Reads messages until the stream ends or one is refused; checks each.
fn read_all(conn: &mut Conn, limits: &Limits, response: bool, sent: usize) -> usize {
    // The shortest message ("GET / HTTP/1.1\r\n\r\n", a status line) is 16 bytes or more.
    let mut count = 0;
    loop {
        let got = match response {
            // A lossy UTF-8 body grows by at most 3 bytes for each byte.
            true => conn
                .read_response(limits)
                .map(|r| r.body.map_or(0, |b| b.len() / 3)),
            false => conn.read_request(limits).map(|r| {
                assert!(!r.path.contains('?'), "the query is dropped: {:?}", r.path);
                r.body.len()
            }),
        };
        match got {
            Ok(body) => assert!(body <= limits.body, "body {body} over the limit"),
            Err(HttpError::Timeout(_)) => panic!("a closed stream timed out"),
            Err(_) => return count,
        }
        count += 1;
        assert!(16 * count <= sent, "{count} messages from {sent} bytes");
    }
}

/// Never a panic or a hang; bodies within the limit; no message made of
/// fewer bytes than the shortest one.
#[test]
fn fuzz_http() {
    run("fuzz_http", 2000, |u: &mut Unstructured| {
        let response = u.arbitrary()?;
        let limits = Limits {
            head: usize::from(u.int_in_range(16u16..=2048)?),
            body: usize::from(u.int_in_range(0u16..=512)?),
            message: Duration::from_secs(5),
            idle: Duration::from_secs(5),
        };
        let mut bytes = Vec::new();
        let sent = usize::from(u.int_in_range(1u8..=3)?);
        for _ in 0..sent {
            message(u, response, &mut bytes)?;
        }
        for _ in 0..u.int_in_range(0u8..=3)? {
            let at = u.choose_index(bytes.len().max(1))?;
            if let Some(b) = bytes.get_mut(at) {
                *b = u.arbitrary()?;
            }
        }
        bytes.truncate(bytes.len() - u.choose_index(bytes.len() / 4 + 1)?);
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        ours.write_all(&bytes).unwrap();
        ours.shutdown(std::net::Shutdown::Write).unwrap();
        read_all(&mut Conn::new(theirs), &limits, response, bytes.len());
        Ok(())
    });
}
