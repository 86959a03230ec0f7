//! Zero-copy reads and writes: which guest buffers take the path, that
//! they give the bounce buffer's results, that buffers crossing memory
//! regions, more than IOV_MAX pieces and an early end of file are handled,
//! and that the probed-raw block-0 guard still holds.

use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vm_memory::{Bytes, GuestAddress, Permissions};

use super::image::DiskImage;
use super::image_tests::{pattern, TempDir};
use super::request::Part;
use super::tests::{disk, request, Driver, DATA, IOERR, OK, RAM, SECTORS};
use super::zerocopy::{self, GuestIovecs, IOV_MAX};
use crate::memory::GuestMemory;

/// Where the two-region guest RAM of [`split_ram`] is cut.
const CUT: u64 = RAM / 2;

/// Guest RAM as two adjacent regions meeting at [`CUT`].
fn split_ram() -> GuestMemory {
    let half = CUT as usize;
    GuestMemory::from_ranges(&[(GuestAddress(0), half), (GuestAddress(CUT), half)]).unwrap()
}

fn part(addr: u64, len: u64) -> Part {
    Part {
        addr: GuestAddress(addr),
        len,
    }
}

#[test]
fn iovecs_split_at_region_edges_and_refuse_what_o_direct_cannot_take() {
    let mem = split_ram();
    let across = [part(CUT - 4096, 8192)];
    let iovs = GuestIovecs::new(&mem, &across, Permissions::Write, true).unwrap();
    assert_eq!(iovs.len(), 2, "one iovec per region");
    let two = [part(DATA, 4096), part(DATA + 8192, 512)];
    assert_eq!(
        GuestIovecs::new(&mem, &two, Permissions::Read, true)
            .unwrap()
            .len(),
        2
    );
    // Misaligned address or length: only a buffered image takes them.
    for odd in [
        part(DATA + 3, 4096),
        part(DATA, 4095),
        part(DATA + 256, 512),
    ] {
        assert!(GuestIovecs::new(&mem, &[odd], Permissions::Read, true).is_none());
        assert!(GuestIovecs::new(&mem, &[odd], Permissions::Read, false).is_some());
    }
    // Outside guest RAM: no iovecs (check_ram refuses these earlier anyway).
    assert!(GuestIovecs::new(&mem, &[part(RAM - 512, 1024)], Permissions::Read, false).is_none());
}

/// Reads `len` bytes at `sector` through `addr`, writes them back at
/// `sector + 64` through the same buffer, and checks the file.
fn round_trip(direct: bool, mem: GuestMemory, addr: u64, len: u32, tag: &str) {
    let dir = TempDir::new(tag);
    let (mut h, path) = disk(&dir, false, direct);
    let mut d = Driver::new();
    d.mem = mem;
    let all = pattern(SECTORS as usize * 512);
    let (sector, n) = (8u64, len as usize);
    let at = sector as usize * 512;
    let got = request(
        &mut h,
        &mut d,
        VIRTIO_BLK_T_IN,
        sector,
        &[(addr, len, true)],
    );
    assert_eq!(got, (OK, len + 1));
    assert_eq!(d.read(addr, n), all[at..at + n]);
    let got = request(
        &mut h,
        &mut d,
        VIRTIO_BLK_T_OUT,
        sector + 64,
        &[(addr, len, false)],
    );
    assert_eq!(got, (OK, 1));
    assert_eq!(request(&mut h, &mut d, VIRTIO_BLK_T_FLUSH, 0, &[]).0, OK);
    let file = std::fs::read(&path).unwrap();
    let to = (sector + 64) as usize * 512;
    assert_eq!(file[to..to + n], all[at..at + n]);
}

#[test]
fn buffers_across_two_memory_regions_are_served() {
    let cross = CUT - 4096;
    round_trip(false, split_ram(), cross, 3 * 4096, "zc-regions");
    round_trip(true, split_ram(), cross, 3 * 4096, "zc-regions-direct");
}

