//! End-to-end tests of virtio-vsock: a fake guest ([`driver::Driver`]) on
//! one side, host programs on real UNIX sockets in a temporary directory on
//! the other, in threads with read timeouts so that a failure ends the test.

mod driver;
mod guest_input;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use pci::PciDevice;

use driver::{Driver, GUEST_BUF_ALLOC, PATIENCE};

use super::connection::*;
use super::unix::tempdir;
use crate::devices::virtio::pci_transport::DEVICE_OFFSET;
use crate::devices::virtio::tests::read;
use crate::devices::virtio::STATUS_NEEDS_RESET;

/// Deterministic bytes for stream `seed`.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a of `data`: the checksum the tests compare.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A directory and the device socket path in it.
fn socket_path() -> (PathBuf, PathBuf) {
    let dir = tempdir();
    let path = dir.join("vsock.sock");
    (dir, path)
}

/// A host program's stream with a read timeout.
fn with_timeout(stream: UnixStream) -> UnixStream {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads one line (up to the newline) from `stream`, byte by byte.
fn read_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The host's side of the hybrid handshake: CONNECT to guest `port`;
/// returns the stream and the `OK` line.
fn host_connect(path: &Path, port: u32) -> std::io::Result<(UnixStream, String)> {
    let mut stream = with_timeout(UnixStream::connect(path)?);
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let line = read_line(&mut stream)?;
    Ok((stream, line))
}

/// Sends `out` and reads `expect_len` bytes at once (a writer thread);
/// returns the checksum of what was read.
fn exchange(stream: UnixStream, out: Vec<u8>, expect_len: usize) -> std::io::Result<u64> {
    let mut writer = stream.try_clone()?;
    let w = std::thread::spawn(move || writer.write_all(&out));
    let mut got = vec![0u8; expect_len];
    (&stream).read_exact(&mut got)?;
    w.join().expect("writer thread")?;
    Ok(checksum(&got))
}

#[test]
fn config_space_holds_the_cid_and_identity_is_vsock() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(0x1_2345_6789 & 0xffff_ffff, &path);
    assert_eq!(d.dev.config().read_u16(2), 0x1040 + 19);
    assert_eq!(read(&mut d.dev, DEVICE_OFFSET, 8), 0x2345_6789);
    assert_eq!(read(&mut d.dev, DEVICE_OFFSET + 4, 4), 0);
    assert!(path.exists(), "the device listens on the socket path");
    drop(d);
    assert!(!path.exists(), "dropping the device removes the socket");
    assert!(matches!(
        super::Vsock::new(2, &path),
        Err(super::VsockError::BadCid(2))
    ));
    assert!(super::Vsock::new(u64::from(u32::MAX), &path).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn host_connect_gets_ok_with_its_port_and_data_flows_both_ways() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    d.listening.insert(1234, b"hello host".to_vec());
    let p = path.clone();
    let host = std::thread::spawn(move || {
        let (mut stream, ok) = host_connect(&p, 1234)?;
        stream.write_all(b"hello guest")?;
        let mut got = [0u8; 10];
        stream.read_exact(&mut got)?;
        Ok::<_, std::io::Error>((ok, got))
    });
    d.run_until("the guest to get the host's bytes", |d| {
        d.conns.values().any(|c| c.received == b"hello guest")
    });
    let (ok, got) = host.join().unwrap().expect("host side");
    assert_eq!(&got, b"hello host");
    let request = d.log.iter().find(|h| h.op == OP_REQUEST).unwrap();
    assert_eq!(request.dst_port, 1234);
    assert!(request.src_port >= 1 << 30, "a port of ours: {request:?}");
    assert_eq!(ok, format!("OK {}\n", request.src_port));
    assert_eq!(request.buf_alloc, BUF_ALLOC);
    assert!(d.fired.msi.lock().unwrap().contains(&1), "receive vector");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn host_connect_to_a_closed_guest_port_ends_without_ok() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let p = path.clone();
    let host = std::thread::spawn(move || host_connect(&p, 999).map(|(_, ok)| ok));
    d.run_until("the RST for the REQUEST", |d| {
        d.log.iter().any(|h| h.op == OP_REQUEST)
    });
    let err = host.join().unwrap().expect_err("no OK line");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    // Garbage instead of CONNECT: closed as well.
    let mut s = with_timeout(UnixStream::connect(&path).unwrap());
    s.write_all(b"HELLO 5\n").unwrap();
    assert!(read_line(&mut s).is_err(), "garbage first line: closed");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn guest_connect_reaches_path_p_and_data_flows_both_ways() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let listener = UnixListener::bind(dir.join("vsock.sock_5000")).unwrap();
    let host = std::thread::spawn(move || {
        let (stream, _) = listener.accept()?;
        let mut stream = with_timeout(stream);
        let mut got = [0u8; 4];
        stream.read_exact(&mut got)?;
        stream.write_all(b"pong")?;
        Ok::<_, std::io::Error>(got)
    });
    let key = d.connect(5000, b"ping".to_vec());
    d.run_until("the host's answer", |d| d.conns[&key].received == b"pong");
    assert_eq!(&host.join().unwrap().unwrap(), b"ping");
    assert!(d.conns[&key].established);
    let refused = d.connect(5001, Vec::new());
    d.run_until("the RST for a port nobody listens on", |d| {
        d.refused.contains(&refused)
    });
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Host-initiated connections: the host sends `len` bytes of stream
/// `1000 + i` and expects the guest's `len` bytes of stream `i`.
fn host_initiated(path: &Path, d: &mut Driver, i: u32, len: usize) -> JoinHandle<u64> {
    d.listening.insert(1000 + i, pattern(i, len));
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let (stream, ok) = host_connect(&p, 1000 + i).expect("CONNECT");
        assert!(ok.starts_with("OK "), "{ok:?}");
        exchange(stream, pattern(1000 + i, len), len).expect("exchange")
    })
}

