//! Batches of requests: which run at once, that flushes and other barriers
//! split them, and that a batch of reads, writes and a flush gives each
//! request its own status and data.

use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::batch::{groups, IO_THREADS};
use super::image_tests::{pattern, TempDir};
use super::request::Handler;
use super::tests::{disk, Buf, Driver, DATA, HDR, OK, SECTORS, UNTOUCHED};

#[test]
fn barriers_split_a_batch_and_runs_stay_in_order() {
    assert_eq!(groups(&[]), vec![]);
    assert_eq!(groups(&[true]), vec![0..1]);
    // write, write, flush, write, read, discard
    let g = groups(&[true, true, false, true, true, false]);
    assert_eq!(g, vec![0..2, 2..3, 3..5, 5..6]);
    assert_eq!(groups(&[false, false]), vec![0..1, 1..2]);
}

/// Queues a request with its own header at `HDR + 64 * slot` and status
/// byte at `STATUS_BASE + slot`.
fn queue(d: &mut Driver, slot: u64, kind: u32, sector: u64, data: Option<Buf>) {
    let hdr = HDR + 64 * slot;
    d.mem.write_obj(kind, GuestAddress(hdr)).unwrap();
    d.mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
    d.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
    let status = STATUS_BASE + slot;
    d.mem.write_obj(UNTOUCHED, GuestAddress(status)).unwrap();
    let mut bufs = vec![(hdr, 16, false)];
    bufs.extend(data);
    bufs.push((status, 1, true));
    d.push(&bufs);
}

/// Where the status bytes of [`queue`] go.
const STATUS_BASE: u64 = 0x30000;

/// Pops every queued chain and serves them as one batch; checks each got
/// OK and the used length `used(i)`.
fn serve_all(h: &mut Handler, d: &mut Driver, used: impl Fn(usize) -> u32) {
    let mut chains = Vec::new();
    while let Some(c) = d.queue.pop_descriptor_chain(&d.mem) {
        chains.push(c);
    }
    let heads: Vec<u16> = chains.iter().map(|c| c.head_index()).collect();
    let want: Vec<(u16, u32)> = heads
        .iter()
        .enumerate()
        .map(|(i, h)| (*h, used(i)))
        .collect();
    assert_eq!(h.serve_batch(&d.mem, chains), want);
    for slot in 0..heads.len() as u64 {
        let status: u8 = d.mem.read_obj(GuestAddress(STATUS_BASE + slot)).unwrap();
        assert_eq!(status, OK, "request {slot}");
    }
}

#[test]
fn a_batch_of_writes_a_flush_and_reads_serves_each_request() {
    let dir = TempDir::new("batch");
    let len = 64 * 1024u32;
    let n = len as usize;
    let sector = |i: u64| 1024 + i * 128;
    for direct in [false, true] {
        let (mut h, path) = disk(&dir, false, direct);
        let mut d = Driver::new();
        // Two writes of distinct bytes, a flush, two reads of them back
        // (14 descriptors of the fake ring's 16).
        for i in 0..2u64 {
            let src = DATA + i * 0x20000;
            d.mem
                .write_slice(&vec![0x10 + i as u8; n], GuestAddress(src))
                .unwrap();
            queue(
                &mut d,
                i,
                VIRTIO_BLK_T_OUT,
                sector(i),
                Some((src, len, false)),
            );
        }
        queue(&mut d, 2, VIRTIO_BLK_T_FLUSH, 0, None);
        for i in 0..2u64 {
            let dst = DATA + 0x400000 + i * 0x20000;
            queue(
                &mut d,
                3 + i,
                VIRTIO_BLK_T_IN,
                sector(i),
                Some((dst, len, true)),
            );
        }
        serve_all(&mut h, &mut d, |i| if i >= 3 { len + 1 } else { 1 });
        let file = std::fs::read(&path).unwrap();
        for i in 0..2u64 {
            let at = sector(i) as usize * 512;
            let want = vec![0x10 + i as u8; n];
            assert_eq!(file[at..at + n], want[..]);
            let mut got = vec![0u8; n];
            d.mem
                .read_slice(&mut got, GuestAddress(DATA + 0x400000 + i * 0x20000))
                .unwrap();
            assert_eq!(got, want, "read {i}, direct={direct}");
        }
        // More reads than I/O threads share them out.
        let reads = 5u64;
        assert!(reads as usize > IO_THREADS);
        for i in 0..reads {
            queue(
                &mut d,
                i,
                VIRTIO_BLK_T_IN,
                2048 + i * 8,
                Some((DATA + i * 0x10000, 4096, true)),
            );
        }
        serve_all(&mut h, &mut d, |_| 4097);
        let all = pattern(SECTORS as usize * 512);
        for i in 0..reads {
            let mut got = vec![0u8; 4096];
            d.mem
                .read_slice(&mut got, GuestAddress(DATA + i * 0x10000))
                .unwrap();
            let at = (2048 + i as usize * 8) * 512;
            assert_eq!(got[..], all[at..at + 4096], "read {i}, direct={direct}");
        }
        // The rest of the disk is untouched.
        assert_eq!(file[..1024 * 512], all[..1024 * 512]);
        drop(h);
    }
}
