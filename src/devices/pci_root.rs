//! The guest's PCI world as the VMM wires it: the pci crate's bus reached
//! through ports 0xCF8..0xCFF, the ECAM window and the BAR windows, and the
//! ACPI description (root bridge `_CRS`, `_PRT`, MCFG) that makes Linux keep
//! our placement.

use std::sync::{Arc, Mutex};

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name, Package,
    ResourceTemplate, IO,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::Aml;
use pci::{IntxPin, PciBus, PciWindows, Window};

use super::BusDevice;
use crate::layout;
use crate::layout::intx_gsi;

/// The shared PCI bus.
pub type SharedPciBus = Arc<Mutex<PciBus>>;

/// The windows BARs are placed in; the 64-bit one starts at `mmio64_base`.
pub fn windows(mmio64_base: u64) -> PciWindows {
    PciWindows {
        mmio32: Some(Window {
            base: layout::PCI_MMIO32_START,
            size: layout::PCI_MMIO32_SIZE,
        }),
        mmio64: Some(Window {
            base: mmio64_base,
            size: layout::PCI_MMIO64_SIZE,
        }),
        io: Some(Window {
            base: layout::PCI_IO_START,
            size: layout::PCI_IO_SIZE,
        }),
    }
}

/// A bus with the host bridge, its windows set and the fixed ranges reserved.
pub fn new_bus(mmio64_base: u64) -> Result<SharedPciBus, pci::BusError> {
    let mut bus = PciBus::new(windows(mmio64_base))?;
    bus.reserve_mmio(Window {
        base: layout::ECAM_START,
        size: layout::ECAM_SIZE,
    });
    bus.reserve_io(Window {
        base: u64::from(pci::CONFIG_ADDRESS_PORT),
        size: pci::CONFIG_PORTS_LEN as u64,
    });
    Ok(Arc::new(Mutex::new(bus)))
}

fn lock(bus: &SharedPciBus) -> std::sync::MutexGuard<'_, PciBus> {
    bus.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_moves(moves: Vec<pci::BarMove>) {
    for m in moves {
        log::debug!("guest moved BAR {} of {} to {:#x}", m.bar, m.address, m.new);
    }
}

/// Ports 0xCF8..0xCFF: legacy configuration access.
pub struct ConfigPorts(pub SharedPciBus);

impl BusDevice for ConfigPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).config_port_read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        log_moves(lock(&self.0).config_port_write(offset, data));
    }
}

/// The ECAM window: memory-mapped configuration access.
pub struct Ecam(pub SharedPciBus);

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).ecam_read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        log_moves(lock(&self.0).ecam_write(offset, data));
    }
}

/// A BAR window (MMIO or I/O ports): accesses go to whichever BAR the guest put there.
pub struct BarWindow {
    /// The bus.
    pub bus: SharedPciBus,
    /// Where the window starts, to turn offsets back into addresses.
    pub base: u64,
    /// Port I/O rather than MMIO.
    pub io: bool,
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let addr = self.base + offset;
        let mut bus = lock(&self.bus);
        let claimed = if self.io {
            bus.pio_read(addr, data)
        } else {
            bus.mmio_read(addr, data)
        };
        if !claimed {
            data.fill(0xff);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let addr = self.base + offset;
        let mut bus = lock(&self.bus);
        if self.io {
            bus.pio_write(addr, data)
        } else {
            bus.mmio_write(addr, data)
        };
    }
}

fn aml<T: Aml + ?Sized>(a: &T) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

/// The `_PRT` entries: each slot's INTA..INTD on the IOAPIC pin `intx_gsi` picks.
fn prt_entries() -> Vec<(u32, u8, u8, u32)> {
    let pins = [IntxPin::A, IntxPin::B, IntxPin::C, IntxPin::D];
    (1..32u8)
        .flat_map(|slot| {
            pins.iter().map(move |&p| {
                (
                    (u32::from(slot) << 16) | 0xffff,
                    p.index(),
                    0u8,
                    intx_gsi(slot, p),
                )
            })
        })
        .collect()
}

