//! INTx for a function: the device's interrupt level, gated by the command
//! register's INTx Disable bit, mirrored in the status register's Interrupt
//! Status bit and driven onto the VMM's [`IntxLine`].

use crate::config::PciConfig;
use crate::interrupt::{InterruptError, IntxLine};

/// The INTx state of one function.
pub struct Intx {
    /// The VMM's line.
    line: Box<dyn IntxLine>,
    /// Level the device wants.
    level: bool,
    /// Whether the line is raised right now.
    asserted: bool,
}

impl Intx {
    /// Takes the line and writes its IRQ into the interrupt line register.
    pub fn new(config: &mut PciConfig, line: Box<dyn IntxLine>) -> Self {
        config.set_interrupt_line(line.irq());
        Intx {
            line,
            level: false,
            asserted: false,
        }
    }

    /// The VMM's line (for its eventfds).
    pub fn line(&self) -> &dyn IntxLine {
        self.line.as_ref()
    }

    /// Whether the line is raised right now.
    pub fn asserted(&self) -> bool {
        self.asserted
    }

    /// Sets the device's interrupt level. The Interrupt Status bit follows
    /// the level; the line follows it unless INTx is disabled.
    pub fn set_level(&mut self, config: &mut PciConfig, level: bool) -> Result<(), InterruptError> {
        self.level = level;
        config.set_interrupt_status(level);
        self.sync(config)
    }

    /// Call after every guest config write: applies INTx Disable changes.
    pub fn config_written(&mut self, config: &PciConfig) -> Result<(), InterruptError> {
        self.sync(config)
    }

    /// Raises or lowers the line to match level and INTx Disable.
    fn sync(&mut self, config: &PciConfig) -> Result<(), InterruptError> {
        let want = self.level && !config.intx_disabled();
        if want != self.asserted {
            if want {
                self.line.assert()?;
            } else {
                self.line.deassert()?;
            }
            self.asserted = want;
        }
        Ok(())
    }
}
