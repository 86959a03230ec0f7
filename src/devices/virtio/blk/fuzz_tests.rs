//! Random descriptor tables and headers thrown at the request handler: a
//! deterministic pseudo-random run (same seed every time) in which no chain
//! may panic, hang or answer anything but a status the spec defines.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use vm_memory::{Bytes, GuestAddress};

use super::image_tests::TempDir;
use virtio_queue::QueueT;

use super::request::Parts;
use super::tests::{disk, Driver, DATA, DESC, HDR, RAM, RING, SECTORS, STATUS};

/// xorshift64: enough randomness for shapes, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Whether to start the chain somewhere other than descriptor 0.
fn random_head(rng: &mut Rng) -> bool {
    rng.next().is_multiple_of(4)
}

#[test]
fn random_chains_never_panic_and_get_a_defined_status() {
    let dir = TempDir::new("fuzz");
    let (mut h, _) = disk(&dir, false, false);
    let mut d = Driver::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let kinds = [
        VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT,
        VIRTIO_BLK_T_FLUSH,
        VIRTIO_BLK_T_GET_ID,
        VIRTIO_BLK_T_DISCARD,
        VIRTIO_BLK_T_WRITE_ZEROES,
        7,
        u32::MAX,
    ];
    let mut outcomes = [0usize; 4];
    for round in 0..crate::fuzz_support::cases(3000) {
        let sector = rng.pick(&[0, 1, SECTORS - 1, SECTORS, u64::MAX, rng.0 % (2 * SECTORS)]);
        d.header(rng.pick(&kinds), sector);
        // Discard / write-zeroes segments at DATA, random too.
        d.mem
            .write_obj(rng.next() % (2 * SECTORS), GuestAddress(DATA))
            .unwrap();
        d.mem
            .write_obj(rng.next() as u32 % 64, GuestAddress(DATA + 8))
            .unwrap();
        d.mem
            .write_obj(rng.pick(&[0u32, 1, 2]), GuestAddress(DATA + 12))
            .unwrap();
        // Each field is either that of a well-formed chain 0 -> 1 -> 2
        // (header, data, status) or random, so that both shapes occur.
        for index in 0..RING {
            let (addr, len, flags) = match index {
                0 => (HDR, 16, 1),
                1 => (DATA, rng.pick(&[16, 512, 4096]), 1 | rng.pick(&[0, 2])),
                2 => (STATUS, 1, 2),
                _ => (DATA, 512, 2),
            };
            let random = |rng: &mut Rng| rng.next().is_multiple_of(4);
            let addr = if random(&mut rng) {
                rng.pick(&[HDR, DATA + 3, STATUS, RAM - 8, RAM, u64::MAX - 3, rng.0])
            } else {
                addr
            };
            let len = if random(&mut rng) {
                rng.pick(&[0u32, 1, 8, 511, 1 << 20, u32::MAX, rng.0 as u32])
            } else {
                len
            };
            // NEXT, WRITE and INDIRECT at random.
            let flags = if random(&mut rng) {
                rng.next() % 8
            } else {
                flags
            };
            let next = if random(&mut rng) {
                (rng.next() % u64::from(RING + 4)) as u16
            } else {
                index + 1
            };
            let at = GuestAddress(DESC + 16 * u64::from(index));
            d.mem.write_obj(addr, at).unwrap();
            d.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
            d.mem
                .write_obj(flags as u16, GuestAddress(at.0 + 12))
                .unwrap();
            d.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
        }
        let head = if random_head(&mut rng) {
            rng.next() % u64::from(RING)
        } else {
            0
        };
        d.publish(head as u16);
        let chain = d.queue.pop_descriptor_chain(&d.mem).expect("a chain");
        let status_at = Parts::collect(chain.clone()).status;
        let (_, used) = h.serve(&d.mem, chain);
        let status = status_at.and_then(|at| d.mem.read_obj::<u8>(at).ok());
        match (used, status) {
            (0, _) => outcomes[3] += 1,
            (_, Some(s @ 0..=2)) => outcomes[usize::from(s)] += 1,
            other => panic!("round {round}: used length and status {other:?}"),
        }
    }
    // The run reached every outcome: OK, IOERR, UNSUPP and no status.
    assert!(outcomes.iter().all(|n| *n > 0), "{outcomes:?}");
}
