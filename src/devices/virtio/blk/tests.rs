//! virtio-blk requests over a fake queue: a fake driver writes split-ring
//! descriptors into guest RAM and the request handler serves the chains
//! virtio-queue pops, against a real image file. Every kind of guest
//! mistake gets a status (or, with no status byte, an empty used entry);
//! nothing panics or hangs. `transport_tests.rs` drives the whole device.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::image::DiskImage;
use super::image_tests::{pattern, TempDir};
use super::request::{Handler, CHUNK, MAX_ZERO_SECTORS};
use crate::memory::GuestMemory;

/// Ring size of the fake queue.
pub(super) const RING: u16 = 16;
/// Where the rings live.
pub(super) const DESC: u64 = 0x1000;
pub(super) const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// Where request headers, indirect tables, status bytes and data go.
pub(super) const HDR: u64 = 0x10000;
const TABLE: u64 = 0x20000;
pub(super) const STATUS: u64 = 0x30000;
pub(super) const DATA: u64 = 0x100000;
/// Guest RAM size.
pub(super) const RAM: u64 = 8 << 20;
/// Sectors in the test disk.
pub(super) const SECTORS: u64 = 16384;
/// Status bytes start as this so that "not written" shows.
pub(super) const UNTOUCHED: u8 = 0xee;

/// OK / IOERR / UNSUPP as the guest reads them.
pub(super) const OK: u8 = VIRTIO_BLK_S_OK as u8;
pub(super) const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// A buffer of a chain: (guest address, length, device-writable).
pub(super) type Buf = (u64, u32, bool);

/// The fake driver: guest RAM and a split ring it fills.
pub(super) struct Driver {
    pub(super) mem: GuestMemory,
    pub(super) queue: Queue,
    pub(super) next: u16,
    idx: u16,
}

