//! Several virtio-blk requests in flight: the worker pops every chain the
//! guest queued and serves them here as one batch. Reads and writes of a
//! raw image next to each other in the batch run at once on up to
//! [`IO_THREADS`] threads (scoped threads, each with its own bounce
//! buffer, as fio's queue depth 4 and QEMU's thread pool would have them);
//! every other request (flush, discard, write zeroes, GET_ID, errors) is a
//! barrier, served alone after everything popped before it completed and
//! before anything popped after it starts. So a flush covers every write
//! completed before it was popped, as virtio 1.2 section 5.2.6.4 asks.
//!
//! Written by hand: rust-vmm has no virtio-blk request engine.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::warn;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use virtio_queue::DescriptorChain;
use vm_memory::GuestAddress;

use super::image::AlignedBuf;
use super::request::{Handler, Parts, CHUNK};
use crate::memory::GuestMemory;

/// Requests of one batch served at once, at most.
pub const IO_THREADS: usize = 4;

/// A popped request: its head and buffers, and, for a read or write that
/// may run beside others, what its checked header said.
struct Popped {
    /// Head index.
    head: u16,
    /// Its buffers.
    parts: Parts,
    /// (status byte, type, sector) of a checked read or write of a raw image.
    data: Option<(GuestAddress, u32, u64)>,
}

/// A checked read or write of a batch, ready to run beside others.
struct DataRequest<'a> {
    /// Head index.
    head: u16,
    /// Its buffers.
    parts: &'a Parts,
    /// Where its status byte goes.
    status_at: GuestAddress,
    /// VIRTIO_BLK_T_IN or VIRTIO_BLK_T_OUT.
    kind: u32,
    /// First sector.
    sector: u64,
}

/// Splits a batch into what runs together: a run of requests that may run
/// at once (`true`), or one request alone.
pub fn groups(parallel: &[bool]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < parallel.len() {
        let run = parallel[i..].iter().take_while(|p| **p).count().max(1);
        out.push(i..i + run);
        i += run;
    }
    out
}

impl Handler {
    /// Serves the requests of `chains`, popped in this order; returns the
    /// head and used length of each, in the same order.
    pub fn serve_batch<'m>(
        &mut self,
        mem: &'m GuestMemory,
        chains: Vec<DescriptorChain<&'m GuestMemory>>,
    ) -> Vec<(u16, u32)> {
        let popped: Vec<Popped> = chains
            .into_iter()
            .map(|chain| {
                let head = chain.head_index();
                let parts = Parts::collect(chain);
                let data = self.data_request(mem, head, &parts);
                Popped { head, parts, data }
            })
            .collect();
        let parallel: Vec<bool> = popped.iter().map(|p| p.data.is_some()).collect();
        let mut used = Vec::with_capacity(popped.len());
        for range in groups(&parallel) {
            match &popped[range] {
                [one] => used.push(self.serve_parts(mem, one.head, &one.parts)),
                many => {
                    let reqs: Vec<DataRequest> = many
                        .iter()
                        .filter_map(|p| {
                            let (status_at, kind, sector) = p.data?;
                            Some(DataRequest {
                                head: p.head,
                                parts: &p.parts,
                                status_at,
                                kind,
                                sector,
                            })
                        })
                        .collect();
                    used.extend(self.serve_at_once(mem, &reqs));
                }
            }
        }
        used
    }

    /// (status byte, type, sector) if the chain is a valid read or write of
    /// a raw image with a status byte: what may run beside others.
    fn data_request(
        &self,
        mem: &GuestMemory,
        head: u16,
        parts: &Parts,
    ) -> Option<(GuestAddress, u32, u64)> {
        self.image.zero_copy_read_file()?;
        let status_at = self.status_at(mem, head, parts)?;
        let (kind, sector) = self.check(mem, parts).ok()?;
        matches!(kind, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT).then_some((status_at, kind, sector))
    }

    /// Serves `reqs` on up to [`IO_THREADS`] threads,
    /// this one included; a thread that cannot start leaves its share to
    /// the others.
    fn serve_at_once(&mut self, mem: &GuestMemory, reqs: &[DataRequest]) -> Vec<(u16, u32)> {
        let threads = reqs.len().min(IO_THREADS);
        while self.spare.len() < threads {
            self.spare.push(AlignedBuf::new(CHUNK));
        }
        let mut spare = std::mem::take(&mut self.spare);
        let next = AtomicUsize::new(0);
        let mut used = vec![(0u16, 0u32); reqs.len()];
        let this = &*self;
        let serve = |buf: &mut AlignedBuf| {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = reqs.get(i) else {
                    return done;
                };
                let result = this.data(buf, mem, r.parts, r.kind, r.sector);
                done.push((i, this.finish(mem, r.head, r.status_at, result)));
            }
        };
        std::thread::scope(|s| {
            let (mine, others) = spare.split_at_mut(1);
            let helpers: Vec<_> = others[..threads - 1]
                .iter_mut()
                .filter_map(|buf| {
                    let spawned = std::thread::Builder::new()
                        .name("virtio-blk-io".into())
                        .spawn_scoped(s, || serve(buf));
                    spawned
                        .map_err(|e| warn!("virtio-blk: cannot start an I/O thread: {e}"))
                        .ok()
                })
                .collect();
            let mut all = serve(&mut mine[0]);
            for h in helpers {
                // A panic here is a bug: pass it on as the one-thread code would.
                all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            for (i, head_len) in all {
                used[i] = head_len;
            }
        });
        self.spare = spare;
        used
    }
}
