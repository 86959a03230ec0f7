//! virtio-net end to end on a real tap: a fake driver builds split rings in
//! guest RAM and drives the PCI transport; frames are checked on the host
//! side with an AF_PACKET socket bound to the tap. They need root and
//! /dev/net/tun, so a plain `cargo test` lists them as ignored;
//! `scripts/test.sh` runs them, and each fails saying why where the host does
//! not let it create a tap.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::net::if_::if_nametoindex;
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrLike,
};
use pci::PciAddress;
use vm_memory::{Bytes, GuestAddress};

use super::net::Net;
use super::pci_transport::{VirtioPciDevice, DEVICE_OFFSET, NOTIFY_OFFSET};
use super::tap::Tap;
use super::tests::{
    enable_msix, memory, negotiate, place_bar, read, setup_queue, write, FakeIoEvents, FakeManager,
    Fired,
};
use super::{F_EVENT_IDX, F_VERSION_1, STATUS_NEEDS_RESET};
use crate::config::MacAddress;
use crate::memory::GuestMemory;

/// Our experimental EtherType, so that stray IPv6 chatter is easy to skip.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// The guest's MAC in these tests.
const MAC: MacAddress = MacAddress([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
/// Ring size the fake driver uses.
const RING: u16 = 16;

/// Why the tap tests are ignored by a plain `cargo test`.
const NEEDS_TAP: &str = "needs root and /dev/net/tun for a tap (scripts/test.sh runs it)";

/// Opens a fresh tap for test `tag`; fails the test, saying why, if it cannot.
fn open_tap(tag: &str) -> Tap {
    let name = format!("vvt{}{tag}", std::process::id() % 100_000);
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    Tap::open(&name)
        .unwrap_or_else(|e| panic!("cannot create tap {name}: {e}; this test {NEEDS_TAP}"))
}

/// A split ring the fake driver fills.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next: u16,
    idx: u16,
}

impl Ring {
    fn new(base: u64) -> Self {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next: 0,
            idx: 0,
        }
    }

    /// Adds a chain of (address, length, device-writable) buffers.
    fn push(&mut self, mem: &GuestMemory, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next;
        for (i, (addr, len, writable)) in bufs.iter().enumerate() {
            let at = self.desc + 16 * u64::from(self.next);
            self.next = (self.next + 1) % RING;
            let flags = u16::from(i + 1 < bufs.len()) | if *writable { 2 } else { 0 };
            mem.write_obj(*addr, GuestAddress(at)).unwrap();
            mem.write_obj(*len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(self.next, GuestAddress(at + 14)).unwrap();
        }
        self.publish(mem, head);
        head
    }

    /// Puts `head` in the available ring and bumps its index.
    fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.idx % RING);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.idx = self.idx.wrapping_add(1);
        mem.write_obj(self.idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// The used ring entries so far: (head, length).
    fn used(&self, mem: &GuestMemory) -> Vec<(u32, u32)> {
        let n: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        (0..u64::from(n))
            .map(|i| {
                let at = self.used + 4 + 8 * (i % u64::from(RING));
                (
                    mem.read_obj(GuestAddress(at)).unwrap(),
                    mem.read_obj(GuestAddress(at + 4)).unwrap(),
                )
            })
            .collect()
    }
}

/// An active virtio-net on `tap`: MSI-X on (config 0, rx 1, tx 2).
struct Guest {
    dev: VirtioPciDevice,
    mem: GuestMemory,
    fired: Arc<Fired>,
    rx: Ring,
    tx: Ring,
}

/// Features the fake driver accepts by default: MAC, STATUS, CSUM.
const FEATURES: u64 = F_VERSION_1 | 1 << 5 | 1 << 16 | 1;

fn guest(tap: Tap, features: u64) -> Guest {
    let mem = memory();
    let fired = Arc::new(Fired::default());
    let mut dev = VirtioPciDevice::new(
        Box::new(Net::with_tap(tap, MAC)),
        PciAddress::new(0, 4, 0).unwrap(),
        mem.clone(),
        &FakeManager(fired.clone()),
        Arc::new(FakeIoEvents::default()),
    )
    .unwrap();
    place_bar(&mut dev);
    enable_msix(&mut dev, 3);
    write(&mut dev, 0x10, 0, 2);
    assert_ne!(negotiate(&mut dev, features) & 8, 0);
    let (rx, tx) = (Ring::new(0x10000), Ring::new(0x20000));
    for (q, ring) in [(0u16, &rx), (1, &tx)] {
        setup_queue(&mut dev, q, RING, ring.desc, ring.avail, ring.used);
        write(&mut dev, 0x1a, u64::from(q) + 1, 2);
    }
    write(&mut dev, 0x14, 0x0f, 1);
    assert_eq!(read(&mut dev, 0x14, 1), 0x0f);
    Guest {
        dev,
        mem,
        fired,
        rx,
        tx,
    }
}

/// Waits up to 5 s for `done`.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A raw packet socket on interface `name`.
struct PacketSocket(OwnedFd);

impl PacketSocket {
    /// Opens and binds the socket; fails the test, saying why, if it cannot.
    fn open(name: &str) -> Self {
        Self::try_open(name)
            .unwrap_or_else(|e| panic!("no AF_PACKET socket on {name}: {e}; this test {NEEDS_TAP}"))
    }

    fn try_open(name: &str) -> nix::Result<Self> {
        let sock = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK,
            SockProtocol::EthAll,
        )?;
        let addr = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: if_nametoindex(name)? as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `addr` is a whole, initialised sockaddr_ll of `len` bytes.
        let addr =
            unsafe { LinkAddr::from_raw((&addr as *const libc::sockaddr_ll).cast(), Some(len)) }
                .expect("an AF_PACKET address of the right length");
        bind(sock.as_raw_fd(), &addr)?;
        Ok(PacketSocket(sock))
    }

    fn send(&self, frame: &[u8]) -> nix::Result<()> {
        send(self.0.as_raw_fd(), frame, MsgFlags::empty()).map(drop)
    }

    /// Receives frames until one carries `payload` (5 s at most).
    fn wait_payload(&self, payload: &[u8]) -> bool {
        let mut buf = [0u8; 2048];
        wait_for(|| {
            let fd = self.0.as_raw_fd();
            recv(fd, &mut buf, MsgFlags::empty())
                .is_ok_and(|n| n > 0 && buf[..n].windows(payload.len()).any(|w| w == payload))
        })
    }
}

