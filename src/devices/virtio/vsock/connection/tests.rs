//! Unit tests of one connection: the state machine and credit accounting,
//! with a real socket pair as the host stream.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

use super::*;

/// Guest port in these tests.
const GUEST_PORT: u32 = 1025;
/// Host port in these tests.
const HOST_PORT: u32 = 5000;

/// A header from the guest on this connection.
fn from_guest(op: u16, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: 3,
        dst_cid: HOST_CID,
        src_port: GUEST_PORT,
        dst_port: HOST_PORT,
        type_: TYPE_STREAM,
        op,
        buf_alloc,
        fwd_cnt,
        ..Header::default()
    }
}

/// A guest-initiated connection whose guest has `buf_alloc` bytes of buffer,
/// past its RESPONSE; returns it and the host's end.
fn established(buf_alloc: u32) -> (Connection, UnixStream) {
    let (host, vmm) = UnixStream::pair().unwrap();
    vmm.set_nonblocking(true).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = Connection::accepted(vmm, &from_guest(OP_REQUEST, buf_alloc, 0));
    let hdr = conn.next_rx(&mut [0u8; 64]).unwrap();
    assert_eq!(hdr.op, OP_RESPONSE);
    (conn, host)
}

#[test]
fn response_carries_ports_and_our_credit() {
    let (host, vmm) = UnixStream::pair().unwrap();
    vmm.set_nonblocking(true).unwrap();
    let mut conn = Connection::accepted(vmm, &from_guest(OP_REQUEST, 4096, 0));
    assert!(conn.wants_rx());
    let hdr = conn.next_rx(&mut [0u8; 64]).unwrap();
    let want = Header {
        src_cid: HOST_CID,
        src_port: HOST_PORT,
        dst_port: GUEST_PORT,
        type_: TYPE_STREAM,
        op: OP_RESPONSE,
        buf_alloc: BUF_ALLOC,
        ..Header::default()
    };
    assert_eq!(hdr, want);
    assert_eq!(conn.next_rx(&mut [0u8; 64]), None, "the host sent nothing");
    assert!(
        !conn.wants_rx(),
        "would-block noted: nothing to do until epoll says so"
    );
    drop(host);
}

#[test]
fn host_data_stops_at_the_guest_credit_and_resumes_with_an_update() {
    let (mut conn, mut host) = established(10);
    host.write_all(&[7u8; 100]).unwrap();
    let mut buf = [0u8; 64];
    let hdr = conn.next_rx(&mut buf).unwrap();
    assert_eq!((hdr.op, hdr.len), (OP_RW, 10), "only the credit's worth");
    assert_eq!(&buf[..10], &[7u8; 10]);
    assert_eq!(conn.peer_credit(), 0);
    let hdr = conn.next_rx(&mut buf).unwrap();
    assert_eq!(hdr.op, OP_CREDIT_REQUEST, "out of credit with data waiting");
    assert_eq!(conn.next_rx(&mut buf), None);
    assert!(!conn.wants_rx(), "no credit: the host stream is not read");
    conn.on_guest_packet(&from_guest(OP_CREDIT_UPDATE, 10, 10), &[])
        .unwrap();
    assert!(conn.wants_rx());
    let hdr = conn.next_rx(&mut buf).unwrap();
    assert_eq!((hdr.op, hdr.len), (OP_RW, 10));
}

#[test]
fn credit_arithmetic_wraps() {
    let (mut conn, mut host) = established(100);
    conn.tx_cnt = Wrapping(u32::MAX - 5);
    conn.peer_fwd_cnt = Wrapping(u32::MAX - 5);
    assert_eq!(conn.peer_credit(), 100);
    host.write_all(&[1u8; 30]).unwrap();
    let hdr = conn.next_rx(&mut [0u8; 64]).unwrap();
    assert_eq!(hdr.len, 30);
    assert_eq!(conn.tx_cnt.0, 24, "wrapped");
    assert_eq!(conn.peer_credit(), 70);
    // A guest that shrinks its buffer below what is in flight gives no credit.
    conn.on_guest_packet(&from_guest(OP_CREDIT_UPDATE, 10, u32::MAX - 5), &[])
        .unwrap();
    assert_eq!(conn.peer_credit(), 0);
}

