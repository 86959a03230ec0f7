//! ACPI PCI hotplug on the root bus, the mechanism cloud-hypervisor uses so
//! that an unmodified Linux guest (acpiphp) sees devices arrive and leave:
//! the DSDT describes a slot per device number under `\_SB_.PCI0` (`_ADR`,
//! `_SUN`, and `_EJ0` where the slot may be ejected), and a register block
//! at [`PCI_HOTPLUG_PORT`] where the guest reads which slots were added
//! (`PCIU`) or should be removed (`PCID`), each cleared by the read, and
//! writes the slots it ejected (`B0EJ`). The VMM sets bits here and raises
//! the GED's "PCI devices changed" event; the GED's `_EVT` calls `PSCN`,
//! which sends `Notify(Sxxx, 1)` (device check) for added slots and
//! `Notify(Sxxx, 3)` (eject request) for slots to remove. The AML comes
//! from acpi_tables; the register block is written here (no crate has one).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use acpi_tables::aml::{
    Acquire, And, Arg, Field, FieldAccessType, FieldEntry, FieldLockRule, FieldUpdateRule, If,
    Local, Method, MethodCall, Mutex as AmlMutex, Name, Notify, OpRegion, OpRegionSpace, Path,
    Release, Return, Scope, ShiftLeft, Store, ZERO,
};
use acpi_tables::Aml;

use super::BusDevice;

/// First port of the register block (PCIU, PCID, B0EJ: 32 bits each).
pub const PCI_HOTPLUG_PORT: u16 = 0x610;
/// Offset of `PCIU`: slots added since the last read.
const PCIU: u64 = 0;
/// Offset of `PCID`: slots the VMM asks the guest to eject.
const PCID: u64 = 4;
/// Offset of `B0EJ`: the guest writes the slots it ejected.
const B0EJ: u64 = 8;
/// Device numbers on the root bus.
const SLOTS: u8 = 32;
/// `Notify` value: device check (a device may have arrived).
const NOTIFY_DEVICE_CHECK: u8 = 1;
/// `Notify` value: eject request.
const NOTIFY_EJECT_REQUEST: u8 = 3;

/// What the guest ejected: called with the slot bits it wrote to `B0EJ`.
pub type EjectHandler = Box<dyn Fn(u32) + Send + Sync>;

/// Slots changed and not yet read by the guest, and who handles ejects;
/// shared by the register block and the VMM's hotplug code.
#[derive(Default)]
pub struct HotplugSlots {
    added: AtomicU32,
    removing: AtomicU32,
    on_eject: OnceLock<EjectHandler>,
}

impl HotplugSlots {
    /// Marks `slot` added (the guest scans it at its next `PSCN`).
    pub fn mark_added(&self, slot: u8) {
        self.added.fetch_or(slot_bit(slot), Ordering::AcqRel);
    }

    /// Asks the guest to eject `slot` at its next `PSCN`.
    pub fn mark_removing(&self, slot: u8) {
        self.removing.fetch_or(slot_bit(slot), Ordering::AcqRel);
    }

    /// Sets who handles the guest's ejects (once; later calls are ignored).
    pub fn set_eject_handler(&self, handler: EjectHandler) {
        let _ = self.on_eject.set(handler);
    }
}

fn slot_bit(slot: u8) -> u32 {
    1u32.checked_shl(u32::from(slot)).unwrap_or(0)
}

/// The register block on the port bus.
pub struct PciHotplugRegisters(pub Arc<HotplugSlots>);

impl PciHotplugRegisters {
    /// Ports from [`PCI_HOTPLUG_PORT`].
    pub const PORTS: u64 = 12;
}

