//! MSI-X: the capability layout ([`MsixCapability`]: table size, table and
//! PBA location in BARs) and the runtime ([`Msix`]) owning the vector table
//! and the pending bit array that live in a BAR.
//!
//! The device forwards its BAR accesses to [`Msix::bar_read`] /
//! [`Msix::bar_write`] and its config writes to [`Msix::config_written`].
//! A vector delivers only when MSI-X is enabled, the function mask is clear
//! and its own mask bit is clear; a trigger while masked sets its PBA bit and
//! unmasking fires it and clears the bit. Table accesses of any size and
//! alignment are handled byte by byte; the PBA is read-only.

use thiserror::Error;

use crate::bar::NUM_BARS;
use crate::capability::{CapabilityError, CapabilityPlace, PciCapability, CAP_ID_MSIX};
use crate::config::PciConfig;
use crate::interrupt::{Delivery, InterruptError, MsiMessage, MsiVector, RoutedVector};

/// Largest MSI-X table.
pub const MAX_MSIX_VECTORS: usize = 2048;
/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Message control: MSI-X enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: per-vector mask bit.
const VECTOR_MASKED: u32 = 1;
/// Length of the capability including its header.
const CAP_LEN: usize = 12;

/// Errors of the MSI-X capability and runtime.
#[derive(Debug, Error)]
pub enum MsixError {
    /// Table size must be 1..=2048.
    #[error("MSI-X supports 1..=2048 vectors, not {0}")]
    BadVectorCount(usize),
    /// BAR indicator must name BAR 0..=5.
    #[error("MSI-X structure in BAR {0}, which does not exist")]
    BadBar(u8),
    /// Table and PBA offsets must be 8-byte aligned and fit 32 bits.
    #[error("MSI-X structure offset {0:#x} is not 8-byte aligned or too large")]
    BadOffset(u64),
    /// Table and PBA overlap in the same BAR.
    #[error("MSI-X table and PBA overlap in BAR {0}")]
    Overlap(u8),
    /// The BAR holding the table or PBA is not a memory BAR large enough.
    #[error("MSI-X structure at {offset:#x}+{len:#x} does not fit memory BAR {bar}")]
    DoesNotFitBar {
        /// BAR index.
        bar: u8,
        /// Structure offset in the BAR.
        offset: u64,
        /// Structure length.
        len: u64,
    },
    /// The number of backend vectors differs from the table size.
    #[error("MSI-X table has {expected} entries but {given} vectors were provided")]
    VectorCountMismatch {
        /// Table entries.
        expected: usize,
        /// Vectors provided.
        given: usize,
    },
    /// The vector index is beyond the table.
    #[error("MSI-X vector {0} does not exist")]
    NoSuchVector(usize),
    /// The capability could not be added to config space.
    #[error("cannot add the MSI-X capability")]
    Capability(#[from] CapabilityError),
    /// The interrupt backend failed.
    #[error("MSI-X interrupt backend failed")]
    Interrupt(#[from] InterruptError),
}

/// Layout of an MSI-X capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCapability {
    /// Number of table entries.
    vectors: usize,
    /// BAR holding the table.
    table_bar: u8,
    /// Offset of the table in its BAR.
    table_offset: u32,
    /// BAR holding the PBA.
    pba_bar: u8,
    /// Offset of the PBA in its BAR.
    pba_offset: u32,
}

impl MsixCapability {
    /// Describes an MSI-X capability with `vectors` entries, the table at
    /// `table_offset` in BAR `table_bar` and the PBA at `pba_offset` in BAR `pba_bar`.
    pub fn new(
        vectors: usize,
        table_bar: u8,
        table_offset: u64,
        pba_bar: u8,
        pba_offset: u64,
    ) -> Result<Self, MsixError> {
        if vectors == 0 || vectors > MAX_MSIX_VECTORS {
            return Err(MsixError::BadVectorCount(vectors));
        }
        for bar in [table_bar, pba_bar] {
            if usize::from(bar) >= NUM_BARS {
                return Err(MsixError::BadBar(bar));
            }
        }
        let check = |offset: u64| {
            u32::try_from(offset)
                .ok()
                .filter(|o| o % 8 == 0)
                .ok_or(MsixError::BadOffset(offset))
        };
        let cap = MsixCapability {
            vectors,
            table_bar,
            table_offset: check(table_offset)?,
            pba_bar,
            pba_offset: check(pba_offset)?,
        };
        if table_bar == pba_bar {
            let (t, p) = (cap.table_range(), cap.pba_range());
            if t.start < p.end && p.start < t.end {
                return Err(MsixError::Overlap(table_bar));
            }
        }
        Ok(cap)
    }

