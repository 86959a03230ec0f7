//! Guest-controlled input: malformed chains and headers, packets for
//! unknown connections, protocol violations, a guest that gives no credit.
//! None panics, hangs or spins the device, and it keeps serving afterwards.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::driver::{encode, Driver, RAW_DATA, RAW_HDR};
use super::*;

/// Sends an RW to a port nobody uses and runs until its RST comes back:
/// every packet sent before it has been handled by then.
fn probe(d: &mut Driver, port: u32) {
    let mut hdr = d.header((60_000, port), OP_RW);
    d.conns.remove(&(60_000, port));
    hdr.len = 0;
    let before = d.log.len();
    d.send(hdr, &[]);
    d.run_until("the probe's RST", |d| {
        d.log[before..]
            .iter()
            .any(|h| h.op == OP_RST && h.src_port == port)
    });
}

/// The packets the device sent since `from`, other than the probe's RST.
fn replies_since(d: &Driver, from: usize, probe_port: u32) -> Vec<Header> {
    d.log[from..]
        .iter()
        .filter(|h| h.src_port != probe_port)
        .copied()
        .collect()
}

/// A malformed transmit chain: what it is, its (address, length) buffers,
/// its header, and whether the header is readable (then RST answers it).
type Case = (&'static str, &'static [(u64, u32)], Header, bool);

#[test]
fn malformed_chains_are_refused_without_harm() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let good = d.header((1, 2), OP_REQUEST);
    d.conns.clear();
    let mut long = good;
    long.len = 100;
    let mut huge = good;
    huge.len = 128 * 1024;
    let cases: [Case; 6] = [
        (
            "header descriptor of 20 bytes",
            &[(RAW_HDR, 20)],
            good,
            false,
        ),
        (
            "payload past its buffer",
            &[(RAW_HDR, 44), (RAW_DATA, 10)],
            long,
            true,
        ),
        (
            "payload over 64 KiB",
            &[(RAW_HDR, 44), (RAW_DATA, 0x2_0000)],
            huge,
            true,
        ),
        (
            "payload outside RAM",
            &[(RAW_HDR, 44), (0xffff_ffff_0000, 100)],
            long,
            true,
        ),
        ("header outside RAM", &[(0x7fff_0000_0000, 44)], good, false),
        (
            "header across the end of RAM",
            &[((4 << 20) - 20, 44)],
            good,
            false,
        ),
    ];
    for (what, chain, hdr, readable) in cases {
        let from = d.log.len();
        d.mem
            .write_slice(&encode(&hdr), GuestAddress(RAW_HDR))
            .unwrap();
        d.send_chain(chain);
        probe(&mut d, 777);
        let replies = replies_since(&d, from, 777);
        if readable {
            assert_eq!(replies.len(), 1, "{what}: {replies:?}");
            assert_eq!((replies[0].op, replies[0].dst_port), (OP_RST, 1), "{what}");
        } else {
            assert_eq!(replies, vec![], "{what}: no answer");
        }
    }
    // A receive buffer too small for a header is returned empty.
    d.short_rx = true;
    probe(&mut d, 778);
    assert!(!d.short_rx, "the short buffer was posted");
    // It comes round after the ring's other buffers.
    for _ in 0..64 {
        probe(&mut d, 778);
    }
    let empty = d.rx_used_lens.iter().filter(|len| **len == 0).count();
    assert_eq!(empty, 1, "the short buffer came back used and empty");
    assert_eq!(d.dev.status() & STATUS_NEEDS_RESET, 0, "still working");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn packets_nobody_takes_are_answered_with_rst_or_dropped() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let _listener = UnixListener::bind(dir.join("vsock.sock_20")).unwrap();
    let send = |d: &mut Driver, edit: fn(&mut Header), op: u16| {
        let mut hdr = d.header((100, 20), op);
        d.conns.clear();
        edit(&mut hdr);
        let from = d.log.len();
        d.send(hdr, &[]);
        probe(d, 779);
        replies_since(d, from, 779)
    };
    let rst = send(&mut d, |_| {}, OP_CREDIT_UPDATE);
    assert_eq!(rst.len(), 1, "unknown connection");
    assert_eq!(
        (rst[0].op, rst[0].src_port, rst[0].dst_port),
        (OP_RST, 20, 100)
    );
    assert_eq!(
        send(&mut d, |_| {}, OP_RST).len(),
        0,
        "an RST gets no answer"
    );
    let seqpacket = send(&mut d, |h| h.type_ = 2, OP_REQUEST);
    assert_eq!((seqpacket[0].op, seqpacket[0].type_), (OP_RST, 2));
    let elsewhere = send(&mut d, |h| h.dst_cid = 5, OP_REQUEST);
    assert_eq!(elsewhere[0].op, OP_RST, "only the host is reachable");
    assert_eq!(
        send(&mut d, |h| h.src_cid = 9, OP_REQUEST).len(),
        0,
        "spoofed CID"
    );
    let unknown_op = send(&mut d, |_| {}, 99);
    assert_eq!(unknown_op[0].op, OP_RST);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn protocol_violations_reset_the_connection() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(3, &path);
    let listener = UnixListener::bind(dir.join("vsock.sock_21")).unwrap();
    for (what, op) in [("unknown op", 99u16), ("second REQUEST", OP_REQUEST)] {
        let key = d.connect(21, Vec::new());
        d.run_until("the connection", |d| d.conns[&key].established);
        let (stream, _) = listener.accept().unwrap();
        let hdr = d.header(key, op);
        d.send(hdr, &[]);
        d.run_until("the RST", |d| d.conns[&key].rst);
        let mut rest = Vec::new();
        with_timeout(stream).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{what}: host stream closed");
    }
    // A packet the parser refuses on a live connection resets it.
    let key = d.connect(21, Vec::new());
    d.run_until("the connection", |d| d.conns[&key].established);
    let (stream, _) = listener.accept().unwrap();
    let mut hdr = d.header(key, OP_RW);
    hdr.len = 100;
    d.mem
        .write_slice(&encode(&hdr), GuestAddress(RAW_HDR))
        .unwrap();
    d.send_chain(&[(RAW_HDR, 44), (RAW_DATA, 10)]);
    d.run_until("the RST for a payload past its buffer", |d| {
        d.conns[&key].rst
    });
    let mut rest = Vec::new();
    with_timeout(stream).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no bytes of the bad packet reach the host");
    // Data past the credit: the host does not read, the guest ignores credit.
    let key = d.connect(21, Vec::new());
    d.run_until("the connection", |d| d.conns[&key].established);
    let (_stream, _) = listener.accept().unwrap();
    let chunk = vec![0x5a; driver::TX_CHUNK];
    let mut sent = 0;
    while !d.conns[&key].rst {
        assert!(
            sent < 4 << 20,
            "the device took 4 MiB past a 256 KiB credit"
        );
        let hdr = d.header(key, OP_RW);
        d.send(hdr, &chunk);
        sent += chunk.len();
        d.poll();
    }
    assert_eq!(d.dev.status() & STATUS_NEEDS_RESET, 0);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

