//! The ACPI Generic Event Device (GED, `ACPI0013`) and the power button
//! (`PNP0C0C`) it notifies: how `vm.power-button` asks the guest to shut
//! down gracefully on a hardware-reduced ACPI platform, as cloud-hypervisor
//! does on x86. The VMM sets an event bit and raises the GED's interrupt (an
//! IOAPIC pin through an irqfd); the guest's GED driver runs `_EVT`, which
//! reads the event register (one byte at [`GED_PORT`], cleared by the read)
//! and sends `Notify(PWRB, 0x80)`, which Linux's ACPI button driver reports
//! as KEY_POWER. The AML comes from acpi_tables; the register is written
//! here (no crate has one).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use acpi_tables::aml::{
    And, Device, EISAName, Equal, Field, FieldAccessType, FieldEntry, FieldLockRule,
    FieldUpdateRule, If, Interrupt, Local, Method, MethodCall, Name, Notify, OpRegion,
    OpRegionSpace, Path, ResourceTemplate, Store, ONE,
};
use acpi_tables::Aml;
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;
use crate::layout::{GED_IRQ, GED_PORT};

/// Event bit: the power button was pressed.
pub const EVENT_POWER_BUTTON: u8 = 1;
/// Event bit: PCI devices changed (see `pci_hotplug`): `_EVT` calls
/// `\_SB_.PCI0.PSCN`, which notifies the slots added or to eject.
pub const EVENT_PCI_HOTPLUG: u8 = 2;
/// The `Notify` value for a power button press (ACPI 6.5, 5.6.6).
const NOTIFY_BUTTON_PRESSED: u8 = 0x80;

/// Pending events and the interrupt that announces them; shared by the
/// register on the port bus and whoever raises events.
pub struct GedEvents {
    pending: AtomicU8,
    irq: EventFd,
}

impl GedEvents {
    /// Events announced through `irq` (an irqfd on [`GED_IRQ`]).
    pub fn new(irq: EventFd) -> Self {
        GedEvents {
            pending: AtomicU8::new(0),
            irq,
        }
    }

    /// Presses the power button: the guest sees the event at its next `_EVT`.
    pub fn power_button(&self) -> std::io::Result<()> {
        self.raise(EVENT_POWER_BUTTON)
    }

    /// Tells the guest that PCI slots changed (it reads which from the
    /// hotplug registers).
    pub fn pci_changed(&self) -> std::io::Result<()> {
        self.raise(EVENT_PCI_HOTPLUG)
    }

    fn raise(&self, event: u8) -> std::io::Result<()> {
        self.pending.fetch_or(event, Ordering::AcqRel);
        self.irq.write(1)
    }
}

/// The event register the guest's `_EVT` reads: pending events, cleared by the read.
pub struct GedRegister(pub Arc<GedEvents>);

impl GedRegister {
    /// Ports from [`GED_PORT`].
    pub const PORTS: u64 = 1;
}

impl BusDevice for GedRegister {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (0, Some(b)) = (offset, data.first_mut()) {
            *b = self.0.pending.swap(0, Ordering::AcqRel);
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// The DSDT's `\_SB_.GED_` (interrupt, event register, `_EVT`) and `\_SB_.PWRB`.
pub fn dsdt_aml() -> Vec<u8> {
    let port = usize::from(GED_PORT);
    let len = GedRegister::PORTS as usize;
    let region = OpRegion::new("GDST".into(), OpRegionSpace::SystemIO, &port, &len);
    let field = Field::new(
        "GDST".into(),
        FieldAccessType::Byte,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"GDAT", 8)],
    );
    let event = usize::from(EVENT_POWER_BUTTON);
    let (read, masked) = (Local(0), Local(1));
    let pressed = NOTIFY_BUTTON_PRESSED;
    let pwrb = Path::new("\\_SB_.PWRB");
    let notify = Notify::new(&pwrb, &pressed);
    let gdat = Path::new("GDAT");
    let store = Store::new(&read, &gdat);
    let and = And::new(&masked, &read, &event);
    let is_button = Equal::new(&masked, &event);
    let on_button = If::new(&is_button, vec![&notify]);
    let (pci_event, pci_masked) = (usize::from(EVENT_PCI_HOTPLUG), Local(2));
    let pci_test = And::new(&pci_masked, &read, &pci_event);
    let pscn = MethodCall::new("\\_SB_.PCI0.PSCN".into(), vec![]);
    let on_pci = If::new(&pci_test, vec![&pscn]);
    let evt = Method::new(
        "_EVT".into(),
        1,
        true,
        vec![&store, &and, &on_button, &on_pci],
    );
    // Edge-triggered, active high: an irqfd pulses the IOAPIC pin. Only
    // interrupts: Linux's GED driver refuses any other resource in `_CRS`.
    let irq = Interrupt::new(true, true, false, false, GED_IRQ);
    let crs = ResourceTemplate::new(vec![&irq]);
    let hid = Name::new("_HID".into(), &"ACPI0013");
    let uid = Name::new("_UID".into(), &ONE);
    let crs = Name::new("_CRS".into(), &crs);
    let ged = Device::new(
        "_SB_.GED_".into(),
        vec![&hid, &uid, &crs, &region, &field, &evt],
    );
    let button_hid = EISAName::new("PNP0C0C");
    let button_hid = Name::new("_HID".into(), &button_hid);
    let button_uid = Name::new("_UID".into(), &ONE);
    let button = Device::new("_SB_.PWRB".into(), vec![&button_hid, &button_uid]);
    let mut bytes = Vec::new();
    ged.to_aml_bytes(&mut bytes);
    button.to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_raises_the_interrupt_and_the_register_reads_it_once() {
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let events = Arc::new(GedEvents::new(irq.try_clone().unwrap()));
        let mut reg = GedRegister(events.clone());
        let mut b = [0xffu8];
        reg.read(0, &mut b);
        assert_eq!(b, [0]);
        assert!(irq.read().is_err(), "no interrupt before a press");
        events.power_button().unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        reg.read(0, &mut b);
        assert_eq!(b, [EVENT_POWER_BUTTON]);
        reg.read(0, &mut b);
        assert_eq!(b, [0], "the read clears the event");
    }

    #[test]
    fn the_aml_names_the_ged_its_evt_and_the_power_button() {
        let aml = dsdt_aml();
        let has = |s: &[u8]| aml.windows(s.len()).any(|w| w == s);
        assert!(has(b"ACPI0013") && has(b"_EVT") && has(b"GDAT") && has(b"PWRB"));
        // The call of \_SB_.PCI0.PSCN (a root multi-name path of 3 segments).
        assert!(has(b"\\/\x03_SB_PCI0PSCN"));
        // PNP0C0C as a compressed EISA id (0x0C0CD041) after the _HID name.
        assert!(has(&[0x0c, 0x41, 0xd0, 0x0c, 0x0c]));
        // The Notify (0x86) of PWRB with 0x80.
        assert!(has(&[
            0x86, b'\\', b'.', b'_', b'S', b'B', b'_', b'P', b'W', b'R', b'B'
        ]));
    }
}