impl Driver {
    pub(super) fn new() -> Self {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let mut queue = Queue::new(RING).unwrap();
        queue.set_size(RING);
        queue.set_desc_table_address(Some(DESC as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        Driver {
            mem,
            queue,
            next: 0,
            idx: 0,
        }
    }

    /// Writes descriptor `index` of the table at `table`.
    pub(super) fn desc(&self, table: u64, index: u16, buf: Buf, next: Option<u16>, indirect: bool) {
        let (addr, len, writable) = buf;
        let at = GuestAddress(table + 16 * u64::from(index));
        let flags =
            u16::from(next.is_some()) | if writable { 2 } else { 0 } | if indirect { 4 } else { 0 };
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem
            .write_obj(next.unwrap_or(0), at.unchecked_add(14))
            .unwrap();
    }

    /// Publishes a chain of `bufs` in the descriptor table.
    pub(super) fn push(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.next;
        for (i, buf) in bufs.iter().enumerate() {
            let this = self.next;
            self.next = (self.next + 1) % RING;
            let next = (i + 1 < bufs.len()).then_some(self.next);
            self.desc(DESC, this, *buf, next, false);
        }
        self.publish(head);
        head
    }

    /// Publishes one descriptor pointing to an indirect table holding `bufs`.
    fn push_indirect(&mut self, bufs: &[Buf]) -> u16 {
        for (i, buf) in bufs.iter().enumerate() {
            let next = (i + 1 < bufs.len()).then_some(i as u16 + 1);
            self.desc(TABLE, i as u16, *buf, next, false);
        }
        let head = self.next;
        self.next = (self.next + 1) % RING;
        self.desc(
            DESC,
            head,
            (TABLE, 16 * bufs.len() as u32, false),
            None,
            true,
        );
        self.publish(head);
        head
    }

    pub(super) fn publish(&mut self, head: u16) {
        let slot = AVAIL + 4 + 2 * u64::from(self.idx % RING);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.idx = self.idx.wrapping_add(1);
        self.mem
            .write_obj(self.idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// Writes a request header.
    pub(super) fn header(&self, kind: u32, sector: u64) {
        self.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        self.mem.write_obj(UNTOUCHED, GuestAddress(STATUS)).unwrap();
    }

    pub(super) fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// A test disk of [`SECTORS`] sectors holding [`pattern`], and its handler.
pub(super) fn disk(dir: &TempDir, readonly: bool, direct: bool) -> (Handler, std::path::PathBuf) {
    let path = dir.file("disk.img", &pattern(SECTORS as usize * 512));
    let image = DiskImage::open(&path, readonly, direct).unwrap();
    (Handler::new(image, *b"test-serial-0000001\0"), path)
}

/// Serves the next chain; returns the status byte at [`STATUS`] and the used length.
pub(super) fn serve(h: &mut Handler, d: &mut Driver) -> (u8, u32) {
    let chain = d.queue.pop_descriptor_chain(&d.mem).expect("a chain");
    let (_, len) = h.serve(&d.mem, chain);
    (d.mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
}

/// A request: header, `data` (writable for reads), status.
pub(super) fn request(
    h: &mut Handler,
    d: &mut Driver,
    kind: u32,
    sector: u64,
    data: &[Buf],
) -> (u8, u32) {
    d.header(kind, sector);
    let mut bufs = vec![(HDR, 16, false)];
    bufs.extend_from_slice(data);
    bufs.push((STATUS, 1, true));
    d.push(&bufs);
    serve(h, d)
}

#[test]
fn reads_and_writes_cross_descriptors_and_reach_the_file() {
    let dir = TempDir::new("rw");
    let (mut h, path) = disk(&dir, false, false);
    let mut d = Driver::new();
    // A read of sectors 3..5 split at an odd place.
    let data = [(DATA, 100, true), (DATA + 0x1000, 924, true)];
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_IN, 3, &data),
        (OK, 1025)
    );
    let want = &pattern(SECTORS as usize * 512)[3 * 512..5 * 512];
    assert_eq!(d.read(DATA, 100), want[..100]);
    assert_eq!(d.read(DATA + 0x1000, 924), want[100..]);
    // A write of sector 7 from two buffers.
    d.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    let data = [(DATA, 12, false), (DATA + 12, 500, false)];
    assert_eq!(request(&mut h, &mut d, VIRTIO_BLK_T_OUT, 7, &data), (OK, 1));
    assert_eq!(request(&mut h, &mut d, VIRTIO_BLK_T_FLUSH, 0, &[]), (OK, 1));
    let file = std::fs::read(&path).unwrap();
    assert_eq!(file[7 * 512..8 * 512], [0xab; 512]);
    assert_eq!(
        file[8 * 512..9 * 512],
        pattern(SECTORS as usize * 512)[8 * 512..9 * 512]
    );
}

#[test]
fn requests_larger_than_the_host_buffer_go_in_chunks() {
    let dir = TempDir::new("chunks");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    let len = CHUNK * 2 + 4096;
    // Three descriptors whose edges do not meet the chunk edges.
    let parts = [(DATA, 3000u32, true), (DATA + 3000, CHUNK as u32, true)];
    let rest = (len - 3000 - CHUNK) as u32;
    let data = [parts[0], parts[1], (DATA + 3000 + CHUNK as u64, rest, true)];
    let (status, used) = request(&mut h, &mut d, VIRTIO_BLK_T_IN, 8, &data);
    assert_eq!((status, used as usize), (OK, len + 1));
    assert_eq!(
        d.read(DATA, len),
        pattern(SECTORS as usize * 512)[8 * 512..8 * 512 + len]
    );
    // And back out, shifted by one sector.
    let data: Vec<Buf> = data.iter().map(|(a, l, _)| (*a, *l, false)).collect();
    assert_eq!(request(&mut h, &mut d, VIRTIO_BLK_T_OUT, 9, &data), (OK, 1));
    let data: Vec<Buf> = data
        .iter()
        .map(|(a, l, _)| (*a + 0x300000, *l, true))
        .collect();
    assert_eq!(request(&mut h, &mut d, VIRTIO_BLK_T_IN, 9, &data).0, OK);
    assert_eq!(d.read(DATA + 0x300000, len), d.read(DATA, len));
}

#[test]
fn get_id_answers_the_serial_in_what_room_there_is() {
    let dir = TempDir::new("id");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    let data = [(DATA, 20, true)];
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_GET_ID, 0, &data),
        (OK, 21)
    );
    assert_eq!(d.read(DATA, 20), b"test-serial-0000001\0");
    d.mem.write_slice(&[0xff; 20], GuestAddress(DATA)).unwrap();
    let data = [(DATA, 4, true)];
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_GET_ID, 0, &data),
        (OK, 5)
    );
    assert_eq!(d.read(DATA, 5), b"test\xff");
}

#[test]
fn unknown_request_types_are_unsupported() {
    let dir = TempDir::new("unsupp");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    for kind in [2, 3, 14, 15, 0x8000_0000, u32::MAX] {
        let data = [(DATA, 512, true)];
        assert_eq!(
            request(&mut h, &mut d, kind, 0, &data),
            (UNSUPP, 1),
            "type {kind}"
        );
    }
}

#[test]
fn requests_past_the_end_or_overflowing_are_io_errors() {
    let dir = TempDir::new("end");
    let (mut h, path) = disk(&dir, false, false);
    let mut d = Driver::new();
    let last = [(DATA, 512, true)];
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_IN, SECTORS - 1, &last).0,
        OK
    );
    let two = [(DATA, 1024, false)];
    for sector in [
        SECTORS - 1,
        SECTORS,
        u64::MAX / 512,
        u64::MAX / 512 + 1,
        u64::MAX,
    ] {
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_IN, sector, &last).0 == OK,
            sector < SECTORS
        );
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_OUT, sector, &two),
            (IOERR, 1),
            "{sector}"
        );
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        SECTORS * 512,
        "the file did not grow"
    );
}

