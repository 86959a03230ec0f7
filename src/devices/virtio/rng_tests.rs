//! virtio-rng end to end over the PCI transport: a fake driver builds a
//! split ring in guest RAM, posts requests and reads back what the device
//! wrote, with a file as the source so that every byte can be checked; and
//! the guest mistakes (huge lengths, buffers outside RAM, a bad ring) that
//! must neither panic nor overrun.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pci::PciAddress;
use vm_memory::{Bytes, GuestAddress};

use super::pci_transport::{VirtioPciDevice, NOTIFY_OFFSET};
use super::rng::{Rng, MAX_REQUEST};
use super::tests::{
    enable_msix, memory, negotiate, place_bar, read, setup_queue, write, FakeIoEvents, FakeManager,
    Fired,
};
use super::{F_VERSION_1, STATUS_NEEDS_RESET};
use crate::config::RngConfig;
use crate::memory::GuestMemory;

/// Ring size the fake driver uses.
const RING: u16 = 16;
/// Where the descriptor table, available and used rings go.
const DESC: u64 = 0x10000;
const AVAIL: u64 = 0x11000;
const USED: u64 = 0x12000;

/// The fake driver's view of the request queue.
struct Ring {
    next: u16,
    idx: u16,
}

impl Ring {
    /// Adds a chain of (address, length, device-writable) buffers.
    fn push(&mut self, mem: &GuestMemory, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next;
        for (i, (addr, len, writable)) in bufs.iter().enumerate() {
            let at = DESC + 16 * u64::from(self.next);
            self.next = (self.next + 1) % RING;
            let flags = u16::from(i + 1 < bufs.len()) | if *writable { 2 } else { 0 };
            mem.write_obj(*addr, GuestAddress(at)).unwrap();
            mem.write_obj(*len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(self.next, GuestAddress(at + 14)).unwrap();
        }
        let slot = AVAIL + 4 + 2 * u64::from(self.idx % RING);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.idx = self.idx.wrapping_add(1);
        mem.write_obj(self.idx, GuestAddress(AVAIL + 2)).unwrap();
        head
    }
}

/// The used ring entries so far: (head, length).
fn used(mem: &GuestMemory) -> Vec<(u32, u32)> {
    let n: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
    (0..u64::from(n))
        .map(|i| {
            let at = USED + 4 + 8 * (i % u64::from(RING));
            (
                mem.read_obj(GuestAddress(at)).unwrap(),
                mem.read_obj(GuestAddress(at + 4)).unwrap(),
            )
        })
        .collect()
}

/// An active virtio-rng reading `src`: MSI-X on (config 0, queue 1).
struct Guest {
    dev: VirtioPciDevice,
    mem: GuestMemory,
    fired: Arc<Fired>,
    ring: Ring,
}

impl Guest {
    fn new(src: PathBuf) -> Self {
        let mem = memory();
        let fired = Arc::new(Fired::default());
        let rng = Rng::new(&RngConfig { src }).unwrap();
        let mut dev = VirtioPciDevice::new(
            Box::new(rng),
            PciAddress::new(0, 5, 0).unwrap(),
            mem.clone(),
            &FakeManager(fired.clone()),
            Arc::new(FakeIoEvents::default()),
        )
        .unwrap();
        place_bar(&mut dev);
        enable_msix(&mut dev, 2);
        let mut g = Guest {
            dev,
            mem,
            fired,
            ring: Ring { next: 0, idx: 0 },
        };
        g.start();
        g
    }

    /// Negotiates, sets up the queue on vector 1 and sets DRIVER_OK.
    fn start(&mut self) {
        write(&mut self.dev, 0x10, 0, 2);
        assert_ne!(negotiate(&mut self.dev, F_VERSION_1) & 8, 0);
        setup_queue(&mut self.dev, 0, RING, DESC, AVAIL, USED);
        write(&mut self.dev, 0x1a, 1, 2);
        write(&mut self.dev, 0x14, 0x0f, 1);
        assert_eq!(read(&mut self.dev, 0x14, 1), 0x0f);
        self.ring = Ring { next: 0, idx: 0 };
    }

