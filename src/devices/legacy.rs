//! The platform's power and reset controls: the ACPI sleep and reset
//! registers (hardware-reduced ACPI) and the i8042's reset line (vm-superio).

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::BusDevice;
use crate::boot::acpi::S5_SLEEP_TYPE;
use crate::exit::{ExitHandle, ExitReason};
use crate::layout::{ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT};

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// The ACPI sleep control/status and reset registers, ports 0x600..0x603.
pub struct AcpiPm {
    exit: Arc<ExitHandle>,
}

impl AcpiPm {
    /// Requests exits on `exit`.
    pub fn new(exit: Arc<ExitHandle>) -> Self {
        AcpiPm { exit }
    }

    /// Number of ports from [`ACPI_SLEEP_CONTROL_PORT`].
    pub const PORTS: u64 = 3;
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let port = ACPI_SLEEP_CONTROL_PORT as u64 + offset;
        if port == ACPI_SLEEP_CONTROL_PORT as u64
            && value & SLP_EN != 0
            && (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5_SLEEP_TYPE
        {
            self.exit.request(ExitReason::PowerOff);
        } else if port == ACPI_RESET_PORT as u64 && value == ACPI_RESET_VALUE {
            self.exit.request(ExitReason::Reset);
        }
    }
}

/// Pulls the reset line: the guest asked the keyboard controller to reset the CPU.
pub struct ResetLine(pub Arc<ExitHandle>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request(ExitReason::Reset);
        Ok(())
    }
}

/// The i8042 at ports 0x60..0x65 (only 0x60 and 0x64 do anything).
pub struct I8042(pub I8042Device<ResetLine>);

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.0.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            let _ = self.0.write(offset as u8, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_slp_en_powers_off_and_other_sleep_states_do_not() {
        let exit = Arc::new(ExitHandle::new().unwrap());
        let mut pm = AcpiPm::new(exit.clone());
        pm.write(0, &[(3 << SLP_TYP_SHIFT) | SLP_EN]);
        pm.write(0, &[S5_SLEEP_TYPE << SLP_TYP_SHIFT]);
        assert_eq!(exit.reason(), None);
        pm.write(0, &[(S5_SLEEP_TYPE << SLP_TYP_SHIFT) | SLP_EN]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn reset_register_and_i8042_reset_request_a_reset() {
        let exit = Arc::new(ExitHandle::new().unwrap());
        AcpiPm::new(exit.clone()).write(2, &[ACPI_RESET_VALUE]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
        let exit = Arc::new(ExitHandle::new().unwrap());
        let mut kbd = I8042(I8042Device::new(ResetLine(exit.clone())));
        kbd.write(4, &[0xfe]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