#[test]
fn many_connections_each_way_carry_their_bytes_intact() {
    const N: u32 = 8;
    const LEN: usize = 2 << 20;
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let listener = UnixListener::bind(dir.join("vsock.sock_2000")).unwrap();
    // Guest-initiated: the guest's stream starts with its index.
    let host_side = std::thread::spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..N {
            let (stream, _) = listener.accept().expect("accept");
            workers.push(std::thread::spawn(move || {
                let mut stream = with_timeout(stream);
                let mut id = [0u8; 4];
                stream.read_exact(&mut id).expect("id");
                let id = u32::from_le_bytes(id);
                let sum = exchange(stream, pattern(3000 + id, LEN), LEN - 4).expect("exchange");
                (id, sum)
            }));
        }
        let mut sums: Vec<(u32, u64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        sums.sort();
        sums
    });
    let mut guest_keys = Vec::new();
    for i in 0..N {
        let mut data = i.to_le_bytes().to_vec();
        data.extend(pattern(2000 + i, LEN - 4));
        guest_keys.push((i, d.connect(2000, data)));
    }
    let hosts: Vec<_> = (0..N)
        .map(|i| host_initiated(&path, &mut d, i, LEN))
        .collect();
    d.run_until("every connection's bytes", |d| {
        d.conns.len() == 2 * N as usize && d.conns.values().all(|c| c.received.len() >= LEN)
    });
    for (i, host) in hosts.into_iter().enumerate() {
        let i = i as u32;
        assert_eq!(
            host.join().unwrap(),
            checksum(&pattern(i, LEN)),
            "host {i} got the guest's"
        );
        let conn = d.conns.iter().find(|(k, _)| k.0 == 1000 + i).unwrap().1;
        assert_eq!(checksum(&conn.received), checksum(&pattern(1000 + i, LEN)));
    }
    let sums = host_side.join().unwrap();
    for (i, key) in guest_keys {
        assert_eq!(sums[i as usize], (i, checksum(&pattern(2000 + i, LEN - 4))));
        assert_eq!(
            checksum(&d.conns[&key].received),
            checksum(&pattern(3000 + i, LEN))
        );
    }
    assert!(
        d.conns.values().all(|c| c.over_credit == 0),
        "the device kept to our credit"
    );
    assert_eq!(d.dev.status() & STATUS_NEEDS_RESET, 0);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn back_pressure_from_the_guest_loses_nothing() {
    const LEN: usize = 1 << 20;
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    d.listening.insert(7, Vec::new());
    let p = path.clone();
    let host = std::thread::spawn(move || {
        let (mut stream, _) = host_connect(&p, 7).expect("CONNECT");
        stream.write_all(&pattern(7, LEN))
    });
    d.run_until("the connection", |d| !d.conns.is_empty());
    let key = *d.conns.keys().next().unwrap();
    d.conns.get_mut(&key).unwrap().paused = true;
    d.run_until(
        "the device to run out of our credit and ask for more",
        |d| {
            let c = &d.conns[&key];
            c.unread() == GUEST_BUF_ALLOC && c.credit_requests > 0
        },
    );
    assert!(
        !host.is_finished(),
        "the host's writes block: the VMM stopped reading"
    );
    d.conns.get_mut(&key).unwrap().paused = false;
    d.run_until("all the bytes", |d| d.conns[&key].received.len() == LEN);
    host.join().unwrap().expect("host writes");
    assert_eq!(
        checksum(&d.conns[&key].received),
        checksum(&pattern(7, LEN))
    );
    assert_eq!(d.conns[&key].over_credit, 0);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn back_pressure_from_the_host_loses_nothing() {
    const LEN: usize = 1 << 20;
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let listener = UnixListener::bind(dir.join("vsock.sock_8")).unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let host = std::thread::spawn(move || {
        let (stream, _) = listener.accept()?;
        let mut stream = with_timeout(stream);
        wait.recv_timeout(PATIENCE).expect("the test's go");
        let mut got = vec![0u8; LEN];
        stream.read_exact(&mut got)?;
        Ok::<_, std::io::Error>(checksum(&got))
    });
    let key = d.connect(8, pattern(8, LEN));
    d.run_until("the guest to run out of the device's credit", |d| {
        let c = &d.conns[&key];
        c.sent >= BUF_ALLOC as usize && c.peer_credit() == 0
    });
    assert!(
        d.conns[&key].sent < LEN,
        "the device does not take everything"
    );
    go.send(()).unwrap();
    d.run_until("everything sent", |d| d.conns[&key].sent == LEN);
    assert_eq!(host.join().unwrap().unwrap(), checksum(&pattern(8, LEN)));
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn host_close_resets_after_its_last_bytes() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    d.listening.insert(9, Vec::new());
    let (mut stream, _) = {
        let p = path.clone();
        let host = std::thread::spawn(move || host_connect(&p, 9).expect("CONNECT"));
        d.run_until("the connection", |d| !d.conns.is_empty());
        host.join().unwrap()
    };
    let key = *d.conns.keys().next().unwrap();
    stream.write_all(b"last words").unwrap();
    drop(stream);
    d.run_until("the RST", |d| d.conns[&key].rst);
    assert_eq!(d.conns[&key].received, b"last words", "data before the RST");
    assert!(d.log.last().unwrap().op == OP_RST);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn host_half_close_is_a_shutdown_and_the_guest_still_answers() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    d.listening.insert(10, b"answer".to_vec());
    let p = path.clone();
    let host = std::thread::spawn(move || {
        let (mut stream, _) = host_connect(&p, 10)?;
        stream.write_all(b"question")?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got)?;
        Ok::<_, std::io::Error>(got)
    });
    d.run_until("SHUTDOWN(SEND)", |d| {
        d.conns.values().any(|c| c.shutdown == SHUTDOWN_SEND)
    });
    let key = *d.conns.keys().next().unwrap();
    assert_eq!(d.conns[&key].received, b"question");
    d.conns.get_mut(&key).unwrap().close_after_send = true;
    d.run_until("the RST that answers the guest's close", |d| {
        d.conns[&key].rst
    });
    assert_eq!(host.join().unwrap().unwrap(), b"answer", "then end of file");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn guest_close_and_guest_reset_end_the_host_stream() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let listener = UnixListener::bind(dir.join("vsock.sock_11")).unwrap();
    let host = std::thread::spawn(move || {
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept()?;
            let mut got = Vec::new();
            with_timeout(stream).read_to_end(&mut got)?;
            ends.push(got);
        }
        Ok::<_, std::io::Error>(ends)
    });
    let closing = d.connect(11, pattern(11, 100_000));
    d.conns.get_mut(&closing).unwrap().close_after_send = true;
    d.run_until("the RST that answers the guest's close", |d| {
        d.conns[&closing].rst
    });
    let resetting = d.connect(11, Vec::new());
    d.run_until("the second connection", |d| d.conns[&resetting].established);
    let rst = d.header(resetting, OP_RST);
    d.send(rst, &[]);
    let ends = host.join().unwrap().unwrap();
    assert_eq!(
        checksum(&ends[0]),
        checksum(&pattern(11, 100_000)),
        "all of it, then EOF"
    );
    assert!(ends[1].is_empty(), "RST: end of file");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn device_reset_closes_every_host_stream_and_the_device_comes_back() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let listener = UnixListener::bind(dir.join("vsock.sock_12")).unwrap();
    let key = d.connect(12, Vec::new());
    d.run_until("the connection", |d| d.conns[&key].established);
    let (stream, _) = listener.accept().unwrap();
    crate::devices::virtio::tests::write(&mut d.dev, 0x14, 0, 1);
    let mut rest = Vec::new();
    with_timeout(stream).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "end of file once the worker stopped");
    assert!(path.exists(), "the listener outlives a reset");
    d.start();
    let key = d.connect(12, b"again".to_vec());
    d.run_until("a connection after the driver started again", |d| {
        d.conns[&key].established
    });
    let (stream, _) = listener.accept().unwrap();
    let mut got = [0u8; 5];
    with_timeout(stream).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"again");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn silent_hosts_and_unanswered_requests_time_out() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    d.ignore_requests = true;
    let p = path.clone();
    let unanswered = std::thread::spawn(move || host_connect(&p, 40).map(|(_, ok)| ok));
    let mut silent = with_timeout(UnixStream::connect(&path).unwrap());
    d.run_until("the REQUEST", |d| d.log.iter().any(|h| h.op == OP_REQUEST));
    let request = *d.log.iter().find(|h| h.op == OP_REQUEST).unwrap();
    let start = std::time::Instant::now();
    d.run_until("the RST once the guest did not answer", |d| {
        d.log
            .iter()
            .any(|h| h.op == OP_RST && h.src_port == request.src_port)
    });
    let waited = start.elapsed();
    assert!(waited >= super::unix::CONNECT_TIMEOUT / 2, "{waited:?}");
    let err = unanswered.join().unwrap().expect_err("no OK line");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("closed, not timed out");
    assert!(rest.is_empty(), "a host that says nothing is closed too");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}
