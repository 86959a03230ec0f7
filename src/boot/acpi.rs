//! The ACPI tables (acpi_tables crate): RSDP, XSDT, a hardware-reduced FADT
//! with sleep and reset registers, a DSDT with `_S5_` (and whatever devices
//! the caller adds), and a MADT listing every vCPU's local APIC and the IOAPIC.

use acpi_tables::aml::{Name, Package};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::layout;
use crate::memory::GuestMemory;

const OEM_ID: [u8; 6] = *b"VFIOVM";
const OEM_TABLE: [u8; 8] = *b"VFIOVMM ";
/// SLP_TYP the DSDT's `_S5_` names; the sleep control register looks for it.
pub const S5_SLEEP_TYPE: u8 = 5;

/// Errors while writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit in the BIOS area reserved for them.
    #[error("the ACPI tables ({0} bytes) overflow the area reserved for them")]
    TooLarge(usize),
    /// Writing them into guest memory failed.
    #[error("cannot write the ACPI tables: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// What the tables describe besides the fixed platform.
pub struct AcpiInputs<'a> {
    /// Number of vCPUs (APIC ids 0..cpus).
    pub cpus: u8,
    /// Extra DSDT objects as AML bytes (the PCI root bridge, for instance).
    pub dsdt_devices: &'a [u8],
    /// Other tables to list in the XSDT (the MCFG, for instance), as raw bytes.
    pub extra_tables: Vec<Vec<u8>>,
}

fn bytes_of(aml: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    aml.to_aml_bytes(&mut v);
    v
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// The DSDT with `_S5_` and `devices` (AML bytes), checksummed.
pub(crate) fn dsdt(devices: &[u8]) -> Vec<u8> {
    let mut t = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE, 1);
    let s5 = Name::new(
        "_S5_".into(),
        &Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &0u8, &0u8]),
    );
    s5.to_aml_bytes(&mut t);
    devices.iter().for_each(|&b| t.append(b));
    t.update_checksum();
    t.as_slice().to_vec()
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    f.sleep_control_reg = io_register(layout::ACPI_SLEEP_CONTROL_PORT);
    f.sleep_status_reg = io_register(layout::ACPI_SLEEP_STATUS_PORT);
    f.reset_reg = io_register(layout::ACPI_RESET_PORT);
    f.reset_value = layout::ACPI_RESET_VALUE;
    bytes_of(&f.finalize())
}

fn madt(cpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        OEM_TABLE,
        1,
        LocalInterruptController::Address(layout::LAPIC_ADDR as u32),
    );
    for id in 0..cpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    m.add_structure(IoApic::new(0, layout::IOAPIC_ADDR as u32, 0));
    bytes_of(&m)
}

/// Builds the tables and writes them at [`layout::ACPI_START`], RSDP first.
pub fn write_tables(mem: &GuestMemory, inputs: &AcpiInputs) -> Result<(), AcpiError> {
    let align = |a: u64| (a + 7) & !7;
    let mut next = align(layout::ACPI_START + Rsdp::len() as u64);
    let mut place = |table: &[u8]| -> Result<u64, AcpiError> {
        let addr = next;
        mem.write_slice(table, GuestAddress(addr))?;
        next = align(addr + table.len() as u64);
        Ok(addr)
    };
    let dsdt_addr = place(&dsdt(inputs.dsdt_devices))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    xsdt.add_entry(place(&fadt(dsdt_addr))?);
    xsdt.add_entry(place(&madt(inputs.cpus))?);
    for table in &inputs.extra_tables {
        xsdt.add_entry(place(table)?);
    }
    let xsdt_addr = place(&bytes_of(&xsdt))?;
    if next > layout::HIMEM_START {
        return Err(AcpiError::TooLarge((next - layout::ACPI_START) as usize));
    }
    mem.write_slice(
        &bytes_of(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(layout::ACPI_START),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryConfig;
    use crate::memory::create_guest_memory;

    fn checksum_ok(t: &[u8]) -> bool {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn table_at(mem: &GuestMemory, addr: u64) -> Vec<u8> {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut v = vec![0u8; len as usize];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    #[test]
    fn rsdp_leads_to_fadt_and_madt_with_every_cpu() {
        let mem = create_guest_memory(
            &MemoryConfig {
                size: 64 << 20,
                hugepages: false,
                mergeable: false,
            },
            &[(0, 64 << 20)],
        )
        .unwrap();
        write_tables(
            &mem,
            &AcpiInputs {
                cpus: 3,
                dsdt_devices: &[],
                extra_tables: vec![],
            },
        )
        .unwrap();
        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(layout::ACPI_START))
            .unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(&rsdp));
        let xsdt = table_at(&mem, u64::from_le_bytes(rsdp[24..32].try_into().unwrap()));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert!(checksum_ok(&xsdt));
        let entries: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let tables: Vec<Vec<u8>> = entries.iter().map(|&a| table_at(&mem, a)).collect();
        assert!(tables.iter().all(|t| checksum_ok(t)));
        let fadt = tables.iter().find(|t| &t[..4] == b"FACP").unwrap();
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & Flags::HwReducedAcpi as u32, 0);
        let dsdt = table_at(&mem, u64::from_le_bytes(fadt[140..148].try_into().unwrap()));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        let madt = tables.iter().find(|t| &t[..4] == b"APIC").unwrap();
        let lapics = madt[44..].chunks(8).take_while(|c| c[0] == 0).count();
        assert_eq!(lapics, 3);
    }
}
