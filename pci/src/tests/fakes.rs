//! Test doubles: interrupt vectors and a device that record what happens.

use std::sync::{Arc, Mutex};

use crate::bar::BarMove;
use crate::config::{PciConfig, PciHeader};
use crate::device::{DeviceError, PciDevice};
use crate::interrupt::{InterruptError, IntxPin, MsiMessage, MsiVector};
use crate::msix::Msix;

/// One call a fake vector received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorCall {
    /// `set_route`.
    Route(MsiMessage),
    /// `mask`.
    Mask,
    /// `unmask`.
    Unmask,
    /// `trigger`.
    Trigger,
}

/// Shared call log of a set of fake vectors: `(vector index, call)`.
pub type CallLog = Arc<Mutex<Vec<(usize, VectorCall)>>>;

/// A vector that records its calls.
pub struct FakeVector {
    /// Index reported in the log.
    index: usize,
    /// Where calls go.
    log: CallLog,
}

impl FakeVector {
    /// Records one call.
    fn record(&self, call: VectorCall) {
        if let Ok(mut log) = self.log.lock() {
            log.push((self.index, call));
        }
    }
}

impl MsiVector for FakeVector {
    fn set_route(&mut self, msg: MsiMessage) -> Result<(), InterruptError> {
        self.record(VectorCall::Route(msg));
        Ok(())
    }

    fn mask(&mut self) -> Result<(), InterruptError> {
        self.record(VectorCall::Mask);
        Ok(())
    }

    fn unmask(&mut self) -> Result<(), InterruptError> {
        self.record(VectorCall::Unmask);
        Ok(())
    }

    fn trigger(&self) -> Result<(), InterruptError> {
        self.record(VectorCall::Trigger);
        Ok(())
    }
}

/// `count` fake vectors sharing one log.
pub fn fake_vectors(count: usize) -> (Vec<Box<dyn MsiVector>>, CallLog) {
    let log = CallLog::default();
    let vectors = (0..count)
        .map(|index| {
            Box::new(FakeVector {
                index,
                log: log.clone(),
            }) as Box<dyn MsiVector>
        })
        .collect();
    (vectors, log)
}

/// Takes the calls logged so far.
pub fn take(log: &CallLog) -> Vec<(usize, VectorCall)> {
    log.lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// A header for test devices.
pub fn header() -> PciHeader {
    PciHeader {
        vendor_id: 0x1af4,
        device_id: 0x1041,
        revision_id: 1,
        class_code: 0x02_00_00,
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 1,
        interrupt_pin: Some(IntxPin::A),
    }
}

/// Shared record of a fake device's BAR accesses and moves.
#[derive(Debug, Default)]
pub struct DeviceLog {
    /// `(bar, offset, data)` of each BAR write.
    pub writes: Vec<(usize, u64, Vec<u8>)>,
    /// `(bar, offset, len)` of each BAR read.
    pub reads: Vec<(usize, u64, usize)>,
    /// Moves the device was told about.
    pub moves: Vec<BarMove>,
}

/// A device with a config space, optional MSI-X and a log.
pub struct FakeDevice {
    /// Config space.
    pub config: PciConfig,
    /// MSI-X, if set up.
    pub msix: Option<Msix>,
    /// What happened.
    pub log: Arc<Mutex<DeviceLog>>,
    /// Refuse BAR moves.
    pub refuse_moves: bool,
}

impl FakeDevice {
    /// A device with the test header and no BARs.
    pub fn new() -> Self {
        FakeDevice {
            config: PciConfig::new(&header()),
            msix: None,
            log: Arc::default(),
            refuse_moves: false,
        }
    }
}

impl PciDevice for FakeDevice {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        if let Some(msix) = self.msix.as_mut() {
            let _ = msix.config_written(&self.config, offset, data.len());
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if let Some(msix) = self.msix.as_ref() {
            if msix.bar_read(bar, offset, data) {
                return;
            }
        }
        // Recognisable pattern: low byte of the offset plus the BAR index.
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8).wrapping_add(bar as u8);
        }
        if let Ok(mut log) = self.log.lock() {
            log.reads.push((bar, offset, data.len()));
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if let Some(msix) = self.msix.as_mut() {
            if matches!(msix.bar_write(bar, offset, data), Ok(true)) {
                return;
            }
        }
        if let Ok(mut log) = self.log.lock() {
            log.writes.push((bar, offset, data.to_vec()));
        }
    }

    fn move_bar(&mut self, mv: &BarMove) -> Result<(), DeviceError> {
        if self.refuse_moves {
            return Err(DeviceError::BarMoveFailed {
                bar: mv.bar,
                new: mv.new,
                reason: "test refuses".into(),
            });
        }
        if let Ok(mut log) = self.log.lock() {
            log.moves.push(*mv);
        }
        Ok(())
    }
}
