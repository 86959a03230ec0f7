//! Fakes for the VFIO device tests: a VFIO device with memory-backed regions
//! that logs interrupt and reset calls, an interrupt manager whose vectors
//! and lines carry real eventfds, and a guest mapper that records slots.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::device::PciAddress;
use crate::interrupt::{
    InterruptError, InterruptManager, IntxLine, IntxPin, MsiMessage, MsiVector,
};
use crate::vfio::ops::{
    Area, GuestMapper, MapError, MappedArea, RegionInfo, ResetOutcome, SlotId, VfioDeviceOps,
    VfioOpsError, CONFIG_REGION,
};

/// A call the fake device received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `enable_irq(index, fds)` with the raw fd numbers.
    Enable(u32, Vec<i32>),
    /// `disable_irq(index)`.
    Disable(u32),
    /// `set_intx_resample(fd)`.
    Resample(i32),
    /// `reset()`.
    Reset,
    /// `mmap(index, area)`.
    Mmap(u32, Area),
    /// A write to a region: `(index, offset, data)`.
    Write(u32, u64, Vec<u8>),
}

/// A VFIO device whose regions are byte vectors.
pub struct FakeVfio {
    /// Region info by index.
    pub regions: BTreeMap<u32, RegionInfo>,
    /// Region contents by index.
    pub memory: Mutex<BTreeMap<u32, Vec<u8>>>,
    /// Interrupt counts by index.
    pub irqs: BTreeMap<u32, u32>,
    /// Whether reset is supported.
    pub resettable: bool,
    /// Calls received.
    pub calls: Mutex<Vec<Call>>,
}

/// Host address the fake mmap reports for region `index` at `offset`.
pub fn fake_host_addr(index: u32, offset: u64) -> u64 {
    0x7f00_0000_0000 + (u64::from(index) << 32) + offset
}

impl FakeVfio {
    /// A device with config space `config` (256 or 4096 bytes) and nothing else.
    pub fn new(config: Vec<u8>) -> Self {
        let mut regions = BTreeMap::new();
        regions.insert(
            CONFIG_REGION,
            RegionInfo {
                size: config.len() as u64,
                readable: true,
                writable: true,
                ..Default::default()
            },
        );
        let mut memory = BTreeMap::new();
        memory.insert(CONFIG_REGION, config);
        FakeVfio {
            regions,
            memory: Mutex::new(memory),
            irqs: BTreeMap::new(),
            resettable: true,
            calls: Mutex::default(),
        }
    }

    /// Adds region `index` of `size` bytes.
    pub fn region(mut self, index: u32, size: u64, mmappable: bool) -> Self {
        self.regions.insert(
            index,
            RegionInfo {
                size,
                readable: true,
                writable: true,
                mmappable,
                ..Default::default()
            },
        );
        self.memory
            .get_mut()
            .unwrap()
            .insert(index, (0..size).map(|i| i as u8).collect());
        self
    }

    /// Sets the interrupt count of `index`.
    pub fn irq(mut self, index: u32, count: u32) -> Self {
        self.irqs.insert(index, count);
        self
    }

    /// Takes the logged calls, leaving out region writes unless `writes`.
    pub fn take(&self, writes: bool) -> Vec<Call> {
        let mut calls = self.calls.lock().unwrap();
        std::mem::take(&mut *calls)
            .into_iter()
            .filter(|c| writes || !matches!(c, Call::Write(..)))
            .collect()
    }

    /// Byte `offset` of region `index`.
    pub fn byte(&self, index: u32, offset: usize) -> u8 {
        self.memory.lock().unwrap()[&index][offset]
    }

    fn log(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn bounds(
        &self,
        index: u32,
        offset: u64,
        len: usize,
    ) -> Result<std::ops::Range<usize>, VfioOpsError> {
        let size = self.regions.get(&index).map_or(0, |r| r.size);
        let end = offset + len as u64;
        if end > size {
            return Err(VfioOpsError::Unsupported {
                op: format!("access region {index} at {offset:#x}+{len}"),
                reason: format!("region has {size} bytes"),
            });
        }
        Ok(offset as usize..end as usize)
    }
}

impl VfioDeviceOps for FakeVfio {
    fn region(&self, index: u32) -> Option<RegionInfo> {
        self.regions.get(&index).cloned()
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), VfioOpsError> {
        let range = self.bounds(index, offset, data.len())?;
        data.copy_from_slice(&self.memory.lock().unwrap()[&index][range]);
        Ok(())
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), VfioOpsError> {
        let range = self.bounds(index, offset, data.len())?;
        self.memory.lock().unwrap().get_mut(&index).unwrap()[range].copy_from_slice(data);
        self.log(Call::Write(index, offset, data.to_vec()));
        Ok(())
    }

    fn mmap(&self, index: u32, area: Area) -> Result<Box<dyn MappedArea>, VfioOpsError> {
        self.log(Call::Mmap(index, area));
        Ok(Box::new(FakeArea {
            addr: fake_host_addr(index, area.offset),
            size: area.size,
        }))
    }

    fn irq_count(&self, index: u32) -> u32 {
        self.irqs.get(&index).copied().unwrap_or(0)
    }

    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioOpsError> {
        self.log(Call::Enable(
            index,
            fds.iter().map(|f| f.as_raw_fd()).collect(),
        ));
        Ok(())
    }

    fn disable_irq(&self, index: u32) -> Result<(), VfioOpsError> {
        self.log(Call::Disable(index));
        Ok(())
    }

    fn set_intx_resample(&self, fd: &EventFd) -> Result<(), VfioOpsError> {
        self.log(Call::Resample(fd.as_raw_fd()));
        Ok(())
    }