/// An Ethernet frame from `src` to broadcast carrying `payload`.
fn frame(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

#[test]
#[ignore = "needs root and /dev/net/tun for a tap (scripts/test.sh runs it)"]
fn config_space_carries_mac_and_link_up() {
    let tap = open_tap("c");
    let mut g = guest(tap, FEATURES);
    let mac: Vec<u8> = (0..6)
        .map(|i| read(&mut g.dev, DEVICE_OFFSET + i, 1) as u8)
        .collect();
    assert_eq!(mac, MAC.0);
    assert_eq!(
        read(&mut g.dev, DEVICE_OFFSET + 6, 2),
        1,
        "VIRTIO_NET_S_LINK_UP"
    );
    write(&mut g.dev, 0x00, 0, 4);
    let offered = read(&mut g.dev, 0x04, 4);
    let offloads = 1 << 1 | 1 << 7 | 1 << 8 | 1 << 11 | 1 << 12; // GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6
    assert_eq!(
        offered & offloads,
        offloads,
        "the tap takes TUNSETOFFLOAD, so guest offloads are offered"
    );
    assert_eq!(offered & 1 << 15, 0, "no MRG_RXBUF");
}

#[test]
#[ignore = "needs root and /dev/net/tun for a tap (scripts/test.sh runs it)"]
fn transmitted_frame_reaches_the_tap() {
    let tap = open_tap("t");
    let name = tap.name().to_string();
    let sock = PacketSocket::open(&name);
    let mut g = guest(tap, FEATURES | F_EVENT_IDX);
    let payload = b"vfio-vmm virtio-net transmit test";
    let data = frame(MAC.0, payload);
    g.mem.write_slice(&[0; 12], GuestAddress(0x40000)).unwrap();
    g.mem.write_slice(&data, GuestAddress(0x41000)).unwrap();
    let head = g.tx.push(
        &g.mem,
        &[(0x40000, 12, false), (0x41000, data.len() as u32, false)],
    );
    write(&mut g.dev, NOTIFY_OFFSET + 4, 1, 2);
    assert!(
        wait_for(|| g.tx.used(&g.mem) == vec![(u32::from(head), 0)]),
        "transmit chain used"
    );
    assert!(sock.wait_payload(payload), "frame seen on {name}");
    assert!(
        wait_for(|| g.fired.msi.lock().unwrap().contains(&2)),
        "transmit vector fired"
    );
    assert_eq!(g.dev.status() & STATUS_NEEDS_RESET, 0);
}

#[test]
#[ignore = "needs root and /dev/net/tun for a tap (scripts/test.sh runs it)"]
fn frame_sent_to_the_tap_lands_in_a_receive_buffer() {
    let tap = open_tap("r");
    let name = tap.name().to_string();
    let sock = PacketSocket::open(&name);
    let mut g = guest(tap, FEATURES);
    for i in 0..8u64 {
        g.rx.push(&g.mem, &[(0x50000 + i * 0x800, 0x800, true)]);
    }
    write(&mut g.dev, NOTIFY_OFFSET, 1, 2);
    let payload = b"vfio-vmm virtio-net receive test";
    sock.send(&frame([0x02, 9, 9, 9, 9, 9], payload)).unwrap();
    let found = wait_for(|| {
        g.rx.used(&g.mem).iter().any(|(head, len)| {
            let mut buf = vec![0u8; *len as usize];
            g.mem
                .read_slice(&mut buf, GuestAddress(0x50000 + u64::from(*head) * 0x800))
                .unwrap();
            *len > 12 && buf[10..12] == [1, 0] && buf.windows(payload.len()).any(|w| w == payload)
        })
    });
    assert!(
        found,
        "frame delivered with a virtio-net header, num_buffers = 1"
    );
    assert!(
        g.fired.msi.lock().unwrap().contains(&1),
        "receive vector fired"
    );
}

#[test]
#[ignore = "needs root and /dev/net/tun for a tap (scripts/test.sh runs it)"]
fn garbage_in_the_rings_marks_needs_reset_and_nothing_panics() {
    type Poison = fn(&mut Ring, &GuestMemory);
    let cases: [(&str, Poison); 4] = [
        ("o", |r, m| {
            r.push(m, &[(0xffff_ffff_0000, 64, false)]);
        }),
        ("x", |r, m| {
            r.push(m, &[(0xf_fff0, 64, false)]); // straddles the end of RAM
        }),
        ("i", |r, m| {
            m.write_obj(1000u16, GuestAddress(r.avail + 2)).unwrap()
        }),
        ("h", |r, m| r.publish(m, 500)),
    ];
    for (tag, poison) in cases {
        let tap = open_tap(tag);
        let name = tap.name().to_string();
        let mut g = guest(tap, FEATURES);
        poison(&mut g.tx, &g.mem);
        write(&mut g.dev, NOTIFY_OFFSET + 4, 1, 2);
        assert!(
            wait_for(|| g.dev.status() & STATUS_NEEDS_RESET != 0),
            "case {tag}"
        );
        assert!(
            wait_for(|| g.fired.msi.lock().unwrap().contains(&0)),
            "config vector, case {tag}"
        );
        // The driver resets; the device comes back clean and the tap stays.
        write(&mut g.dev, 0x14, 0, 1);
        assert_eq!(read(&mut g.dev, 0x14, 1), 0);
        assert!(std::path::Path::new("/sys/class/net").join(&name).exists());
    }
}

#[test]
#[ignore = "needs root and /dev/net/tun for a tap (scripts/test.sh runs it)"]
fn dropping_the_device_stops_the_worker_and_closes_the_tap() {
    let tap = open_tap("d");
    let name = tap.name().to_string();
    let g = guest(tap, FEATURES);
    assert!(std::path::Path::new("/sys/class/net").join(&name).exists());
    drop(g);
    assert!(
        wait_for(|| !std::path::Path::new("/sys/class/net").join(&name).exists()),
        "tap {name} removed once the last descriptor closed"
    );
}
