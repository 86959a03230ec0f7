//! The interrupt seam between PCI emulation and the VMM: an MSI message, one
//! MSI/MSI-X vector ([`MsiVector`]), one level-triggered INTx line
//! ([`IntxLine`]) and the [`InterruptManager`] that hands them out.
//!
//! This crate never talks to KVM. The VMM implements these traits: an MSI
//! vector is a GSI route plus an irqfd; an INTx line is an IOAPIC pin with an
//! irqfd and a resample eventfd. Devices whose hardware signals an eventfd by
//! itself (VFIO) take that eventfd from [`MsiVector::eventfd`] /
//! [`IntxLine::eventfd`] instead of calling `trigger`/`assert`.

use std::fmt;

use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

/// Errors reported by the VMM's interrupt backend.
#[derive(Debug, Error)]
pub enum InterruptError {
    /// The backend cannot provide as many vectors as asked for.
    #[error("cannot allocate {requested} interrupt vectors ({available} available)")]
    NoVectors {
        /// Vectors asked for.
        requested: usize,
        /// Vectors the backend could still provide.
        available: usize,
    },
    /// An operating system call in the backend failed (KVM ioctl, eventfd write).
    #[error("interrupt backend: {context}")]
    Os {
        /// What the backend was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The backend refused the request for another reason.
    #[error("interrupt backend: {0}")]
    Backend(String),
}

/// An MSI message as the guest programmed it: a write of `data` to `address`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Message address (0xFEEx_xxxx on x86).
    pub address: u64,
    /// Message data.
    pub data: u32,
}

impl fmt::Display for MsiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}<-{:#x}", self.address, self.data)
    }
}

/// One MSI or MSI-X vector as the VMM implements it (KVM: a GSI route + an irqfd).
///
/// A freshly allocated vector has no route and is masked. The MSI and MSI-X
/// emulation in this crate calls `set_route` before the first `unmask`, and
/// keeps track of pending triggers itself, so implementations need not.
pub trait MsiVector: Send {
    /// Points the vector at the message the guest programmed.
    fn set_route(&mut self, msg: MsiMessage) -> Result<(), InterruptError>;
    /// Stops delivery (the guest masked or disabled the vector).
    fn mask(&mut self) -> Result<(), InterruptError>;
    /// Resumes delivery.
    fn unmask(&mut self) -> Result<(), InterruptError>;
    /// Injects the interrupt now.
    fn trigger(&self) -> Result<(), InterruptError>;
    /// The eventfd that injects this vector when signalled (the irqfd), for
    /// devices whose hardware signals it directly (VFIO). `None` if the
    /// backend has no such eventfd.
    fn eventfd(&self) -> Option<&EventFd> {
        None
    }
}

/// INTx pin of a function, as in the interrupt pin register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntxPin {
    /// INTA#.
    A,
    /// INTB#.
    B,
    /// INTC#.
    C,
    /// INTD#.
    D,
}

impl IntxPin {
    /// Value of the interrupt pin register (1 = INTA# .. 4 = INTD#).
    pub fn register_value(self) -> u8 {
        match self {
            IntxPin::A => 1,
            IntxPin::B => 2,
            IntxPin::C => 3,
            IntxPin::D => 4,
        }
    }

    /// Zero-based pin index (INTA# = 0), handy for swizzling.
    pub fn index(self) -> u8 {
        self.register_value() - 1
    }
}

/// A level-triggered INTx line (KVM: an IOAPIC pin driven by an irqfd with a
/// resample eventfd).
pub trait IntxLine: Send {
    /// Raises the line.
    fn assert(&self) -> Result<(), InterruptError>;
    /// Lowers the line.
    fn deassert(&self) -> Result<(), InterruptError>;
    /// The interrupt controller input the line is wired to; written to the
    /// interrupt line register so the guest finds it.
    fn irq(&self) -> u8;
    /// Eventfd that raises the line when signalled (for VFIO). `None` if absent.
    fn eventfd(&self) -> Option<&EventFd> {
        None
    }
    /// Eventfd the backend signals when the guest EOIs the line, so the
    /// device can re-check its level (for VFIO). `None` if absent.
    fn resample_eventfd(&self) -> Option<&EventFd> {
        None
    }
}

/// Hands out interrupt resources to PCI functions.
pub trait InterruptManager: Send + Sync {
    /// Allocates `count` MSI/MSI-X vectors, all masked and unrouted.
    fn allocate_msi_vectors(&self, count: usize)
        -> Result<Vec<Box<dyn MsiVector>>, InterruptError>;
    /// Allocates the INTx line for `pin` of the function at `address`; the
    /// VMM chooses which interrupt controller input it lands on.
    fn allocate_intx(
        &self,
        address: crate::PciAddress,
        pin: IntxPin,
    ) -> Result<Box<dyn IntxLine>, InterruptError>;
}

/// What became of a device's request to signal a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The interrupt was injected.
    Sent,
    /// The vector is masked: the pending bit is set and the interrupt fires on unmask.
    Pending,
    /// MSI/MSI-X is disabled or the vector is not enabled: nothing happened.
    Dropped,
}

/// A vector together with what we last told the backend about it, so the
/// backend only hears about changes.
pub(crate) struct RoutedVector {
    /// The backend's vector.
    vector: Box<dyn MsiVector>,
    /// Route last given to the backend.
    route: Option<MsiMessage>,
    /// Whether the backend has the vector unmasked.
    unmasked: bool,
}

impl RoutedVector {
    /// Wraps a freshly allocated (masked, unrouted) vector.
    pub(crate) fn new(vector: Box<dyn MsiVector>) -> Self {
        RoutedVector {
            vector,
            route: None,
            unmasked: false,
        }
    }

    /// Brings the backend in line: routed to `msg` and unmasked when
    /// `active`, masked otherwise.
    pub(crate) fn apply(&mut self, active: bool, msg: MsiMessage) -> Result<(), InterruptError> {
        if active {
            if self.route != Some(msg) {
                self.vector.set_route(msg)?;
                self.route = Some(msg);
            }
            if !self.unmasked {
                self.vector.unmask()?;
                self.unmasked = true;
            }
        } else if self.unmasked {
            self.vector.mask()?;
            self.unmasked = false;
        }
        Ok(())
    }

    /// Injects the vector.
    pub(crate) fn trigger(&self) -> Result<(), InterruptError> {
        self.vector.trigger()
    }

    /// The backend's vector.
    pub(crate) fn vector(&self) -> &dyn MsiVector {
        self.vector.as_ref()
    }
}