    /// Number of table entries.
    pub fn vectors(&self) -> usize {
        self.vectors
    }

    /// Byte range of the table in its BAR.
    pub fn table_range(&self) -> std::ops::Range<u64> {
        let start = u64::from(self.table_offset);
        // At most 2048 * 16 bytes: no overflow.
        start..start + self.vectors as u64 * MSIX_ENTRY_SIZE
    }

    /// Byte range of the PBA in its BAR (one bit per vector, whole qwords).
    pub fn pba_range(&self) -> std::ops::Range<u64> {
        let start = u64::from(self.pba_offset);
        start..start + self.vectors.div_ceil(64) as u64 * 8
    }

    /// BAR holding the table.
    pub fn table_bar(&self) -> u8 {
        self.table_bar
    }

    /// BAR holding the PBA.
    pub fn pba_bar(&self) -> u8 {
        self.pba_bar
    }
}

impl PciCapability for MsixCapability {
    fn id(&self) -> u8 {
        CAP_ID_MSIX
    }

    fn body(&self) -> Vec<u8> {
        // Table size is encoded as N-1 (at most 2047).
        let control = (self.vectors - 1) as u16;
        let mut body = Vec::with_capacity(CAP_LEN - 2);
        body.extend_from_slice(&control.to_le_bytes());
        body.extend_from_slice(&(self.table_offset | u32::from(self.table_bar)).to_le_bytes());
        body.extend_from_slice(&(self.pba_offset | u32::from(self.pba_bar)).to_le_bytes());
        body
    }

    fn write_mask(&self) -> Vec<u8> {
        (CONTROL_ENABLE | CONTROL_FUNCTION_MASK)
            .to_le_bytes()
            .to_vec()
    }
}

/// One MSI-X table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message address, low dword.
    pub address_low: u32,
    /// Message address, high dword.
    pub address_high: u32,
    /// Message data.
    pub data: u32,
    /// Vector control (bit 0: masked).
    pub control: u32,
}

impl MsixEntry {
    /// Entry state at reset: zero message, masked.
    const RESET: MsixEntry = MsixEntry {
        address_low: 0,
        address_high: 0,
        data: 0,
        control: VECTOR_MASKED,
    };

    /// Whether the vector's own mask bit is set.
    pub fn masked(&self) -> bool {
        self.control & VECTOR_MASKED != 0
    }

    /// The message the entry holds.
    pub fn message(&self) -> MsiMessage {
        MsiMessage {
            address: (u64::from(self.address_high) << 32) | u64::from(self.address_low),
            data: self.data,
        }
    }

    /// Dword `index` (0..=3) of the entry.
    fn dword(&self, index: u64) -> u32 {
        match index {
            0 => self.address_low,
            1 => self.address_high,
            2 => self.data,
            _ => self.control,
        }
    }

    /// Stores dword `index`, keeping reserved vector control bits at zero.
    fn set_dword(&mut self, index: u64, value: u32) {
        match index {
            0 => self.address_low = value,
            1 => self.address_high = value,
            2 => self.data = value,
            _ => self.control = value & VECTOR_MASKED,
        }
    }
}

/// Runtime state of a function's MSI-X capability.
pub struct Msix {
    /// Capability layout.
    cap: MsixCapability,
    /// Offset of the capability in config space.
    offset: usize,
    /// The vector table.
    table: Vec<MsixEntry>,
    /// Pending bit array.
    pba: Vec<u64>,
    /// The backend's vectors, one per table entry.
    vectors: Vec<RoutedVector>,
    /// MSI-X enable, as of the last config sync.
    enabled: bool,
    /// Function mask, as of the last config sync.
    function_masked: bool,
}