/// DSDT objects for the root bridge (`\_SB.PCI0`) and the ECAM reservation.
pub fn dsdt_aml(mmio64_base: u64) -> Vec<u8> {
    let m32 = Window {
        base: layout::PCI_MMIO32_START,
        size: layout::PCI_MMIO32_SIZE,
    };
    let m64 = Window {
        base: mmio64_base,
        size: layout::PCI_MMIO64_SIZE,
    };
    let bus_numbers = AddressSpace::<u16>::new_bus_number(0, 0);
    let cfg_ports = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = AddressSpace::<u16>::new_io(0, 0xcf7, None);
    let io_high = AddressSpace::<u16>::new_io(0xd00, 0xffff, None);
    let mem32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        m32.base as u32,
        (m32.base + m32.size - 1) as u32,
        None,
    );
    let mem64 = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        m64.base,
        m64.base + m64.size - 1,
        None,
    );
    let crs = ResourceTemplate::new(vec![
        &bus_numbers,
        &cfg_ports,
        &io_low,
        &io_high,
        &mem32,
        &mem64,
    ]);

    let entries = prt_entries();
    let packages: Vec<Package> = entries
        .iter()
        .map(|(adr, pin, src, gsi)| Package::new(vec![adr, pin, src, gsi]))
        .collect();
    let prt = Package::new(packages.iter().map(|p| p as &dyn Aml).collect());

    let (hid, cid, zero, one) = (EISAName::new("PNP0A08"), EISAName::new("PNP0A03"), 0u8, 1u8);
    let names = [
        Name::new("_HID".into(), &hid),
        Name::new("_CID".into(), &cid),
        Name::new("_ADR".into(), &zero),
        Name::new("_SEG".into(), &zero),
        Name::new("_UID".into(), &zero),
        Name::new("_BBN".into(), &zero),
        Name::new("_CRS".into(), &crs),
        Name::new("_PRT".into(), &prt),
    ];
    let pci0 = Device::new(
        "_SB_.PCI0".into(),
        names.iter().map(|n| n as &dyn Aml).collect(),
    );
    let ecam = Memory32Fixed::new(false, layout::ECAM_START as u32, layout::ECAM_SIZE as u32);
    let ecam_crs = ResourceTemplate::new(vec![&ecam]);
    let res_hid = EISAName::new("PNP0C02");
    let res_names = [
        Name::new("_HID".into(), &res_hid),
        Name::new("_UID".into(), &one),
        Name::new("_CRS".into(), &ecam_crs),
    ];
    let motherboard = Device::new(
        "_SB_.MRES".into(),
        res_names.iter().map(|n| n as &dyn Aml).collect(),
    );
    let mut bytes = aml(&pci0);
    bytes.extend(aml(&motherboard));
    bytes
}

/// The MCFG table: ECAM for segment 0, bus 0.
pub fn mcfg() -> Vec<u8> {
    let mut t = MCFG::new(*b"VFIOVM", *b"VFIOVMM ", 1);
    t.add_ecam(layout::ECAM_START, 0, 0, 0);
    aml(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prt_covers_every_slot_and_pin_on_pci_ioapic_pins() {
        let prt = prt_entries();
        assert_eq!(prt.len(), 31 * 4);
        assert!(prt.iter().all(|&(_, _, _, gsi)| (16..24).contains(&gsi)));
        assert!(prt.contains(&((3 << 16) | 0xffff, 0, 0, 19)));
    }

    #[test]
    fn root_bridge_names_its_windows_and_the_ecam_is_reserved() {
        let dsdt = dsdt_aml(layout::FOUR_GIB);
        for name in [&b"PCI0"[..], b"_CRS", b"_PRT", b"MRES"] {
            assert!(
                dsdt.windows(4).any(|w| w == name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        let mcfg = mcfg();
        assert_eq!(&mcfg[..4], b"MCFG");
        assert_eq!(
            u64::from_le_bytes(mcfg[44..52].try_into().unwrap()),
            layout::ECAM_START
        );
        assert_eq!(mcfg.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn config_ports_reach_the_host_bridge() {
        let bus = new_bus(layout::FOUR_GIB).unwrap();
        let mut ports = ConfigPorts(bus.clone());
        ports.write(0, &0x8000_0000u32.to_le_bytes());
        let mut id = [0u8; 4];
        ports.read(4, &mut id);
        assert_eq!(u32::from_le_bytes(id) & 0xffff, 0x8086);
        let mut ecam = Ecam(bus);
        let mut id2 = [0u8; 4];
        ecam.read(0, &mut id2);
        assert_eq!(id, id2);
    }
}
