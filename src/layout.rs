//! The guest physical address map: where RAM, the boot structures, the ACPI
//! tables, the MMIO hole and the interrupt controllers live, which IOAPIC pin
//! each PCI INTx line reaches, and the E820 map that tells the guest about it.

/// The real-mode IVT/BDA area ends here; the GDT and IDT follow.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT; Linux installs its own.
pub const IDT_ADDR: u64 = 0x520;
/// PVH boot: the `hvm_start_info` EBX points at.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH boot: the module list (the initramfs), after the 56-byte start info.
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH boot: the memory map, after the one module entry, up to the zero page.
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Boot stack top for the BSP's first instructions.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// PML4 of the identity map the kernel starts with; PDPT and PD follow.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table (one entry used).
pub const PDPT_ADDR: u64 = 0xa000;
/// Page directory mapping the first 1 GiB with 2 MiB pages.
pub const PD_ADDR: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// End of conventional low RAM (the EBDA starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// Where the ACPI tables go (RSDP first, found by the guest's legacy scan too).
pub const ACPI_START: u64 = 0xe0000;
/// End of the BIOS area; extended memory starts here.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole: RAM below 4 GiB stops here.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// 4 GiB: RAM that did not fit below the hole continues here.
pub const FOUR_GIB: u64 = 1 << 32;
/// 32-bit PCI MMIO window (BARs below 4 GiB).
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
/// Size of the 32-bit PCI MMIO window.
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCIe ECAM (MMCONFIG) window, one bus of 1 MiB is used.
pub const ECAM_START: u64 = 0xe000_0000;
/// ECAM covers buses 0..=0 (1 MiB per bus).
pub const ECAM_SIZE: u64 = 0x10_0000;
/// I/O port window for PCI I/O BARs.
pub const PCI_IO_START: u64 = 0xc000;
/// Size of the PCI I/O port window.
pub const PCI_IO_SIZE: u64 = 0x4000;
/// Size of the 64-bit PCI MMIO window above RAM.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;

/// Start of the 64-bit PCI MMIO window: the first 1 GiB boundary above RAM and 4 GiB.
pub fn pci_mmio64_start(mem_size: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    ram_end(mem_size).max(FOUR_GIB).div_ceil(GIB) * GIB
}

/// KVM's identity-map page (needed by VMX for real mode; harmless elsewhere).
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
/// KVM's TSS (three pages after the identity map).
pub const KVM_TSS_ADDR: u64 = 0xfeff_d000;
/// The IOAPIC's MMIO page.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// The local APICs' MMIO page.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// I/O port of the ACPI sleep control register (hardware-reduced ACPI).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// I/O port of the ACPI sleep status register.
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// I/O port of the ACPI reset register.
pub const ACPI_RESET_PORT: u16 = 0x602;
/// The value the guest writes to the reset register.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// The ACPI GED's event register (one byte; `devices::ged`).
pub const GED_PORT: u16 = 0x608;
/// The ACPI GED's interrupt: an ISA pin nothing else uses (edge, active high).
pub const GED_IRQ: u32 = 5;
/// COM1.
pub const SERIAL_PORT: u16 = 0x3f8;
/// COM1's ISA interrupt.
pub const SERIAL_IRQ: u32 = 4;
/// First IOAPIC pin used for PCI INTx (pins 16..23, as on a PC).
pub const PCI_INTX_BASE: u32 = 16;
/// Number of IOAPIC pins PCI INTx is spread over.
pub const PCI_INTX_PINS: u32 = 8;

/// The IOAPIC pin that `pin` of PCI slot `slot` is wired to (the classic swizzle).
pub fn intx_gsi(slot: u8, pin: pci::IntxPin) -> u32 {
    PCI_INTX_BASE + (u32::from(slot) + u32::from(pin.index())) % PCI_INTX_PINS
}
/// CMOS/RTC index port (data at +1).
pub const CMOS_PORT: u16 = 0x70;
/// i8042 data and command ports start here (0x60, 0x64).
pub const I8042_PORT: u16 = 0x60;