impl BusDevice for PciHotplugRegisters {
    /// Only aligned 32-bit reads of PCIU and PCID return (and clear)
    /// anything; every other access reads zeros.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 4 {
            return;
        }
        let value = match offset {
            PCIU => self.0.added.swap(0, Ordering::AcqRel),
            PCID => self.0.removing.swap(0, Ordering::AcqRel),
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Only an aligned 32-bit write of B0EJ does something: it hands the
    /// bits to the eject handler, which ignores slots it cannot eject.
    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let bits = u32::from_le_bytes(bytes) & !1; // slot 0: the host bridge
        if offset == B0EJ && bits != 0 {
            if let Some(handler) = self.0.on_eject.get() {
                handler(bits);
            }
        }
    }
}

/// The AML name of slot `slot`'s device object.
fn slot_name(slot: u8) -> String {
    format!("S{slot:03}")
}

/// One slot's device: `_ADR`, `_SUN` and, when `ejectable`, an `_EJ0` that
/// writes the slot's bit to `B0EJ` (through `PCEJ`).
fn slot_aml(slot: u8, ejectable: bool, out: &mut Vec<u8>) {
    let adr = u32::from(slot) << 16;
    let sun = u32::from(slot);
    let adr = Name::new("_ADR".into(), &adr);
    let sun_name = Name::new("_SUN".into(), &sun);
    let call = MethodCall::new("\\_SB_.PCI0.PCEJ".into(), vec![&sun]);
    let ej0 = Method::new("_EJ0".into(), 1, false, vec![&call]);
    let mut children: Vec<&dyn Aml> = vec![&adr, &sun_name];
    if ejectable {
        children.push(&ej0);
    }
    acpi_tables::aml::Device::new(slot_name(slot).as_str().into(), children).to_aml_bytes(out);
}

/// `DVNT(bits, value)`: `Notify(Sxxx, value)` for each slot whose bit is set.
fn dvnt_aml() -> Vec<u8> {
    let masks: Vec<u32> = (1..SLOTS).map(slot_bit).collect();
    let paths: Vec<Path> = (1..SLOTS)
        .map(|s| Path::new(slot_name(s).as_str()))
        .collect();
    let (bits, value, scratch) = (Arg(0), Arg(1), Local(0));
    let notifies: Vec<Notify> = paths.iter().map(|p| Notify::new(p, &value)).collect();
    let tests: Vec<And> = masks.iter().map(|m| And::new(&scratch, &bits, m)).collect();
    let ifs: Vec<If> = tests
        .iter()
        .zip(&notifies)
        .map(|(t, n)| If::new(t, vec![n]))
        .collect();
    let body: Vec<&dyn Aml> = ifs.iter().map(|i| i as &dyn Aml).collect();
    let mut out = Vec::new();
    Method::new("DVNT".into(), 2, false, body).to_aml_bytes(&mut out);
    out
}

/// The DSDT's hotplug objects, in a `Scope(\_SB_.PCI0)` that must follow
/// the root bridge: the register fields, `PCEJ(slot)`, `PSCN()` (called by
/// the GED's `_EVT`), `DVNT` and a slot object per device number 1..=31.
/// Slots set in `fixed` (boot devices that must not be ejected by accident)
/// get no `_EJ0`.
pub fn dsdt_aml(fixed: u32) -> Vec<u8> {
    let port = usize::from(PCI_HOTPLUG_PORT);
    let len = PciHotplugRegisters::PORTS as usize;
    let region = OpRegion::new("PCST".into(), OpRegionSpace::SystemIO, &port, &len);
    let field = Field::new(
        "PCST".into(),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![
            FieldEntry::Named(*b"PCIU", 32),
            FieldEntry::Named(*b"PCID", 32),
            FieldEntry::Named(*b"B0EJ", 32),
        ],
    );
    let mutex = AmlMutex::new("BLCK".into(), 0);
    let (acquire, release) = (
        Acquire::new("BLCK".into(), 0xffff),
        Release::new("BLCK".into()),
    );
    let (one, slot, bit) = (1u8, Arg(0), Local(0));
    let shift = ShiftLeft::new(&bit, &one, &slot);
    let b0ej = Path::new("B0EJ");
    let store = Store::new(&b0ej, &bit);
    let ret = Return::new(&ZERO);
    let pcej = Method::new(
        "PCEJ".into(),
        1,
        true,
        vec![&acquire, &shift, &store, &release, &ret],
    );
    let (pciu, pcid) = (Path::new("PCIU"), Path::new("PCID"));
    let (check, eject) = (NOTIFY_DEVICE_CHECK, NOTIFY_EJECT_REQUEST);
    let added = MethodCall::new("DVNT".into(), vec![&pciu, &check]);
    let removing = MethodCall::new("DVNT".into(), vec![&pcid, &eject]);
    let pscn = Method::new(
        "PSCN".into(),
        0,
        true,
        vec![&acquire, &added, &removing, &release],
    );
    let dvnt = dvnt_aml();
    let mut slots = Vec::new();
    for slot in 1..SLOTS {
        slot_aml(slot, fixed & slot_bit(slot) == 0, &mut slots);
    }
    let raw = RawAml(&dvnt);
    let raw_slots = RawAml(&slots);
    let scope = Scope::new(
        "\\_SB_.PCI0".into(),
        vec![&region, &field, &mutex, &pcej, &pscn, &raw, &raw_slots],
    );
    let mut out = Vec::new();
    scope.to_aml_bytes(&mut out);
    out
}

