//! Fuzz target of the descriptor chain path of virtio-net: random
//! descriptor tables (lengths, flags, next indices, indirect tables, buffers
//! outside RAM) and available rings, walked as the net worker walks them
//! (`next_chain`, `Segments::collect`, `gather` for transmit, `scatter` for
//! receive, `add_used`). A seeded structured random test (see
//! `pci/src/tests/fuzz_support.rs`).

use arbitrary::Unstructured;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::queue::{ChainError, Segments};
use super::thread::next_chain;
use super::worker::MAX_FRAME;
use crate::fuzz_support::run;
use crate::memory::GuestMemory;

/// Guest RAM size, ring size and where the rings and an indirect table live.
const RAM: u64 = 0x1_0000;
const RING: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const INDIRECT: u64 = 0x4000;

/// A descriptor address: in RAM, at its edges, past it, or anything.
fn address(u: &mut Unstructured) -> arbitrary::Result<u64> {
    let picks = [
        0x8000,
        0x8003,
        RAM - 12,
        RAM - 1,
        RAM,
        INDIRECT,
        u64::MAX - 3,
        DESC,
    ];
    Ok(match u.ratio(1u8, 4)? {
        true => u.arbitrary()?,
        false => *u.choose(&picks)?,
    })
}

/// Writes a random descriptor table, indirect table and available ring.
fn guest_rings(u: &mut Unstructured, mem: &GuestMemory) -> arbitrary::Result<()> {
    for (table, count) in [(DESC, RING), (INDIRECT, 8)] {
        for i in 0..count {
            let at = table + 16 * u64::from(i);
            let len: u32 = match u.ratio(1u8, 3)? {
                true => u.arbitrary()?,
                false => *u.choose(&[0, 1, 12, 1514, 4096, 65_562, u32::MAX])?,
            };
            let flags = u16::from(u.int_in_range(0u8..=7)?);
            let next = u16::from(u.int_in_range(0u8..=(RING as u8 + 2))?);
            mem.write_obj(address(u)?, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
    }
    let published = u.int_in_range(0u16..=RING + 4)?;
    for slot in 0..u64::from(RING) {
        let head = u16::from(u.int_in_range(0u8..=(RING as u8 + 2))?);
        mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
    }
    mem.write_obj(published, GuestAddress(AVAIL + 2)).unwrap();
    Ok(())
}

fn queue(event_idx: bool) -> Queue {
    let mut q = Queue::new(RING).unwrap();
    q.set_size(RING);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

/// Chains are popped until the ring is empty or broken: never more than
/// the ring holds, never a panic; a gathered frame is at most MAX_FRAME
/// bytes and a scattered one is refused only when the chain is too short.
#[test]
fn fuzz_net_chains() {
    let mut frame = Vec::with_capacity(MAX_FRAME);
    run("fuzz_net_chains", 2000, |u: &mut Unstructured| {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        guest_rings(u, &mem)?;
        let mut q = queue(u.arbitrary()?);
        let receive: bool = u.arbitrary()?;
        let data = vec![0x42u8; usize::from(u.arbitrary::<u16>()?)];
        let mut popped = 0;
        while let Ok(Some(chain)) = next_chain(&mut q, &mem) {
            popped += 1;
            assert!(popped <= RING, "more chains than the ring holds");
            let segments = Segments::collect(chain, receive);
            let written = match receive {
                true => match segments.scatter(&mem, &data) {
                    Ok(()) => data.len() as u32,
                    Err(ChainError::TooShort { room, .. }) => {
                        assert!(room < data.len());
                        0
                    }
                    Err(_) => break,
                },
                false => match segments.gather(&mem, MAX_FRAME, &mut frame) {
                    Ok(()) => {
                        assert!(frame.len() <= MAX_FRAME);
                        0
                    }
                    Err(ChainError::TooLong { .. }) => 0,
                    Err(_) => break,
                },
            };
            if q.add_used(&mem, segments.head, written).is_err() {
                break;
            }
        }
        Ok(())
    });
}