impl Msix {
    /// Adds the MSI-X capability to `config` where `place` says and takes
    /// ownership of `vectors` (one per table entry). The BARs holding the
    /// table and PBA must already be declared in `config` as memory BARs
    /// large enough.
    pub fn add(
        config: &mut PciConfig,
        place: CapabilityPlace,
        cap: MsixCapability,
        vectors: Vec<Box<dyn MsiVector>>,
    ) -> Result<Self, MsixError> {
        Self::check(config, &cap, vectors.len())?;
        let offset = config.place_capability(&cap, place)?;
        Ok(Self::with_vectors(cap, offset, vectors))
    }

    /// Checks the vector count and that the table and PBA fit declared memory BARs.
    fn check(config: &PciConfig, cap: &MsixCapability, given: usize) -> Result<(), MsixError> {
        if given != cap.vectors {
            return Err(MsixError::VectorCountMismatch {
                expected: cap.vectors,
                given,
            });
        }
        for (bar, range) in [
            (cap.table_bar, cap.table_range()),
            (cap.pba_bar, cap.pba_range()),
        ] {
            let fits = config
                .bar(usize::from(bar))
                .is_some_and(|def| def.kind.is_memory() && range.end <= def.size);
            if !fits {
                return Err(MsixError::DoesNotFitBar {
                    bar,
                    offset: range.start,
                    len: range.end - range.start,
                });
            }
        }
        Ok(())
    }

    /// The runtime state for a capability already written at `offset`.
    fn with_vectors(cap: MsixCapability, offset: usize, vectors: Vec<Box<dyn MsiVector>>) -> Self {
        Msix {
            cap,
            offset,
            table: vec![MsixEntry::RESET; cap.vectors],
            pba: vec![0; cap.vectors.div_ceil(64)],
            vectors: vectors.into_iter().map(RoutedVector::new).collect(),
            enabled: false,
            function_masked: false,
        }
    }

    /// The capability layout.
    pub fn capability(&self) -> &MsixCapability {
        &self.cap
    }

    /// Offset of the capability in config space.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Whether the guest enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the guest set the function mask.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Table entry `index`.
    pub fn entry(&self, index: usize) -> Option<MsixEntry> {
        self.table.get(index).copied()
    }

    /// Whether vector `index` has its pending bit set.
    pub fn pending(&self, index: usize) -> bool {
        self.pba
            .get(index / 64)
            .is_some_and(|qword| qword & (1 << (index % 64)) != 0)
    }

    /// The backend vector `index` (for its eventfd).
    pub fn vector(&self, index: usize) -> Option<&dyn MsiVector> {
        self.vectors.get(index).map(RoutedVector::vector)
    }

    /// Sets or clears the pending bit of vector `index` (in range).
    fn set_pending(&mut self, index: usize, pending: bool) {
        if let Some(qword) = self.pba.get_mut(index / 64) {
            let bit = 1u64 << (index % 64);
            if pending {
                *qword |= bit;
            } else {
                *qword &= !bit;
            }
        }
    }

    /// Call after every guest config write of `len` bytes at `offset`;
    /// applies enable and function mask changes if the write touched them.
    pub fn config_written(
        &mut self,
        config: &PciConfig,
        offset: usize,
        len: usize,
    ) -> Result<(), MsixError> {
        let end = offset.saturating_add(len);
        if end <= self.offset || offset >= self.offset + CAP_LEN {
            return Ok(());
        }
        let control = config.read_u16(self.offset + 2);
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        for index in 0..self.table.len() {
            self.sync_vector(index)?;
        }
        Ok(())
    }

    /// Brings vector `index` in line with the table and control bits,
    /// firing it if it became deliverable with its pending bit set.
    fn sync_vector(&mut self, index: usize) -> Result<(), MsixError> {
        let Some(entry) = self.table.get(index).copied() else {
            return Ok(());
        };
        let active = self.enabled && !self.function_masked && !entry.masked();
        if let Some(vector) = self.vectors.get_mut(index) {
            vector.apply(active, entry.message())?;
        }
        if active && self.pending(index) {
            self.set_pending(index, false);
            if let Some(vector) = self.vectors.get(index) {
                vector.trigger()?;
            }
        }
        Ok(())
    }

