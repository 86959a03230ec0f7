//! Interrupt delivery of a virtio PCI function, shared by the transport (vCPU
//! threads) and the device worker: the [`pci::Msix`] state, the MSI-X vector
//! the driver chose for each queue and for configuration changes, the ISR
//! status byte with the INTx fallback used while MSI-X is off, and the
//! NEEDS_RESET flag a worker raises when the guest hands it garbage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use log::warn;
use pci::{IntxLine, Msix, PciConfig};
use thiserror::Error;

use super::NO_VECTOR;

/// ISR status bit: a queue was used.
pub const ISR_QUEUE: u8 = 1;
/// ISR status bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 2;

/// Errors of the interrupt state.
#[derive(Debug, Error)]
pub enum InterruptStateError {
    /// The MSI-X emulation or its backend failed.
    #[error("MSI-X: {0}")]
    Msix(#[from] pci::MsixError),
    /// The INTx line could not be driven.
    #[error("INTx: {0}")]
    Intx(#[from] pci::InterruptError),
}

/// The state behind the lock.
pub(crate) struct IrqState {
    /// MSI-X capability runtime (table, PBA, backend vectors).
    pub(crate) msix: Msix,
    /// INTx line, when the VMM gave one.
    intx: Option<Box<dyn IntxLine>>,
    /// Whether INTx Disable is set in the command register.
    intx_disabled: bool,
    /// Whether we raised the INTx line.
    intx_asserted: bool,
    /// ISR status byte.
    isr: u8,
    /// MSI-X vector per queue ([`NO_VECTOR`] for none).
    queue_vectors: Vec<u16>,
    /// MSI-X vector for configuration changes.
    config_vector: u16,
}

/// Interrupts of one virtio PCI function.
pub struct VirtioInterrupts {
    /// Everything that changes together.
    state: Mutex<IrqState>,
    /// Set by a worker that found the guest's rings unusable.
    needs_reset: AtomicBool,
}

impl VirtioInterrupts {
    /// Wraps the MSI-X runtime and optional INTx line for `queues` queues.
    pub fn new(msix: Msix, intx: Option<Box<dyn IntxLine>>, queues: usize) -> Self {
        VirtioInterrupts {
            state: Mutex::new(IrqState {
                msix,
                intx,
                intx_disabled: false,
                intx_asserted: false,
                isr: 0,
                queue_vectors: vec![NO_VECTOR; queues],
                config_vector: NO_VECTOR,
            }),
            needs_reset: AtomicBool::new(false),
        }
    }

    /// Locks the state; a poisoned lock is still usable (plain data).
    pub(crate) fn lock(&self) -> MutexGuard<'_, IrqState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signals that queue `index` has used buffers.
    pub fn signal_queue(&self, index: usize) {
        let mut state = self.lock();
        let vector = state.queue_vectors.get(index).copied().unwrap_or(NO_VECTOR);
        if let Err(e) = state.signal(ISR_QUEUE, vector) {
            warn!("virtio: cannot signal queue {index}: {e}");
        }
    }

    /// Signals a configuration change (also used for NEEDS_RESET).
    pub fn signal_config(&self) {
        let mut state = self.lock();
        let vector = state.config_vector;
        if let Err(e) = state.signal(ISR_CONFIG, vector) {
            warn!("virtio: cannot signal a configuration change: {e}");
        }
    }

    /// Marks the device broken (DEVICE_NEEDS_RESET) and tells the driver.
    pub fn mark_broken(&self, why: &str) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            warn!("virtio: device needs reset: {why}");
            self.signal_config();
        }
    }

    /// Whether a worker marked the device broken since the last reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// Guest read of the ISR status: returns it, clears it, lowers INTx.
    pub fn read_isr(&self) -> u8 {
        let mut state = self.lock();
        let isr = std::mem::take(&mut state.isr);
        if let Err(e) = state.sync_intx() {
            warn!("virtio: cannot lower INTx: {e}");
        }
        isr
    }

    /// The ISR status without side effects.
    pub fn isr(&self) -> u8 {
        self.lock().isr
    }

    /// Whether an INTx interrupt is pending (the PCI Interrupt Status bit):
    /// ISR bits set while MSI-X is off.
    pub fn intx_pending(&self) -> bool {
        let state = self.lock();
        state.isr != 0 && !state.msix.enabled()
    }

