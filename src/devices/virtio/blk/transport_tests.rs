//! virtio-blk behind the PCI transport, with the worker thread: a fake
//! driver negotiates, sets up the request queue, notifies, and reads the
//! used ring and the interrupts; the fakes are the transport tests'.

use std::mem::offset_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pci::{PciAddress, PciDevice};
use virtio_bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::{Bytes, GuestAddress};

use super::image::DiskImage;
use super::image_tests::{pattern, TempDir};
use super::{DiskOptions, CONFIG_LEN};
use crate::devices::virtio::pci_transport::{VirtioPciDevice, DEVICE_OFFSET, NOTIFY_OFFSET};
use crate::devices::virtio::tests::{
    enable_msix, memory, negotiate, place_bar, read, setup_queue, write, FakeIoEvents, FakeManager,
    Fired,
};
use crate::devices::virtio::{
    new_blk_pci, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, STATUS_NEEDS_RESET,
};
use crate::memory::GuestMemory;

/// Ring size the fake driver uses.
const RING: u16 = 8;
/// Rings, header, data and status in the 1 MiB of test RAM.
const DESC: u64 = 0x10000;
const AVAIL: u64 = 0x11000;
const USED: u64 = 0x12000;
const HDR: u64 = 0x40000;
const DATA: u64 = 0x50000;
const STATUS: u64 = 0x60000;

/// A device with a driver that set it up and set DRIVER_OK.
struct Guest {
    dev: VirtioPciDevice,
    mem: GuestMemory,
    fired: Arc<Fired>,
    features: u64,
    next: u16,
    idx: u16,
}

impl Guest {
    fn new(options: &DiskOptions) -> Self {
        Self::with_features(options, F_VERSION_1)
    }

    /// A device whose driver accepts `features`.
    fn with_features(options: &DiskOptions, features: u64) -> Self {
        let mem = memory();
        let fired = Arc::new(Fired::default());
        let mut dev = new_blk_pci(
            options,
            PciAddress::new(0, 4, 0).unwrap(),
            mem.clone(),
            Arc::new(FakeManager(fired.clone())),
            Arc::new(FakeIoEvents::default()),
        )
        .unwrap();
        place_bar(&mut dev);
        let mut g = Guest {
            dev,
            mem,
            fired,
            features,
            next: 0,
            idx: 0,
        };
        g.start();
        g
    }

    /// Negotiates the features, sets up queue 0 on vector 1, DRIVER_OK.
    fn start(&mut self) {
        let dev = &mut self.dev;
        enable_msix(dev, 2);
        write(dev, 0x10, 0, 2);
        assert_ne!(negotiate(dev, self.features) & 8, 0);
        setup_queue(dev, 0, RING, DESC, AVAIL, USED);
        write(dev, 0x1a, 1, 2);
        write(dev, 0x14, 0x0f, 1);
        assert_eq!(read(dev, 0x14, 1), 0x0f);
        (self.next, self.idx) = (0, 0);
    }

    /// Queues header + one data buffer + status and notifies.
    fn request(&mut self, kind: u32, sector: u64, len: u32) {
        self.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        let data_flags = if kind == VIRTIO_BLK_T_IN { 2 } else { 0 };
        let head = self.next;
        for (i, (addr, len, flags)) in [(HDR, 16, 0), (DATA, len, data_flags), (STATUS, 1, 2)]
            .into_iter()
            .enumerate()
        {
            let at = DESC + 16 * u64::from(self.next);
            self.next = (self.next + 1) % RING;
            let flags: u16 = flags | u16::from(i < 2);
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem
                .write_obj(self.next, GuestAddress(at + 14))
                .unwrap();
        }
        let slot = AVAIL + 4 + 2 * u64::from(self.idx % RING);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.idx = self.idx.wrapping_add(1);
        self.mem
            .write_obj(self.idx, GuestAddress(AVAIL + 2))
            .unwrap();
        write(&mut self.dev, NOTIFY_OFFSET, 0, 2);
    }