/// E820 entry type for usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 entry type for reserved ranges.
pub const E820_RESERVED: u32 = 2;

pub use iommu::vfio::GuestLayout;

/// The usual layout for `mem_size` bytes of RAM: below the hole, then above
/// 4 GiB, with the 64-bit PCI window above both (no IOMMU limits to avoid).
pub fn default_layout(mem_size: u64) -> GuestLayout {
    GuestLayout {
        ram: ram_regions(mem_size),
        mmio64_base: pci_mmio64_start(mem_size),
    }
}

/// One E820 map entry: [addr, addr + size) of type `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The guest RAM regions for `mem_size` bytes: below the MMIO hole, then above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    let low = mem_size.min(MMIO_HOLE_START);
    let mut regions = vec![(0, low)];
    if mem_size > low {
        regions.push((FOUR_GIB, mem_size - low));
    }
    regions
}

/// The first address above guest RAM.
pub fn ram_end(mem_size: u64) -> u64 {
    ram_regions(mem_size)
        .last()
        .map(|(start, size)| start + size)
        .unwrap_or(0)
}

/// The E820 map the guest sees for RAM in `ram` regions.
///
/// Low RAM stops at the EBDA; the BIOS area holding the ACPI tables and the
/// ECAM window are reserved so the guest neither uses nor reassigns them.
pub fn e820_map(ram_regions: &[(u64, u64)]) -> Vec<E820Entry> {
    let ram = |addr, end: u64| E820Entry {
        addr,
        size: end - addr,
        kind: E820_RAM,
    };
    let reserved = |addr, size| E820Entry {
        addr,
        size,
        kind: E820_RESERVED,
    };
    let mut map = vec![
        ram(0, EBDA_START),
        reserved(ACPI_START, HIMEM_START - ACPI_START),
    ];
    for &(start, size) in ram_regions {
        let end = start + size;
        let start = start.max(HIMEM_START);
        if end > start {
            map.push(ram(start, end));
        }
    }
    map.push(reserved(ECAM_START, ECAM_SIZE));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_guest_has_one_ram_region() {
        assert_eq!(ram_regions(256 * MIB), vec![(0, 256 * MIB)]);
        assert_eq!(ram_end(256 * MIB), 256 * MIB);
    }

    #[test]
    fn ram_above_the_hole_continues_at_4g() {
        let regions = ram_regions(5 * GIB);
        assert_eq!(regions, vec![(0, 3 * GIB), (FOUR_GIB, 2 * GIB)]);
        assert_eq!(ram_end(5 * GIB), 6 * GIB);
    }

    #[test]
    fn the_64_bit_window_starts_above_ram_on_a_gib_boundary() {
        assert_eq!(pci_mmio64_start(256 * MIB), FOUR_GIB);
        assert_eq!(pci_mmio64_start(5 * GIB + MIB), 7 * GIB);
        assert_eq!(pci_mmio64_start(3 * GIB), FOUR_GIB);
    }

    #[test]
    fn e820_skips_bios_area_and_reserves_acpi_and_ecam() {
        let map = e820_map(&ram_regions(256 * MIB));
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM
            }
        );
        assert!(map.contains(&E820Entry {
            addr: HIMEM_START,
            size: 255 * MIB,
            kind: E820_RAM
        }));
        assert!(map
            .iter()
            .any(|e| e.kind == E820_RESERVED && e.addr == ACPI_START));
        assert!(map
            .iter()
            .any(|e| e.kind == E820_RESERVED && e.addr == ECAM_START));
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, 256 * MIB - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn e820_high_ram_is_above_4g_and_no_ram_overlaps_the_hole() {
        let map = e820_map(&ram_regions(4 * GIB));
        assert!(map.contains(&E820Entry {
            addr: FOUR_GIB,
            size: GIB,
            kind: E820_RAM
        }));
        for e in map.iter().filter(|e| e.kind == E820_RAM) {
            assert!(
                e.addr + e.size <= MMIO_HOLE_START || e.addr >= FOUR_GIB,
                "{e:?}"
            );
        }
    }
}