/// CPU time (user + system, in clock ticks) of this process's thread `name`.
fn thread_ticks(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    panic!("no thread called {name}");
}

#[test]
fn a_guest_that_gives_no_credit_does_not_make_the_device_spin() {
    let (dir, path) = socket_path();
    let mut d = Driver::new(77, &path);
    d.listening.insert(30, Vec::new());
    let p = path.clone();
    let host = std::thread::spawn(move || {
        let (mut stream, _) = host_connect(&p, 30).expect("CONNECT");
        // Blocks once the VMM stops reading; ends when the device goes.
        let _ = stream.write_all(&vec![1u8; 4 << 20]);
    });
    d.run_until("the connection", |d| !d.conns.is_empty());
    let key = *d.conns.keys().next().unwrap();
    d.conns.get_mut(&key).unwrap().paused = true;
    d.run_until("the credit to run out", |d| {
        d.conns[&key].unread() == GUEST_BUF_ALLOC && d.conns[&key].credit_requests > 0
    });
    let before = thread_ticks("virtio-vsock-77");
    // A measuring window, not a synchronisation: the device must sit idle.
    std::thread::sleep(Duration::from_millis(500));
    let used = thread_ticks("virtio-vsock-77") - before;
    assert!(
        used <= 5,
        "the worker used {used} ticks in 500 ms while stalled"
    );
    assert!(!host.is_finished(), "the host is blocked, not dropped");
    assert_eq!(
        d.conns[&key].unread(),
        GUEST_BUF_ALLOC,
        "nothing past the credit"
    );
    drop(d);
    host.join().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