    /// Posts a chain and notifies the device.
    fn request(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.ring.push(&self.mem, bufs);
        write(&mut self.dev, NOTIFY_OFFSET, 0, 2);
        head
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
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

/// A source file of `len` bytes of a known pattern, removed on drop.
struct Source(PathBuf, Vec<u8>);

impl Source {
    fn new(tag: &str, len: usize) -> Self {
        let path = std::env::temp_dir().join(format!("vfio-vmm-rng-{}-{tag}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        Source(path, data)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn identity_is_virtio_rng_with_one_queue() {
    let g = Guest::new("/dev/urandom".into());
    use pci::PciDevice;
    let c = g.dev.config();
    assert_eq!((c.read_u16(0), c.read_u16(2)), (0x1af4, 0x1044));
}

#[test]
fn requests_are_filled_from_the_source_in_order_with_their_used_length() {
    let src = Source::new("order", 4096);
    let mut g = Guest::new(src.0.clone());
    let a = g.request(&[(0x40000, 16, true)]);
    let b = g.request(&[
        (0x41000, 100, true),
        (0x42000, 200, true),
        (0x43000, 300, true),
    ]);
    // A device-readable buffer is not written and not counted.
    g.mem
        .write_slice(&[0xee; 64], GuestAddress(0x44000))
        .unwrap();
    let c = g.request(&[(0x44000, 64, false), (0x45000, 32, true)]);
    let want = vec![(a.into(), 16), (b.into(), 600), (c.into(), 32)];
    assert!(wait_for(|| used(&g.mem) == want), "{:?}", used(&g.mem));
    let got = [
        g.bytes(0x40000, 16),
        g.bytes(0x41000, 100),
        g.bytes(0x42000, 200),
        g.bytes(0x43000, 300),
        g.bytes(0x45000, 32),
    ]
    .concat();
    assert_eq!(got, src.1[..648]);
    assert_eq!(g.bytes(0x44000, 64), vec![0xee; 64]);
    assert!(wait_for(|| g.fired.msi.lock().unwrap().contains(&1)));
    assert_eq!(g.dev.status() & STATUS_NEEDS_RESET, 0);
}

#[test]
fn a_huge_length_gets_a_bounded_request_and_an_exhausted_file_short_ones() {
    let src = Source::new("bounded", MAX_REQUEST + 100);
    let mut g = Guest::new(src.0.clone());
    // Claims 4 GiB in a 1 MiB guest: only MAX_REQUEST bytes are written.
    g.mem
        .write_slice(&[0xaa; 16], GuestAddress(0x70000 + MAX_REQUEST as u64))
        .unwrap();
    let a = g.request(&[(0x70000, u32::MAX, true)]);
    let b = g.request(&[(0x40000, 4096, true)]);
    let c = g.request(&[(0x41000, 4096, true)]);
    let want = vec![
        (a.into(), MAX_REQUEST as u32),
        (b.into(), 100),
        (c.into(), 0),
    ];
    assert!(wait_for(|| used(&g.mem) == want), "{:?}", used(&g.mem));
    assert_eq!(g.bytes(0x70000, MAX_REQUEST), src.1[..MAX_REQUEST]);
    assert_eq!(g.bytes(0x70000 + MAX_REQUEST as u64, 16), vec![0xaa; 16]);
    assert_eq!(g.bytes(0x40000, 100), src.1[MAX_REQUEST..]);
    assert_eq!(g.dev.status() & STATUS_NEEDS_RESET, 0);
}

#[test]
fn urandom_fills_a_request() {
    let mut g = Guest::new("/dev/urandom".into());
    let head = g.request(&[(0x40000, 4096, true)]);
    assert!(wait_for(|| used(&g.mem) == vec![(head.into(), 4096)]));
    assert!(g.bytes(0x40000, 4096).iter().any(|&b| b != 0));
}

#[test]
fn garbage_marks_needs_reset_and_a_reset_device_serves_again() {
    type Poison = fn(&mut Guest);
    let cases: [(&str, Poison); 3] = [
        ("outside RAM", |g| {
            g.request(&[(0xffff_ffff_0000, 64, true)]);
        }),
        ("straddling the end of RAM", |g| {
            g.request(&[(0xf_fff0, 64, true)]);
        }),
        ("available index far ahead", |g| {
            g.mem.write_obj(1000u16, GuestAddress(AVAIL + 2)).unwrap();
            write(&mut g.dev, NOTIFY_OFFSET, 0, 2);
        }),
    ];
    for (case, poison) in cases {
        let mut g = Guest::new("/dev/urandom".into());
        poison(&mut g);
        assert!(
            wait_for(|| g.dev.status() & STATUS_NEEDS_RESET != 0),
            "{case}"
        );
        assert!(
            wait_for(|| g.fired.msi.lock().unwrap().contains(&0)),
            "config vector, {case}"
        );
        write(&mut g.dev, 0x14, 0, 1);
        assert_eq!(read(&mut g.dev, 0x14, 1), 0, "{case}");
        for at in [USED, AVAIL] {
            g.mem.write_slice(&[0; 0x1000], GuestAddress(at)).unwrap();
        }
        g.start();
        let head = g.request(&[(0x40000, 32, true)]);
        assert!(
            wait_for(|| used(&g.mem) == vec![(head.into(), 32)]),
            "after reset, {case}: {:?}",
            used(&g.mem)
        );
    }
}