    /// Waits for the used index to reach the available one; returns the status byte.
    fn wait_done(&self) -> u8 {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let used: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            if used == self.idx {
                return self.mem.read_obj(GuestAddress(STATUS)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("request {} not completed within 5 s", self.idx);
    }
}

#[test]
fn config_space_layout_matches_virtio_blk_config() {
    let fields = [
        (0, offset_of!(virtio_blk_config, capacity)),
        (12, offset_of!(virtio_blk_config, seg_max)),
        (20, offset_of!(virtio_blk_config, blk_size)),
        (34, offset_of!(virtio_blk_config, num_queues)),
        (36, offset_of!(virtio_blk_config, max_discard_sectors)),
        (40, offset_of!(virtio_blk_config, max_discard_seg)),
        (44, offset_of!(virtio_blk_config, discard_sector_alignment)),
        (48, offset_of!(virtio_blk_config, max_write_zeroes_sectors)),
        (52, offset_of!(virtio_blk_config, max_write_zeroes_seg)),
        (56, offset_of!(virtio_blk_config, write_zeroes_may_unmap)),
        (
            CONFIG_LEN,
            offset_of!(virtio_blk_config, max_secure_erase_sectors),
        ),
    ];
    for (ours, theirs) in fields {
        assert_eq!(ours, theirs);
    }
}

#[test]
fn identity_features_and_config_space() {
    let dir = TempDir::new("ident");
    let path = dir.file("disk.img", &[0; 1 << 20]);
    let mut g = Guest::new(&DiskOptions::new(&path));
    assert_eq!(g.dev.config().read_u16(2), 0x1042, "virtio-blk");
    let dev = &mut g.dev;
    let cfg = |dev: &mut VirtioPciDevice, off: u64, len: usize| read(dev, DEVICE_OFFSET + off, len);
    assert_eq!(cfg(dev, 0, 8), 2048, "capacity in sectors");
    assert_eq!(
        (cfg(dev, 12, 4), cfg(dev, 20, 4)),
        (254, 512),
        "seg_max, blk_size"
    );
    assert_eq!(
        (cfg(dev, 36, 4), cfg(dev, 40, 4)),
        (0x3f_ffff, 1),
        "discard limits"
    );
    assert_eq!(
        (cfg(dev, 48, 4), cfg(dev, 52, 4), cfg(dev, 56, 1)),
        (0x3f_ffff, 1, 1)
    );
    write(dev, 0x00, 0, 4);
    let low = read(dev, 0x04, 4);
    for bit in [
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
        2,
        6,
    ] {
        assert_ne!(low & 1 << bit, 0, "feature {bit}");
    }
    assert_eq!(low & 1 << VIRTIO_BLK_F_RO, 0);
    drop(g);

    let ro = Guest::new(&DiskOptions {
        readonly: true,
        ..DiskOptions::new(&path)
    });
    let mut dev = ro.dev;
    write(&mut dev, 0x00, 0, 4);
    let low = read(&mut dev, 0x04, 4);
    assert_ne!(low & 1 << VIRTIO_BLK_F_RO, 0);
    assert_eq!(
        low & (1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES),
        0
    );
    assert_eq!(
        read(&mut dev, DEVICE_OFFSET + 36, 4),
        0,
        "no discard limits"
    );
}

#[test]
fn requests_complete_through_the_worker_and_survive_a_reset() {
    let dir = TempDir::new("e2e");
    let path = dir.file("disk.img", &pattern(1 << 20));
    let mut g = Guest::new(&DiskOptions::new(&path));
    g.mem
        .write_slice(&[0x5a; 1024], GuestAddress(DATA))
        .unwrap();
    g.request(VIRTIO_BLK_T_OUT, 10, 1024);
    assert_eq!(g.wait_done(), 0);
    g.mem.write_slice(&[0; 4096], GuestAddress(DATA)).unwrap();
    g.request(VIRTIO_BLK_T_IN, 9, 2048);
    assert_eq!(g.wait_done(), 0);
    let mut back = vec![0u8; 2048];
    g.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back[..512], pattern(1 << 20)[9 * 512..10 * 512]);
    assert_eq!(back[512..1536], [0x5a; 1024]);
    assert!(g.fired.msi.lock().unwrap().contains(&1), "queue vector");
    // The driver resets and starts again; the image stays open and locked.
    write(&mut g.dev, 0x14, 0, 1);
    assert!(DiskImage::open(&path, true, false).is_err(), "still locked");
    g.mem.write_slice(&[0; 0x3000], GuestAddress(DESC)).unwrap();
    g.start();
    g.request(VIRTIO_BLK_T_IN, 10, 512);
    assert_eq!(g.wait_done(), 0);
    assert_eq!(
        g.mem.read_obj::<u8>(GuestAddress(DATA + 511)).unwrap(),
        0x5a
    );
    drop(g);
    DiskImage::open(&path, false, false).expect("dropping the device unlocks the image");
}

#[test]
fn a_broken_ring_marks_needs_reset_without_panicking() {
    let dir = TempDir::new("broken");
    let path = dir.file("disk.img", &[0; 65536]);
    let mut g = Guest::new(&DiskOptions::new(&path));
    // An available index far ahead of the ring.
    g.mem.write_obj(1000u16, GuestAddress(AVAIL + 2)).unwrap();
    write(&mut g.dev, NOTIFY_OFFSET, 0, 2);
    let start = Instant::now();
    while g.dev.status() & STATUS_NEEDS_RESET == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "NEEDS_RESET not set"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    write(&mut g.dev, 0x14, 0, 1);
    assert_eq!(read(&mut g.dev, 0x14, 1), 0);
}

#[test]
fn event_idx_suppresses_interrupts_the_driver_did_not_ask_for() {
    let dir = TempDir::new("eventidx");
    let path = dir.file("disk.img", &pattern(65536));
    let features = F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC;
    let mut g = Guest::with_features(&DiskOptions::new(&path), features);
    // used_event = 0: an interrupt when the used index passes 0.
    g.request(VIRTIO_BLK_T_IN, 0, 512);
    assert_eq!(g.wait_done(), 0);
    let fired = |g: &Guest| {
        g.fired
            .msi
            .lock()
            .unwrap()
            .iter()
            .filter(|v| **v == 1)
            .count()
    };
    let start = Instant::now();
    while fired(&g) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no interrupt");
        std::thread::sleep(Duration::from_millis(2));
    }
    // used_event stays 0 (slot after the ring): no interrupt for the next ones.
    for sector in 1..4 {
        g.request(VIRTIO_BLK_T_IN, sector, 512);
        assert_eq!(g.wait_done(), 0);
    }
    assert_eq!(fired(&g), 1);
}