    /// The guest acknowledged the INTx line (resample): raise it again if
    /// the ISR still has bits set.
    pub fn resample(&self) {
        let mut state = self.lock();
        if state.isr != 0 && state.intx_line_live() {
            if let Some(line) = &state.intx {
                if let Err(e) = line.assert() {
                    warn!("virtio: cannot re-raise INTx: {e}");
                }
            }
            state.intx_asserted = true;
        }
    }

    /// Duplicate of the INTx resample eventfd, for the worker to watch.
    pub fn resample_eventfd(&self) -> Option<vmm_sys_util::eventfd::EventFd> {
        let state = self.lock();
        state
            .intx
            .as_ref()
            .and_then(|l| l.resample_eventfd())
            .and_then(|e| e.try_clone().ok())
    }

    /// MSI-X vector of queue `index` ([`NO_VECTOR`] if none or no such queue).
    pub fn queue_vector(&self, index: usize) -> u16 {
        self.lock()
            .queue_vectors
            .get(index)
            .copied()
            .unwrap_or(NO_VECTOR)
    }

    /// Sets the vector of queue `index`; returns what sticks (out-of-table
    /// vectors read back as [`NO_VECTOR`], as the spec asks).
    pub fn set_queue_vector(&self, index: usize, vector: u16) -> u16 {
        let mut state = self.lock();
        let vector = state.checked_vector(vector);
        if let Some(slot) = state.queue_vectors.get_mut(index) {
            *slot = vector;
            vector
        } else {
            NO_VECTOR
        }
    }

    /// MSI-X vector for configuration changes.
    pub fn config_vector(&self) -> u16 {
        self.lock().config_vector
    }

    /// Sets the configuration change vector; returns what sticks.
    pub fn set_config_vector(&self, vector: u16) -> u16 {
        let mut state = self.lock();
        state.config_vector = state.checked_vector(vector);
        state.config_vector
    }

    /// Applies a guest config write to the MSI-X capability and INTx Disable.
    pub fn config_written(
        &self,
        config: &PciConfig,
        offset: usize,
        len: usize,
    ) -> Result<(), InterruptStateError> {
        let mut state = self.lock();
        state.msix.config_written(config, offset, len)?;
        state.intx_disabled = config.intx_disabled();
        state.sync_intx()?;
        Ok(())
    }

    /// Device reset: ISR cleared, INTx lowered, vectors unassigned, NEEDS_RESET cleared.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.isr = 0;
        state.config_vector = NO_VECTOR;
        state.queue_vectors.iter_mut().for_each(|v| *v = NO_VECTOR);
        if let Err(e) = state.sync_intx() {
            warn!("virtio: cannot lower INTx on reset: {e}");
        }
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

impl IrqState {
    /// `vector` if the MSI-X table has it, else [`NO_VECTOR`].
    fn checked_vector(&self, vector: u16) -> u16 {
        if usize::from(vector) < self.msix.capability().vectors() {
            vector
        } else {
            NO_VECTOR
        }
    }

    /// Whether asserting the line would reach the guest now.
    fn intx_line_live(&self) -> bool {
        self.intx.is_some() && !self.intx_disabled && !self.msix.enabled()
    }

    /// Delivers an interrupt: through MSI-X `vector` when MSI-X is on,
    /// else by setting `isr_bit` and raising INTx.
    fn signal(&mut self, isr_bit: u8, vector: u16) -> Result<(), InterruptStateError> {
        if self.msix.enabled() {
            // With MSI-X the ISR only reports configuration changes.
            if isr_bit == ISR_CONFIG {
                self.isr |= ISR_CONFIG;
            }
            if vector != NO_VECTOR {
                self.msix.trigger(usize::from(vector))?;
            }
            return Ok(());
        }
        self.isr |= isr_bit;
        self.sync_intx()?;
        Ok(())
    }

    /// Raises or lowers INTx to match the ISR, INTx Disable and MSI-X enable.
    fn sync_intx(&mut self) -> Result<(), pci::InterruptError> {
        let want = self.isr != 0 && self.intx_line_live();
        if want != self.intx_asserted {
            if let Some(line) = &self.intx {
                if want {
                    line.assert()?;
                } else {
                    line.deassert()?;
                }
            }
            self.intx_asserted = want;
        }
        Ok(())
    }
}
