//! Which interrupt the device signals through VFIO (INTx, MSI or MSI-X),
//! following what the guest driver enabled, and wiring each vector to the
//! VMM's eventfd so interrupts go device → kernel → KVM without this process.
//!
//! MSI-X wins over MSI, MSI over INTx; with neither enabled INTx is used
//! (when the function has a pin). INTx uses the line's eventfd as trigger and
//! its resample eventfd for the kernel to unmask the level interrupt after
//! the guest's EOI. Per-vector masking and address/data changes never reach
//! VFIO: they change KVM routes through the [`crate::MsiVector`]s.

use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::IntxLine;
use crate::msi::Msi;
use crate::msix::Msix;
use crate::vfio::ops::{VfioDeviceOps, VfioOpsError, INTX_IRQ, MSIX_IRQ, MSI_IRQ};

/// Errors switching interrupt modes.
#[derive(Debug, Error)]
pub enum IrqError {
    /// The interrupt backend gave a vector or line without the eventfd VFIO needs.
    #[error(
        "the interrupt backend has no eventfd for {0}; VFIO needs one per vector (a KVM irqfd)"
    )]
    NoEventfd(String),
    /// VFIO refused to wire or unwire the interrupt.
    #[error("cannot switch the device's interrupts to {mode}")]
    Vfio {
        /// The mode asked for.
        mode: IrqMode,
        /// The kernel's error.
        #[source]
        source: VfioOpsError,
    },
}

/// The interrupt the device signals through VFIO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqMode {
    /// Nothing wired.
    Off,
    /// Legacy INTx (level, with resample).
    Intx,
    /// MSI with this many vectors.
    Msi(usize),
    /// MSI-X with this many vectors.
    Msix(usize),
}

impl std::fmt::Display for IrqMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IrqMode::Off => write!(f, "none"),
            IrqMode::Intx => write!(f, "INTx"),
            IrqMode::Msi(n) => write!(f, "MSI ({n} vectors)"),
            IrqMode::Msix(n) => write!(f, "MSI-X ({n} vectors)"),
        }
    }
}

/// The mode in force and the INTx line.
pub struct IrqRouting {
    /// What VFIO has wired now.
    mode: IrqMode,
    /// The function's INTx line, if it has a pin and VFIO offers INTx.
    intx: Option<Box<dyn IntxLine>>,
}

impl IrqRouting {
    /// Nothing wired yet.
    pub fn new(intx: Option<Box<dyn IntxLine>>) -> Self {
        IrqRouting {
            mode: IrqMode::Off,
            intx,
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> IrqMode {
        self.mode
    }

    /// The INTx line.
    pub fn intx(&self) -> Option<&dyn IntxLine> {
        self.intx.as_deref()
    }

    /// The mode the guest's programming asks for: `msix_vectors` when MSI-X
    /// is enabled, else `msi_vectors` when MSI is, else INTx if present.
    pub fn wanted(&self, msi_vectors: Option<usize>, msix_vectors: Option<usize>) -> IrqMode {
        match (msix_vectors, msi_vectors) {
            (Some(n), _) => IrqMode::Msix(n),
            (None, Some(n)) => IrqMode::Msi(n),
            (None, None) if self.intx.is_some() => IrqMode::Intx,
            (None, None) => IrqMode::Off,
        }
    }

    /// Switches VFIO to `want`: the old interrupt is disabled first, then the
    /// new one wired to the vectors' eventfds. Returns whether anything
    /// changed. On failure the device is left with nothing wired.
    pub fn apply(
        &mut self,
        ops: &dyn VfioDeviceOps,
        want: IrqMode,
        msi: Option<&Msi>,
        msix: Option<&Msix>,
    ) -> Result<bool, IrqError> {
        if want == self.mode {
            return Ok(false);
        }
        let vfio_err = |mode| move |source| IrqError::Vfio { mode, source };
        if let Some(index) = vfio_index(self.mode) {
            let old = self.mode;
            self.mode = IrqMode::Off;
            ops.disable_irq(index).map_err(vfio_err(old))?;
        }
        match want {
            IrqMode::Off => {}
            IrqMode::Intx => {
                let line = self
                    .intx
                    .as_deref()
                    .ok_or_else(|| IrqError::NoEventfd("INTx".into()))?;
                let (Some(trigger), Some(resample)) = (line.eventfd(), line.resample_eventfd())
                else {
                    return Err(IrqError::NoEventfd("INTx (trigger and resample)".into()));
                };
                ops.enable_irq(INTX_IRQ, &[trigger])
                    .map_err(vfio_err(want))?;
                if let Err(e) = ops.set_intx_resample(resample) {
                    // Leave nothing half wired: a level interrupt without
                    // resample would stay masked after its first assertion.
                    let _ = ops.disable_irq(INTX_IRQ);
                    return Err(vfio_err(want)(e));
                }
            }
            IrqMode::Msi(n) => {
                let fds = eventfds(n, "MSI", |i| {
                    msi.and_then(|m| m.vector(i)).and_then(|v| v.eventfd())
                })?;
                ops.enable_irq(MSI_IRQ, &fds).map_err(vfio_err(want))?;
            }
            IrqMode::Msix(n) => {
                let fds = eventfds(n, "MSI-X", |i| {
                    msix.and_then(|m| m.vector(i)).and_then(|v| v.eventfd())
                })?;
                ops.enable_irq(MSIX_IRQ, &fds).map_err(vfio_err(want))?;
            }
        }
        self.mode = want;
        Ok(true)
    }
}

/// VFIO interrupt index of a mode.
fn vfio_index(mode: IrqMode) -> Option<u32> {
    match mode {
        IrqMode::Off => None,
        IrqMode::Intx => Some(INTX_IRQ),
        IrqMode::Msi(_) => Some(MSI_IRQ),
        IrqMode::Msix(_) => Some(MSIX_IRQ),
    }
}

/// The eventfds of vectors `0..n`, or which one is missing.
fn eventfds<'a>(
    n: usize,
    kind: &str,
    get: impl Fn(usize) -> Option<&'a EventFd>,
) -> Result<Vec<&'a EventFd>, IrqError> {
    (0..n)
        .map(|i| get(i).ok_or_else(|| IrqError::NoEventfd(format!("{kind} vector {i}"))))
        .collect()
}