#[test]
fn data_that_is_not_whole_sectors_is_an_io_error() {
    let dir = TempDir::new("partial");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    for len in [1, 511, 513, 1000] {
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_IN, 0, &[(DATA, len, true)]),
            (IOERR, 1)
        );
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_OUT, 0, &[(DATA, len, false)]),
            (IOERR, 1)
        );
    }
}

#[test]
fn buffers_outside_guest_ram_are_io_errors() {
    let dir = TempDir::new("ram");
    let (mut h, path) = disk(&dir, false, false);
    let mut d = Driver::new();
    for data in [
        (RAM, 512, true),            // just past the end
        (RAM - 256, 512, true),      // straddling the end
        (u64::MAX - 255, 512, true), // wrapping the address space
        (DATA, 0xffff_fe00, true),   // a length far past RAM
    ] {
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_IN, 0, &[data]),
            (IOERR, 1),
            "{data:x?}"
        );
        let out = (data.0, data.1, false);
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_OUT, 0, &[out]),
            (IOERR, 1),
            "{out:x?}"
        );
    }
    // A header outside RAM.
    d.mem.write_obj(UNTOUCHED, GuestAddress(STATUS)).unwrap();
    d.push(&[(RAM + 4096, 16, false), (STATUS, 1, true)]);
    assert_eq!(serve(&mut h, &mut d), (IOERR, 1));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        pattern(SECTORS as usize * 512)
    );
}

#[test]
fn chains_without_a_status_byte_in_ram_are_returned_empty() {
    let dir = TempDir::new("nostatus");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    d.header(VIRTIO_BLK_T_IN, 0);
    d.push(&[(HDR, 16, false), (DATA, 512, false)]);
    assert_eq!(serve(&mut h, &mut d), (UNTOUCHED, 0));
    d.push(&[(HDR, 16, false), (DATA, 512, true), (RAM + 10, 1, true)]);
    assert_eq!(serve(&mut h, &mut d), (UNTOUCHED, 0));
    assert_eq!(d.read(DATA, 512), vec![0; 512], "no data written either");
    // A loop in the table: virtio-queue stops after RING descriptors.
    d.desc(DESC, d.next, (HDR, 16, false), Some(d.next), false);
    let head = d.next;
    d.next += 1;
    d.publish(head);
    assert_eq!(serve(&mut h, &mut d), (UNTOUCHED, 0));
}

#[test]
fn short_headers_and_misordered_chains_are_io_errors() {
    let dir = TempDir::new("order");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    d.header(VIRTIO_BLK_T_FLUSH, 0);
    d.push(&[(HDR, 8, false), (STATUS, 1, true)]);
    assert_eq!(serve(&mut h, &mut d), (IOERR, 1));
    d.header(VIRTIO_BLK_T_IN, 0);
    d.push(&[(DATA, 512, true), (HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(serve(&mut h, &mut d), (IOERR, 1));
    // A header split over two descriptors is fine.
    d.header(VIRTIO_BLK_T_IN, 1);
    d.push(&[
        (HDR, 5, false),
        (HDR + 5, 11, false),
        (DATA, 512, true),
        (STATUS, 1, true),
    ]);
    assert_eq!(serve(&mut h, &mut d), (OK, 513));
}

#[test]
fn chains_longer_than_seg_max_are_io_errors() {
    let dir = TempDir::new("long");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    let mut bufs = vec![(HDR, 16, false)];
    bufs.extend((0..254u64).map(|i| (DATA + 512 * i, 512, true)));
    bufs.push((STATUS, 1, true));
    d.header(VIRTIO_BLK_T_IN, 0);
    d.push_indirect(&bufs);
    assert_eq!(
        serve(&mut h, &mut d),
        (OK, 254 * 512 + 1),
        "seg_max segments are fine"
    );
    bufs.insert(1, (DATA, 512, true));
    d.header(VIRTIO_BLK_T_IN, 0);
    d.push_indirect(&bufs);
    assert_eq!(serve(&mut h, &mut d), (IOERR, 1));
}

#[test]
fn a_read_only_disk_refuses_writes_itself() {
    let dir = TempDir::new("ro");
    let (mut h, path) = disk(&dir, true, false);
    let mut d = Driver::new();
    d.mem.write_slice(&[0x55; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)]),
        (IOERR, 1)
    );
    let seg = zero_segment(&d, 0, 1, 0);
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        assert_eq!(request(&mut h, &mut d, kind, 0, &[seg]), (IOERR, 1));
    }
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_IN, 0, &[(DATA, 512, true)]).0,
        OK
    );
    assert_eq!(request(&mut h, &mut d, VIRTIO_BLK_T_FLUSH, 0, &[]).0, OK);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        pattern(SECTORS as usize * 512)
    );
}