#[test]
fn guest_data_over_credit_is_a_protocol_error() {
    let (mut conn, _host) = established(4096);
    let too_much = vec![0u8; BUF_ALLOC as usize + 1];
    let mut rw = from_guest(OP_RW, 4096, 0);
    rw.len = too_much.len() as u32;
    assert!(matches!(
        conn.on_guest_packet(&rw, &too_much),
        Err(ConnectionError::CreditExceeded { .. })
    ));
}

#[test]
fn back_pressure_buffers_within_credit_and_loses_nothing() {
    let (mut conn, mut host) = established(4096);
    setsockopt(&conn.stream().as_fd(), sockopt::SndBuf, &4096).unwrap();
    let data: Vec<u8> = (0..BUF_ALLOC).map(|i| (i * 7 + i / 251) as u8).collect();
    for chunk in data.chunks(4096) {
        let mut rw = from_guest(OP_RW, 4096, 0);
        rw.len = chunk.len() as u32;
        conn.on_guest_packet(&rw, chunk).unwrap();
    }
    assert!(
        conn.buffered() > 0,
        "the host did not read: bytes wait in the VMM"
    );
    assert_eq!(
        conn.our_credit() as usize,
        BUF_ALLOC as usize - conn.buffered(),
        "credit is what the buffer has room for; the rest sits in the host socket"
    );
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; BUF_ALLOC as usize];
        host.read_exact(&mut got).map(|()| got)
    });
    let start = Instant::now();
    while conn.buffered() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "host never took the data"
        );
        conn.on_host_event(false, true, false);
        std::thread::yield_now();
    }
    assert_eq!(
        reader.join().unwrap().unwrap(),
        data,
        "every byte, in order"
    );
    assert!(conn.wants_rx(), "a credit update is due");
    let hdr = conn.next_rx(&mut []).unwrap();
    assert_eq!((hdr.op, hdr.fwd_cnt), (OP_CREDIT_UPDATE, BUF_ALLOC));
    assert_eq!(conn.our_credit(), BUF_ALLOC);
}

#[test]
fn host_connect_handshake_sends_ok_with_our_port() {
    let (mut host, vmm) = UnixStream::pair().unwrap();
    vmm.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = Connection::requested(vmm, 1 << 30, 52, deadline);
    let hdr = conn.next_rx(&mut [0u8; 8]).unwrap();
    assert_eq!(
        (hdr.op, hdr.src_port, hdr.dst_port),
        (OP_REQUEST, 1 << 30, 52)
    );
    assert!(!conn.wants_rx(), "one REQUEST");
    let mut data = from_guest(OP_RW, 100, 0);
    data.len = 1;
    data.src_port = 52;
    let mut response = data;
    response.op = OP_RESPONSE;
    response.len = 0;
    conn.on_guest_packet(&response, &[]).unwrap();
    assert_eq!(conn.state(), State::Established);
    conn.on_guest_packet(&data, b"x").unwrap();
    let mut got = [0u8; 14];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"OK 1073741824\n");
    let mut last = [0u8; 1];
    host.read_exact(&mut last).unwrap();
    assert_eq!(&last, b"x");
    assert_eq!(conn.fwd_cnt.0, 1, "the OK line is not guest data");
}

