//! Counters a passed-through device keeps so the VMM can say at exit how
//! close to bare metal it ran: BAR accesses that trapped into the VMM (per
//! BAR; zero is the goal for mmapped BARs), MSI-X table/PBA accesses
//! (emulated by design), interrupts this process injected itself instead of
//! the kernel's irqfd path (zero is the goal), and interrupt mode switches.
//!
//! Interrupts are counted by wrapping every vector and INTx line the device
//! gets from the [`crate::InterruptManager`]: all injections by this process
//! go through `trigger`/`assert`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use iommu::size::format_size;

use crate::bar::{BarKind, NUM_BAR_SLOTS, ROM_BAR};
use crate::interrupt::{InterruptError, IntxLine, MsiMessage, MsiVector};
use crate::vfio::irq::IrqMode;

/// Static facts about one BAR, recorded at attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarSummary {
    /// BAR index (or [`ROM_BAR`]).
    pub bar: usize,
    /// Kind of BAR.
    pub kind: BarKind,
    /// Size in bytes.
    pub size: u64,
    /// Bytes mapped straight into the guest.
    pub mapped: u64,
    /// Number of guest memory slots used.
    pub slots: usize,
}

/// Live counters of one device, shared with the VMM.
#[derive(Debug, Default)]
pub struct VfioStats {
    /// Trapped reads per BAR slot.
    reads: [AtomicU64; NUM_BAR_SLOTS],
    /// Trapped writes per BAR slot.
    writes: [AtomicU64; NUM_BAR_SLOTS],
    /// Emulated MSI-X table and PBA accesses.
    msix: AtomicU64,
    /// Interrupts injected by this process.
    relayed: AtomicU64,
    /// Interrupt mode switches.
    switches: AtomicU64,
    /// Mode in force and BAR facts.
    info: Mutex<(Option<IrqMode>, Vec<BarSummary>)>,
}

impl VfioStats {
    /// Counts a trapped read of BAR `bar`.
    pub fn trapped_read(&self, bar: usize) {
        if let Some(c) = self.reads.get(bar) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a trapped write of BAR `bar`.
    pub fn trapped_write(&self, bar: usize) {
        if let Some(c) = self.writes.get(bar) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an MSI-X table or PBA access.
    pub fn msix_access(&self) {
        self.msix.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an interrupt this process injected.
    pub fn relayed(&self) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a switch to `mode`.
    pub fn switched(&self, mode: IrqMode) {
        self.switches.fetch_add(1, Ordering::Relaxed);
        self.info.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(mode);
    }

    /// Records the BARs as attached.
    pub fn set_bars(&self, bars: Vec<BarSummary>) {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).1 = bars;
    }

    /// Trapped `(reads, writes)` of BAR `bar`.
    pub fn trapped(&self, bar: usize) -> (u64, u64) {
        let get =
            |a: &[AtomicU64; NUM_BAR_SLOTS]| a.get(bar).map_or(0, |c| c.load(Ordering::Relaxed));
        (get(&self.reads), get(&self.writes))
    }

    /// Emulated MSI-X table and PBA accesses.
    pub fn msix_accesses(&self) -> u64 {
        self.msix.load(Ordering::Relaxed)
    }

    /// Interrupts injected by this process (not through irqfd).
    pub fn relayed_interrupts(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// Interrupt mode switches.
    pub fn irq_switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// A multi-line report for the exit summary, one line per BAR plus
    /// interrupts, each line prefixed with `name`.
    pub fn report(&self, name: &str) -> String {
        let (mode, bars) = self.info.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::new();
        for b in &bars {
            let (reads, writes) = self.trapped(b.bar);
            let label = if b.bar == ROM_BAR {
                "ROM".to_string()
            } else {
                format!("BAR{}", b.bar)
            };
            // A BAR mapped whole says so in one size; one with trapped parts
            // (MSI-X table/PBA pages, unmappable regions) gives both sizes.
            let mapped = if b.mapped == b.size {
                format_size(b.size)
            } else {
                format!("{}, {}", format_size(b.size), format_size(b.mapped))
            };
            let _ = writeln!(
                out,
                "{name} {label}: {}, {mapped} mapped in {} slot(s), trapped accesses: {reads} reads, {writes} writes",
                b.kind, b.slots,
            );
        }
        let _ = writeln!(
            out,
            "{name} interrupts: mode {}, {} switch(es), relayed by vfio-vmm: {} (the rest went by irqfd), MSI-X table/PBA accesses: {}",
            mode.unwrap_or(IrqMode::Off),
            self.irq_switches(),
            self.relayed_interrupts(),
            self.msix_accesses(),
        );
        out
    }
}

/// An MSI vector that counts the injections this process makes.
pub struct CountingVector {
    /// The backend's vector.
    inner: Box<dyn MsiVector>,
    /// Where injections are counted.
    stats: Arc<VfioStats>,
}

impl CountingVector {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn MsiVector>, stats: Arc<VfioStats>) -> Self {
        CountingVector { inner, stats }
    }
}

impl MsiVector for CountingVector {
    fn set_route(&mut self, msg: MsiMessage) -> Result<(), InterruptError> {
        self.inner.set_route(msg)
    }

    fn mask(&mut self) -> Result<(), InterruptError> {
        self.inner.mask()
    }

    fn unmask(&mut self) -> Result<(), InterruptError> {
        self.inner.unmask()
    }

    fn trigger(&self) -> Result<(), InterruptError> {
        self.stats.relayed();
        self.inner.trigger()
    }

    fn eventfd(&self) -> Option<&EventFd> {
        self.inner.eventfd()
    }
}

/// An INTx line that counts the assertions this process makes.
pub struct CountingLine {
    /// The backend's line.
    inner: Box<dyn IntxLine>,
    /// Where assertions are counted.
    stats: Arc<VfioStats>,
}

impl CountingLine {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn IntxLine>, stats: Arc<VfioStats>) -> Self {
        CountingLine { inner, stats }
    }
}

impl IntxLine for CountingLine {
    fn assert(&self) -> Result<(), InterruptError> {
        self.stats.relayed();
        self.inner.assert()
    }

    fn deassert(&self) -> Result<(), InterruptError> {
        self.inner.deassert()
    }

    fn irq(&self) -> u8 {
        self.inner.irq()
    }

    fn eventfd(&self) -> Option<&EventFd> {
        self.inner.eventfd()
    }

    fn resample_eventfd(&self) -> Option<&EventFd> {
        self.inner.resample_eventfd()
    }
}
