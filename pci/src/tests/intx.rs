//! INTx level, INTx Disable and the Interrupt Status bit.

use std::sync::{Arc, Mutex};

use super::fakes::header;
use crate::config::{PciConfig, COMMAND, COMMAND_INTX_DISABLE, INTERRUPT_LINE, STATUS_INTERRUPT};
use crate::interrupt::{InterruptError, IntxLine};
use crate::intx::Intx;

/// A line that records assert (true) / deassert (false).
struct FakeLine(Arc<Mutex<Vec<bool>>>);

impl IntxLine for FakeLine {
    fn assert(&self) -> Result<(), InterruptError> {
        self.0
            .lock()
            .map_err(|e| InterruptError::Backend(e.to_string()))?
            .push(true);
        Ok(())
    }

    fn deassert(&self) -> Result<(), InterruptError> {
        self.0
            .lock()
            .map_err(|e| InterruptError::Backend(e.to_string()))?
            .push(false);
        Ok(())
    }

    fn irq(&self) -> u8 {
        10
    }
}

#[test]
fn level_status_and_disable() {
    let mut config = PciConfig::new(&header());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut intx = Intx::new(&mut config, Box::new(FakeLine(calls.clone())));
    assert_eq!(config.read_u8(INTERRUPT_LINE), 10);
    intx.set_level(&mut config, true).unwrap();
    assert!(intx.asserted());
    assert_ne!(config.status() & STATUS_INTERRUPT, 0);
    // Raising again does nothing more.
    intx.set_level(&mut config, true).unwrap();
    // INTx Disable lowers the line but the status bit stays.
    config.write(COMMAND, &COMMAND_INTX_DISABLE.to_le_bytes());
    intx.config_written(&config).unwrap();
    assert!(!intx.asserted());
    assert_ne!(config.status() & STATUS_INTERRUPT, 0);
    // Re-enabling raises it again; dropping the level lowers it.
    config.write(COMMAND, &0u16.to_le_bytes());
    intx.config_written(&config).unwrap();
    intx.set_level(&mut config, false).unwrap();
    assert_eq!(config.status() & STATUS_INTERRUPT, 0);
    assert_eq!(*calls.lock().unwrap(), vec![true, false, true, false]);
    assert_eq!(intx.line().irq(), 10);
}