/// AML already encoded, to nest in a scope.
struct RawAml<'a>(&'a [u8]);

impl Aml for RawAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.0);
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn registers() -> (PciHotplugRegisters, Arc<HotplugSlots>, Arc<Mutex<Vec<u32>>>) {
        let slots = Arc::new(HotplugSlots::default());
        let ejected = Arc::new(Mutex::new(Vec::new()));
        let log = ejected.clone();
        slots.set_eject_handler(Box::new(move |bits| log.lock().unwrap().push(bits)));
        (PciHotplugRegisters(slots.clone()), slots, ejected)
    }

    fn read32(r: &mut PciHotplugRegisters, offset: u64) -> u32 {
        let mut b = [0xffu8; 4];
        r.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn added_and_removing_slots_read_once_and_ejects_reach_the_handler() {
        let (mut r, slots, ejected) = registers();
        assert_eq!(read32(&mut r, PCIU), 0);
        slots.mark_added(3);
        slots.mark_removing(5);
        assert_eq!(read32(&mut r, PCIU), 1 << 3);
        assert_eq!(read32(&mut r, PCIU), 0, "cleared by the read");
        assert_eq!(read32(&mut r, PCID), 1 << 5);
        assert_eq!(read32(&mut r, PCID), 0);
        r.write(B0EJ, &(1u32 << 5).to_le_bytes());
        assert_eq!(*ejected.lock().unwrap(), vec![1 << 5]);
    }

    #[test]
    fn nonsense_from_the_guest_is_ignored() {
        let (mut r, slots, ejected) = registers();
        slots.mark_added(7);
        for offset in [0u64, 1, 2, 3, 5, 8, 11, 12, 1000, u64::MAX] {
            for len in [0usize, 1, 2, 3, 8] {
                let mut buf = vec![0xaau8; len];
                r.read(offset, &mut buf);
                assert!(buf.iter().all(|&b| b == 0));
                r.write(offset, &buf);
                r.write(offset, &vec![0xff; len]);
            }
        }
        // Only the host bridge's bit, or nothing: no eject.
        r.write(B0EJ, &1u32.to_le_bytes());
        r.write(B0EJ, &0u32.to_le_bytes());
        r.write(PCIU, &u32::MAX.to_le_bytes());
        assert!(ejected.lock().unwrap().is_empty());
        assert_eq!(read32(&mut r, PCIU), 1 << 7, "odd accesses cleared nothing");
        slots.mark_added(40);
        assert_eq!(read32(&mut r, PCIU), 0, "no slot 40");
        // Without a handler, an eject is dropped.
        let mut bare = PciHotplugRegisters(Arc::new(HotplugSlots::default()));
        bare.write(B0EJ, &u32::MAX.to_le_bytes());
    }

    /// Reads an AML PkgLength at `at`: (length, bytes it took).
    fn pkg_length(aml: &[u8], at: usize) -> (usize, usize) {
        let lead = aml[at];
        let extra = usize::from(lead >> 6);
        if extra == 0 {
            return (usize::from(lead & 0x3f), 1);
        }
        let mut len = usize::from(lead & 0x0f);
        for i in 0..extra {
            len |= usize::from(aml[at + 1 + i]) << (4 + 8 * i);
        }
        (len, 1 + extra)
    }

    #[test]
    fn the_aml_is_one_scope_whose_length_covers_every_slot() {
        let fixed = 1 << 2;
        let aml = dsdt_aml(fixed);
        assert_eq!(aml[0], 0x10, "ScopeOp");
        let (len, took) = pkg_length(&aml, 1);
        assert_eq!(
            1 + len,
            aml.len(),
            "the PkgLength ({took} bytes) spans the scope"
        );
        let has = |s: &[u8]| aml.windows(s.len()).any(|w| w == s);
        for name in [
            b"PCST", b"PCIU", b"PCID", b"B0EJ", b"PCEJ", b"PSCN", b"DVNT", b"BLCK",
        ] {
            assert!(has(name), "{}", String::from_utf8_lossy(name));
        }
        for slot in 1..SLOTS {
            assert!(has(slot_name(slot).as_bytes()), "slot {slot}");
        }
        // Each slot device: DeviceOp (0x5b 0x82), PkgLength, its name; an
        // _EJ0 method before the next device unless the slot is fixed.
        let devices: Vec<usize> = (0..aml.len() - 1)
            .filter(|&i| aml[i] == 0x5b && aml[i + 1] == 0x82)
            .collect();
        assert_eq!(devices.len(), usize::from(SLOTS) - 1);
        for (n, &at) in devices.iter().enumerate() {
            let (len, took) = pkg_length(&aml, at + 2);
            let body = &aml[at + 2..at + 2 + len];
            let name = &aml[at + 2 + took..at + 2 + took + 4];
            let slot = (n + 1) as u8;
            assert_eq!(name, slot_name(slot).as_bytes());
            let ej0 = body.windows(4).any(|w| w == b"_EJ0");
            assert_eq!(ej0, slot != 2, "slot {slot}");
            assert!(body.windows(4).any(|w| w == b"_SUN"));
        }
    }
}

