//! Fuzz target of the vsock device's packet handling: random guest packets
//! (operations, CIDs, ports, lengths, flags, credit fields, payloads, some
//! marked malformed) fed to the [`Muxer`], with a host service listening on
//! one port that accepts and writes back, the epoll events dispatched as the
//! worker does, and the receive side drained. A seeded structured random
//! test (see `pci/src/tests/fuzz_support.rs`).

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use vmm_sys_util::epoll::EpollEvent;

use super::connection::{Header, HOST_CID, OP_CREDIT_REQUEST, TYPE_STREAM};
use super::muxer::Muxer;
use super::unix::port_path;
use crate::fuzz_support::run;

const GUEST_CID: u64 = 3;
/// The port of the host service.
const SERVICE: u32 = 1024;

/// A header a guest might send: mostly well-addressed, anything otherwise.
fn header(u: &mut Unstructured) -> arbitrary::Result<Header> {
    let mut h = Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: u.int_in_range(5000..=5003)?,
        dst_port: *u.choose(&[SERVICE, SERVICE, 1, u32::MAX])?,
        len: 0,
        type_: TYPE_STREAM,
        op: u.int_in_range(1..=OP_CREDIT_REQUEST + 1)?,
        flags: u.int_in_range(0..=4)?,
        buf_alloc: *u.choose(&[0, 1, 4096, 256 * 1024, u32::MAX])?,
        fwd_cnt: *u.choose(&[0, 1, 4096, u32::MAX])?,
    };
    if u.ratio(1u8, 8)? {
        h = Header {
            src_cid: *u.choose(&[GUEST_CID, HOST_CID, u64::MAX])?,
            type_: u.arbitrary()?,
            dst_cid: u.arbitrary()?,
            op: u.arbitrary()?,
            flags: u.arbitrary()?,
            fwd_cnt: u.arbitrary()?,
            ..h
        };
    }
    Ok(h)
}

/// Dispatches the muxer's ready events, accepts host-side connections and
/// writes to them, and drains what the muxer has for the guest.
fn pump(m: &mut Muxer, service: &UnixListener, hosts: &mut Vec<UnixStream>, u: &mut Unstructured) {
    while let Ok((stream, _)) = service.accept() {
        hosts.push(stream);
    }
    for h in hosts.iter_mut() {
        let _ = h.write(&[0x61; 300][..usize::from(u.arbitrary::<u8>().unwrap_or(0))]);
    }
    let mut events = [EpollEvent::default(); 16];
    if let Ok(n) = m.epoll().wait(0, &mut events) {
        for e in &events[..n] {
            m.handle_event(e.data(), e.event_set());
        }
    }
    let mut buf = vec![0u8; 4096];
    for drained in 0.. {
        let Some(h) = m.next_rx(&mut buf) else { break };
        assert!(drained < 10_000, "the receive side never runs dry");
        assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST_CID), "{h:?}");
        assert!(
            h.len as usize <= buf.len(),
            "payload past the buffer: {h:?}"
        );
    }
}

/// Never a panic or an endless receive side; every packet for the guest is
/// addressed from the host to the guest and fits its buffer.
#[test]
fn fuzz_vsock_packets() {
    let dir = std::env::temp_dir().join(format!("vfio-vmm-fuzz-vsock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v.sock");
    run("fuzz_vsock_packets", 2000, |u: &mut Unstructured| {
        let (mut m, service) = muxer(&path);
        let mut hosts = Vec::new();
        for _ in 0..u.int_in_range(1u8..=24)? {
            let hdr = header(u)?;
            let data = vec![0x62u8; usize::from(u.int_in_range(0u16..=5000)?)];
            let hdr = Header {
                len: u.choose(&[data.len() as u32, 0, u32::MAX])?.to_owned(),
                ..hdr
            };
            match u.ratio(1u8, 10)? {
                true => m.on_malformed_packet(&hdr, "fuzz".into()),
                false => m.on_guest_packet(&hdr, &data),
            }
            pump(&mut m, &service, &mut hosts, u);
        }
        m.on_timer(Instant::now() + Duration::from_secs(3600));
        pump(&mut m, &service, &mut hosts, u);
        assert!(hosts.len() <= 4 * 24, "connections");
        Ok(())
    });
    std::fs::remove_dir_all(dir).unwrap();
}

/// A fresh muxer at `path` and the host service's listener.
fn muxer(path: &Path) -> (Muxer, UnixListener) {
    let service_path = port_path(path, SERVICE);
    for p in [path, Path::new(&service_path)] {
        let _ = std::fs::remove_file(p);
    }
    let listener = UnixListener::bind(path).unwrap();
    let service = UnixListener::bind(&service_path).unwrap();
    service.set_nonblocking(true).unwrap();
    let m = Muxer::new(GUEST_CID, path.to_path_buf(), listener).unwrap();
    (m, service)
}
