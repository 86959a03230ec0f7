//! An address bus (one for I/O ports, one for MMIO): fixed ranges, each owned
//! by a device that sees accesses as offsets into its range.

use std::sync::{Arc, Mutex};

/// A device on a bus. Offsets are relative to the start of its range.
pub trait BusDevice: Send {
    /// A guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors while building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Two devices claim overlapping ranges.
    #[error("bus range {base:#x}+{len:#x} overlaps a range already registered")]
    Overlap {
        /// Start of the refused range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// A zero-length or wrapping range.
    #[error("bad bus range {base:#x}+{len:#x}")]
    BadRange {
        /// Start of the refused range.
        base: u64,
        /// Its length.
        len: u64,
    },
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Ranges sorted by base; lookups are a binary search.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `device` the range [base, base + len).
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        let at = self.entries.partition_point(|e| e.base < base);
        let clashes_prev = at > 0 && self.entries[at - 1].base + self.entries[at - 1].len > base;
        let clashes_next = self.entries.get(at).is_some_and(|e| e.base < end);
        if clashes_prev || clashes_next {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.insert(at, Entry { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let at = self
            .entries
            .partition_point(|e| e.base <= addr)
            .checked_sub(1)?;
        let e = &self.entries[at];
        let offset = addr - e.base;
        (offset.checked_add(size as u64)? <= e.len).then_some((e, offset))
    }

    /// Routes a read; returns false (and leaves `data` alone) if no device owns `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                e.device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Routes a write; returns false if no device owns `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                e.device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_owner_at_their_offset() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, b"x"));
        assert_eq!(dev.lock().unwrap().writes, vec![(0, vec![b'x'])]);
    }

    #[test]
    fn misses_and_straddling_accesses_are_not_routed() {
        let mut bus = Bus::new();
        bus.insert(0x100, 4, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        let mut b = [0xaau8; 2];
        assert!(!bus.read(0xff, &mut b[..1]));
        assert!(!bus.read(0x103, &mut b));
        assert!(!bus.write(0x104, &[1]));
        assert_eq!(b, [0xaa, 0xaa]);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x100, 0x10, d()).unwrap();
        assert_eq!(
            bus.insert(0x10f, 1, d()),
            Err(BusError::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(0xf0, 0x11, d()),
            Err(BusError::Overlap {
                base: 0xf0,
                len: 0x11
            })
        );
        assert!(bus.insert(0x110, 1, d()).is_ok());
        assert!(bus.insert(0xf0, 0x10, d()).is_ok());
        assert_eq!(
            bus.insert(u64::MAX, 2, d()),
            Err(BusError::BadRange {
                base: u64::MAX,
                len: 2
            })
        );
    }
}