#[test]
fn unanswered_or_refused_requests_end() {
    let (host, vmm) = UnixStream::pair().unwrap();
    let now = Instant::now();
    let mut conn = Connection::requested(vmm, 1 << 30, 52, now + Duration::from_secs(2));
    conn.next_rx(&mut []).unwrap();
    conn.check_deadline(now + Duration::from_secs(1));
    assert!(matches!(conn.state(), State::Connecting { .. }));
    conn.check_deadline(now + Duration::from_secs(2));
    assert_eq!(conn.next_rx(&mut []).unwrap().op, OP_RST);
    assert_eq!(conn.state(), State::Closed);

    let (_host2, vmm) = UnixStream::pair().unwrap();
    let mut conn = Connection::requested(vmm, 1 << 30, 52, now + Duration::from_secs(2));
    let mut rst = from_guest(OP_RST, 0, 0);
    rst.src_port = 52;
    conn.on_guest_packet(&rst, &[]).unwrap();
    assert_eq!(conn.state(), State::Closed, "refused: no RST back");
    let mut rw = rst;
    rw.op = OP_RW;
    let (_host3, vmm) = UnixStream::pair().unwrap();
    let mut conn = Connection::requested(vmm, 1 << 30, 52, now + Duration::from_secs(2));
    assert!(
        conn.on_guest_packet(&rw, &[]).is_err(),
        "data before RESPONSE"
    );
    drop(host);
}

#[test]
fn host_half_close_is_a_shutdown_and_full_close_a_reset_after_the_data() {
    let (mut conn, mut host) = established(4096);
    host.write_all(b"last").unwrap();
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(conn.next_rx(&mut buf).unwrap().len, 4);
    let hdr = conn.next_rx(&mut buf).unwrap();
    assert_eq!((hdr.op, hdr.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    // The guest may still send.
    let mut rw = from_guest(OP_RW, 4096, 4);
    rw.len = 2;
    conn.on_guest_packet(&rw, b"hi").unwrap();
    let mut got = [0u8; 2];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");

    // The host closes for good later: nothing more can come, reset.
    drop(host);
    conn.on_host_event(true, false, true);
    assert_eq!(conn.next_rx(&mut buf).unwrap().op, OP_RST);

    let (mut conn, mut host) = established(4096);
    host.write_all(b"bye").unwrap();
    drop(host);
    assert_eq!(conn.next_rx(&mut buf).unwrap().len, 3, "data first");
    assert_eq!(conn.next_rx(&mut buf).unwrap().op, OP_RST);
    assert_eq!(conn.state(), State::Closed);
}

#[test]
fn guest_shutdown_and_reset() {
    let (mut conn, mut host) = established(4096);
    let mut shut = from_guest(OP_SHUTDOWN, 4096, 0);
    shut.flags = SHUTDOWN_SEND;
    conn.on_guest_packet(&shut, &[]).unwrap();
    let mut end = [0u8; 1];
    assert_eq!(host.read(&mut end).unwrap(), 0, "host sees end of file");
    host.write_all(b"reply").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        conn.next_rx(&mut buf).unwrap().len,
        5,
        "the other way still works"
    );
    shut.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    conn.on_guest_packet(&shut, &[]).unwrap();
    assert_eq!(
        conn.next_rx(&mut buf).unwrap().op,
        OP_RST,
        "Linux waits for it"
    );
    assert_eq!(conn.state(), State::Closed);

    let (mut conn, mut host) = established(4096);
    conn.on_guest_packet(&from_guest(OP_RST, 0, 0), &[])
        .unwrap();
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.next_rx(&mut buf), None, "no answer to an RST");
    drop(conn);
    assert_eq!(host.read(&mut end).unwrap(), 0);
}

#[test]
fn credit_request_is_answered_and_unexpected_ops_are_errors() {
    let (mut conn, _host) = established(4096);
    conn.on_guest_packet(&from_guest(OP_CREDIT_REQUEST, 4096, 0), &[])
        .unwrap();
    let hdr = conn.next_rx(&mut []).unwrap();
    assert_eq!((hdr.op, hdr.buf_alloc), (OP_CREDIT_UPDATE, BUF_ALLOC));
    for op in [OP_REQUEST, OP_RESPONSE, 0, 8, 0xffff] {
        assert!(
            conn.on_guest_packet(&from_guest(op, 4096, 0), &[]).is_err(),
            "op {op}"
        );
    }
}