    /// Guest read of the vector table at `offset` (relative to the table).
    /// Bytes outside the table read as zero.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, out) in data.iter_mut().enumerate() {
            *out = offset
                .checked_add(i as u64)
                .and_then(|o| {
                    let entry = self.table.get(usize::try_from(o / MSIX_ENTRY_SIZE).ok()?)?;
                    let dword = entry.dword((o % MSIX_ENTRY_SIZE) / 4);
                    dword
                        .to_le_bytes()
                        .get(usize::try_from(o % 4).ok()?)
                        .copied()
                })
                .unwrap_or(0);
        }
    }

    /// Guest write of the vector table at `offset` (relative to the table).
    /// Bytes outside the table are dropped; touched vectors are re-synced.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) -> Result<(), MsixError> {
        let mut touched: Option<(usize, usize)> = None;
        for (i, value) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i as u64) else {
                break;
            };
            let Some(index) = usize::try_from(o / MSIX_ENTRY_SIZE).ok() else {
                break;
            };
            let Some(entry) = self.table.get_mut(index) else {
                break;
            };
            let field = (o % MSIX_ENTRY_SIZE) / 4;
            let mut bytes = entry.dword(field).to_le_bytes();
            if let Some(byte) = usize::try_from(o % 4).ok().and_then(|b| bytes.get_mut(b)) {
                *byte = *value;
            }
            entry.set_dword(field, u32::from_le_bytes(bytes));
            touched = Some(touched.map_or((index, index), |(lo, _)| (lo, index)));
        }
        if let Some((first, last)) = touched {
            for index in first..=last {
                self.sync_vector(index)?;
            }
        }
        Ok(())
    }

    /// Guest read of the PBA at `offset` (relative to the PBA); zero outside.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, out) in data.iter_mut().enumerate() {
            *out = offset
                .checked_add(i as u64)
                .and_then(|o| {
                    let qword = self.pba.get(usize::try_from(o / 8).ok()?)?;
                    qword
                        .to_le_bytes()
                        .get(usize::try_from(o % 8).ok()?)
                        .copied()
                })
                .unwrap_or(0);
        }
    }

    /// Serves a read of BAR `bar` at `offset` if it falls in the table or
    /// PBA; returns false (leaving `data` alone) otherwise.
    pub fn bar_read(&self, bar: usize, offset: u64, data: &mut [u8]) -> bool {
        if let Some(rel) = self.relative(bar, self.cap.table_bar, self.cap.table_range(), offset) {
            self.table_read(rel, data);
            true
        } else if let Some(rel) = self.relative(bar, self.cap.pba_bar, self.cap.pba_range(), offset)
        {
            self.pba_read(rel, data);
            true
        } else {
            false
        }
    }

    /// Serves a write to BAR `bar` at `offset` if it falls in the table or
    /// PBA (PBA writes are ignored); returns Ok(false) otherwise.
    pub fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) -> Result<bool, MsixError> {
        if let Some(rel) = self.relative(bar, self.cap.table_bar, self.cap.table_range(), offset) {
            self.table_write(rel, data)?;
            Ok(true)
        } else {
            Ok(self
                .relative(bar, self.cap.pba_bar, self.cap.pba_range(), offset)
                .is_some())
        }
    }

    /// Offset relative to `range` when the access at `offset` of BAR `bar`
    /// starts inside it.
    fn relative(
        &self,
        bar: usize,
        want: u8,
        range: std::ops::Range<u64>,
        offset: u64,
    ) -> Option<u64> {
        (bar == usize::from(want) && range.contains(&offset)).then(|| offset - range.start)
    }

    /// Signals vector `index`: injected, latched in the PBA (masked), or
    /// dropped (MSI-X disabled).
    pub fn trigger(&mut self, index: usize) -> Result<Delivery, MsixError> {
        let Some(entry) = self.table.get(index).copied() else {
            return Err(MsixError::NoSuchVector(index));
        };
        if !self.enabled {
            return Ok(Delivery::Dropped);
        }
        if self.function_masked || entry.masked() {
            self.set_pending(index, true);
            return Ok(Delivery::Pending);
        }
        if let Some(vector) = self.vectors.get(index) {
            vector.trigger()?;
        }
        Ok(Delivery::Sent)
    }
}
