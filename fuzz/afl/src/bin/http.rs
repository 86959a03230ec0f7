//! AFL target: the bytes are what a client writes to the API socket; the
//! reader must return requests with bodies within the limit, or an error,
//! and never hang on a closed stream.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vfio_vmm::api::http::{Conn, HttpError, Limits};

fn main() {
    let limits = Limits {
        head: 1024,
        body: 512,
        message: Duration::from_secs(5),
        idle: Duration::from_secs(5),
    };
    afl::fuzz!(|data: &[u8]| {
        // Past 16 KiB (the head limit and then some) a write would fill
        // the socket buffer, which nothing reads yet.
        let data = &data[..data.len().min(16 << 10)];
        let (mut ours, theirs) = UnixStream::pair().expect("socket pair");
        ours.write_all(data)
            .expect("the bytes fit the socket buffer");
        ours.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut conn = Conn::new(theirs);
        for _ in 0..=data.len() / 16 {
            match conn.read_request(&limits) {
                Ok(r) => assert!(r.body.len() <= limits.body),
                Err(HttpError::Timeout(_)) => panic!("a closed stream timed out"),
                Err(_) => break,
            }
        }
    });
}