/// Writes one discard / write-zeroes segment at DATA; returns its buffer.
fn zero_segment(d: &Driver, sector: u64, sectors: u32, flags: u32) -> Buf {
    d.mem.write_obj(sector, GuestAddress(DATA)).unwrap();
    d.mem.write_obj(sectors, GuestAddress(DATA + 8)).unwrap();
    d.mem.write_obj(flags, GuestAddress(DATA + 12)).unwrap();
    (DATA, 16, false)
}

#[test]
fn discard_and_write_zeroes_zero_the_range() {
    let dir = TempDir::new("zero");
    let (mut h, path) = disk(&dir, false, false);
    let mut d = Driver::new();
    let seg = zero_segment(&d, 8, 16, 0);
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_DISCARD, 0, &[seg]),
        (OK, 1)
    );
    for (sector, flags) in [(40, 0), (80, 1)] {
        let seg = zero_segment(&d, sector, 3, flags);
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[seg]),
            (OK, 1)
        );
    }
    let file = std::fs::read(&path).unwrap();
    let want = pattern(SECTORS as usize * 512);
    let sector = |s: usize| &file[s * 512..(s + 1) * 512];
    for s in (40..43).chain(80..83) {
        assert_eq!(sector(s), [0; 512], "sector {s}");
    }
    for s in [7, 24, 39, 43, 79, 83] {
        assert_eq!(sector(s), &want[s * 512..(s + 1) * 512], "sector {s}");
    }
    // Discard is advisory; where the filesystem punched the hole it reads zero.
    assert!(
        file[8 * 512..24 * 512] == [0; 8192][..]
            || file[8 * 512..24 * 512] == want[8 * 512..24 * 512]
    );
    assert_eq!(file.len(), want.len());
}

#[test]
fn bad_discard_and_write_zeroes_requests_get_a_status() {
    let dir = TempDir::new("badzero");
    let (mut h, path) = disk(&dir, false, false);
    let mut d = Driver::new();
    let cases: [(u32, u64, u32, u32, u8); 6] = [
        (VIRTIO_BLK_T_DISCARD, 0, 1, 1, UNSUPP), // UNMAP on a discard
        (VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 2, UNSUPP), // an unknown flag
        (VIRTIO_BLK_T_DISCARD, SECTORS, 1, 0, IOERR), // past the end
        (VIRTIO_BLK_T_WRITE_ZEROES, u64::MAX, 1, 0, IOERR), // overflowing
        (VIRTIO_BLK_T_DISCARD, 0, MAX_ZERO_SECTORS + 1, 0, IOERR),
        (VIRTIO_BLK_T_WRITE_ZEROES, SECTORS - 1, 2, 0, IOERR),
    ];
    for (kind, sector, sectors, flags, status) in cases {
        let seg = zero_segment(&d, sector, sectors, flags);
        assert_eq!(
            request(&mut h, &mut d, kind, 0, &[seg]),
            (status, 1),
            "{kind} {sector} {sectors} {flags}"
        );
    }
    // Not whole segments, none, or more than max_discard_seg.
    for data in [
        vec![(DATA, 15, false)],
        vec![],
        vec![(DATA, 16, false), (DATA, 16, false)],
    ] {
        assert_eq!(
            request(&mut h, &mut d, VIRTIO_BLK_T_DISCARD, 0, &data),
            (IOERR, 1)
        );
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        pattern(SECTORS as usize * 512)
    );
}

#[test]
fn direct_disks_refuse_misaligned_requests_and_serve_aligned_ones() {
    let dir = TempDir::new("directreq");
    let (mut h, _) = disk(&dir, false, true);
    let mut d = Driver::new();
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_IN, 1, &[(DATA, 4096, true)]),
        (IOERR, 1)
    );
    assert_eq!(
        request(&mut h, &mut d, VIRTIO_BLK_T_IN, 8, &[(DATA, 512, true)]),
        (IOERR, 1)
    );
    // Guest buffers need no alignment: the host buffer is aligned.
    assert_eq!(
        request(
            &mut h,
            &mut d,
            VIRTIO_BLK_T_IN,
            8,
            &[(DATA + 3, 8192, true)]
        ),
        (OK, 8193)
    );
    assert_eq!(
        d.read(DATA + 3, 8192),
        pattern(SECTORS as usize * 512)[4096..12288]
    );
    assert_eq!(
        request(
            &mut h,
            &mut d,
            VIRTIO_BLK_T_OUT,
            16,
            &[(DATA + 3, 8192, false)]
        ),
        (OK, 1)
    );
    assert_eq!(request(&mut h, &mut d, VIRTIO_BLK_T_FLUSH, 0, &[]), (OK, 1));
}