#[cfg(test)]
mod iasl {
    use crate::boot::acpi::dsdt;
    use crate::devices::{ged, pci_hotplug, pci_root, serial};
    use crate::layout;

    /// The DSDT of a VM with every device, disassembled by ACPICA's iasl:
    /// it must parse without errors and resolve every name it uses.
    #[test]
    #[ignore = "needs iasl (Debian: acpica-tools)"]
    fn iasl_disassembles_the_whole_dsdt() {
        let mut devices = serial::dsdt_aml();
        devices.extend(ged::dsdt_aml());
        devices.extend(pci_root::dsdt_aml(layout::FOUR_GIB));
        devices.extend(pci_hotplug::dsdt_aml(1 << 3));
        let dir = std::env::temp_dir().join(format!("vfio-vmm-iasl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let aml = dir.join("dsdt.aml");
        std::fs::write(&aml, dsdt(&devices)).unwrap();
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .output()
            .expect("iasl is not installed: apt-get install acpica-tools");
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap_or_default();
        if std::env::var_os("IASL_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        assert!(out.status.success(), "{log}");
        assert!(
            !log.contains("Error") && !dsl.contains("External ("),
            "{log}\n{dsl}"
        );
        for text in [
            "Method (PSCN, 0, Serialized)",
            "Name (_SUN, 0x1F)",
            "Notify (S031, Arg1)",
        ] {
            assert!(dsl.contains(text), "{text} missing in\n{dsl}");
        }
    }
}