    fn reset(&self) -> Result<ResetOutcome, VfioOpsError> {
        self.log(Call::Reset);
        Ok(if self.resettable {
            ResetOutcome::Done
        } else {
            ResetOutcome::Unsupported
        })
    }
}

/// A pretend host mapping.
pub struct FakeArea {
    addr: u64,
    size: u64,
}

impl MappedArea for FakeArea {
    fn host_addr(&self) -> u64 {
        self.addr
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// What happened to the fake vectors: `(gsi, call)`.
pub type VectorLog = Arc<Mutex<Vec<(u32, &'static str, Option<MsiMessage>)>>>;

/// A vector with an eventfd (or without, to test the refusal).
pub struct EvtVector {
    gsi: u32,
    evt: Option<EventFd>,
    log: VectorLog,
}

impl MsiVector for EvtVector {
    fn set_route(&mut self, msg: MsiMessage) -> Result<(), InterruptError> {
        self.log
            .lock()
            .unwrap()
            .push((self.gsi, "route", Some(msg)));
        Ok(())
    }

    fn mask(&mut self) -> Result<(), InterruptError> {
        self.log.lock().unwrap().push((self.gsi, "mask", None));
        Ok(())
    }

    fn unmask(&mut self) -> Result<(), InterruptError> {
        self.log.lock().unwrap().push((self.gsi, "unmask", None));
        Ok(())
    }

    fn trigger(&self) -> Result<(), InterruptError> {
        self.log.lock().unwrap().push((self.gsi, "trigger", None));
        Ok(())
    }

    fn eventfd(&self) -> Option<&EventFd> {
        self.evt.as_ref()
    }
}

/// An INTx line with trigger and resample eventfds.
pub struct EvtLine {
    /// Trigger eventfd.
    pub evt: EventFd,
    /// Resample eventfd.
    pub resample: EventFd,
}

impl IntxLine for EvtLine {
    fn assert(&self) -> Result<(), InterruptError> {
        Ok(())
    }

    fn deassert(&self) -> Result<(), InterruptError> {
        Ok(())
    }

    fn irq(&self) -> u8 {
        17
    }

    fn eventfd(&self) -> Option<&EventFd> {
        Some(&self.evt)
    }

    fn resample_eventfd(&self) -> Option<&EventFd> {
        Some(&self.resample)
    }
}

/// Hands out eventfd-backed vectors (GSIs from 24) and lines on IRQ 17.
#[derive(Default)]
pub struct FakeIrqs {
    /// Vector calls.
    pub log: VectorLog,
    /// Next GSI.
    next: Mutex<u32>,
    /// Give vectors without eventfds.
    pub no_eventfd: bool,
    /// Raw fds of the vectors, by GSI order.
    pub fds: Mutex<Vec<i32>>,
    /// Raw fds of the INTx line: (trigger, resample).
    pub intx_fds: Mutex<Option<(i32, i32)>>,
}

impl InterruptManager for FakeIrqs {
    fn allocate_msi_vectors(
        &self,
        count: usize,
    ) -> Result<Vec<Box<dyn MsiVector>>, InterruptError> {
        let mut next = self.next.lock().unwrap();
        let mut out: Vec<Box<dyn MsiVector>> = Vec::new();
        for _ in 0..count {
            let evt = (!self.no_eventfd).then(|| EventFd::new(0).unwrap());
            if let Some(e) = &evt {
                self.fds.lock().unwrap().push(e.as_raw_fd());
            }
            out.push(Box::new(EvtVector {
                gsi: 24 + *next,
                evt,
                log: self.log.clone(),
            }));
            *next += 1;
        }
        Ok(out)
    }

    fn allocate_intx(
        &self,
        _address: PciAddress,
        _pin: IntxPin,
    ) -> Result<Box<dyn IntxLine>, InterruptError> {
        let line = EvtLine {
            evt: EventFd::new(0).unwrap(),
            resample: EventFd::new(0).unwrap(),
        };
        *self.intx_fds.lock().unwrap() = Some((line.evt.as_raw_fd(), line.resample.as_raw_fd()));
        Ok(Box::new(line))
    }
}

/// Records slots: `(slot, gpa, size, host)`; slot numbers from 16.
#[derive(Default)]
pub struct FakeMapper {
    /// Live slots.
    pub slots: Mutex<BTreeMap<u32, (u64, u64, u64)>>,
    /// Next slot number.
    pub next: Mutex<u32>,
    /// Refuse mappings at or above this GPA.
    pub refuse_from: Option<u64>,
}

impl GuestMapper for FakeMapper {
    fn map(&self, gpa: u64, size: u64, host_addr: u64) -> Result<SlotId, MapError> {
        if self.refuse_from.is_some_and(|r| gpa >= r) {
            return Err(MapError::Map {
                gpa,
                size,
                reason: "test refuses".into(),
            });
        }
        let mut next = self.next.lock().unwrap();
        let slot = 16 + *next;
        *next += 1;
        self.slots
            .lock()
            .unwrap()
            .insert(slot, (gpa, size, host_addr));
        Ok(SlotId(slot))
    }

    fn unmap(&self, slot: SlotId) -> Result<(), MapError> {
        self.slots.lock().unwrap().remove(&slot.0);
        Ok(())
    }
}

impl FakeMapper {
    /// Live mappings as `(gpa, size, host)`, sorted by GPA.
    pub fn mappings(&self) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<_> = self.slots.lock().unwrap().values().copied().collect();
        v.sort();
        v
    }
}