#[test]
fn zero_copy_and_bounce_give_the_same_bytes() {
    // On a direct disk, aligned guest buffers go zero-copy and misaligned
    // ones through the bounce buffer; both must read and write alike.
    let dir = TempDir::new("zc-same");
    let (mut h, path) = disk(&dir, false, true);
    let mut d = Driver::new();
    let len = 64 * 1024u32;
    let (aligned, odd) = (DATA, DATA + 0x200003);
    assert!(GuestIovecs::new(
        &d.mem,
        &[part(aligned, len.into())],
        Permissions::Write,
        true
    )
    .is_some());
    assert!(GuestIovecs::new(&d.mem, &[part(odd, len.into())], Permissions::Write, true).is_none());
    for addr in [aligned, odd] {
        let got = request(&mut h, &mut d, VIRTIO_BLK_T_IN, 24, &[(addr, len, true)]);
        assert_eq!(got, (OK, len + 1));
    }
    assert_eq!(d.read(aligned, len as usize), d.read(odd, len as usize));
    // Different data written both ways lands the same.
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    d.mem.write_slice(&data, GuestAddress(aligned)).unwrap();
    d.mem.write_slice(&data, GuestAddress(odd)).unwrap();
    for (addr, sector) in [(aligned, 256u64), (odd, 512)] {
        let got = request(
            &mut h,
            &mut d,
            VIRTIO_BLK_T_OUT,
            sector,
            &[(addr, len, false)],
        );
        assert_eq!(got, (OK, 1));
    }
    let file = std::fs::read(&path).unwrap();
    let n = len as usize;
    assert_eq!(file[256 * 512..256 * 512 + n], data[..]);
    assert_eq!(file[512 * 512..512 * 512 + n], data[..]);
}

#[test]
fn more_than_iov_max_pieces_and_early_eof_are_handled() {
    let dir = TempDir::new("zc-iovmax");
    let path = dir.file("disk.img", &pattern(SECTORS as usize * 512));
    let image = DiskImage::open(&path, false, false).unwrap();
    let mem = Driver::new().mem;
    // 1500 sectors, each into every other 512-byte slot of guest RAM.
    let parts: Vec<Part> = (0..1500u64).map(|i| part(DATA + i * 1024, 512)).collect();
    assert!(parts.len() > IOV_MAX);
    assert!(zerocopy::read(&image, &mem, &parts, 4096).unwrap());
    let all = pattern(SECTORS as usize * 512);
    for (i, p) in parts.iter().enumerate() {
        let mut got = [0u8; 512];
        mem.read_slice(&mut got, p.addr).unwrap();
        let at = 4096 + i * 512;
        assert_eq!(got[..], all[at..at + 512], "piece {i}");
    }
    assert!(zerocopy::write(&image, &mem, &parts, 2 << 20).unwrap());
    let file = std::fs::read(&path).unwrap();
    assert_eq!(
        file[2 << 20..(2 << 20) + 1500 * 512],
        all[4096..4096 + 1500 * 512]
    );
    // The file ends half-way through the buffers: an error, not a hang.
    let end = SECTORS * 512 - 512 * 100;
    let err = zerocopy::read(&image, &mem, &parts[..200], end).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    // O_DIRECT takes page-aligned guest buffers itself (no EINVAL fallback).
    drop(image);
    let image = DiskImage::open(&path, false, true).unwrap();
    let pages: Vec<Part> = (0..4u64).map(|i| part(DATA + i * 8192, 4096)).collect();
    assert!(zerocopy::read(&image, &mem, &pages, 8192).unwrap());
    assert!(zerocopy::write(&image, &mem, &pages, 16384).unwrap());
}

#[test]
fn the_block_0_guard_of_a_probed_raw_image_still_holds() {
    let dir = TempDir::new("zc-guard");
    let (mut h, path) = disk(&dir, false, false);
    let mut d = Driver::new();
    let mut block = vec![0u8; 4096];
    block[..4].copy_from_slice(b"QFI\xfb");
    d.mem.write_slice(&block, GuestAddress(DATA)).unwrap();
    let got = request(&mut h, &mut d, VIRTIO_BLK_T_OUT, 0, &[(DATA, 4096, false)]);
    assert_eq!(got, (IOERR, 1));
    assert_eq!(
        std::fs::read(&path).unwrap()[..4096],
        pattern(SECTORS as usize * 512)[..4096]
    );
    // A harmless block 0 is written.
    block[..4].copy_from_slice(b"boot");
    d.mem.write_slice(&block, GuestAddress(DATA)).unwrap();
    let got = request(&mut h, &mut d, VIRTIO_BLK_T_OUT, 0, &[(DATA, 4096, false)]);
    assert_eq!(got, (OK, 1));
    assert_eq!(std::fs::read(&path).unwrap()[..4096], block[..]);
}
