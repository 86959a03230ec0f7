//! Tests of the VFIO PCI device against a fake VFIO device, interrupt
//! manager and guest mapper: config space layout, BAR mapping, interrupt
//! mode switching and attach errors.

mod device;
mod fakes;
mod fuzz;
mod irqs;
mod layout;
mod nvme;

/// Config space of a PCIe NIC-like function used by most tests:
/// BAR0 32-bit memory, BAR2 64-bit memory holding the MSI-X table (at 0)
/// and PBA (at 0x800), BAR4 I/O; capabilities PM (0x40) → MSI (0x50, 64-bit,
/// 4 vectors) → MSI-X (0x70, 5 vectors) → PCIe (0xa0); extended AER (0x100)
/// → SR-IOV (0x140) → DSN (0x180); INTA#.
pub fn nic_config() -> Vec<u8> {
    let mut c = vec![0u8; 4096];
    let mut put = |o: usize, b: &[u8]| c[o..o + b.len()].copy_from_slice(b);
    put(0x00, &0x8086u16.to_le_bytes());
    put(0x02, &0x10d3u16.to_le_bytes());
    put(0x06, &0x0010u16.to_le_bytes());
    put(0x08, &[0x01, 0x00, 0x00, 0x02]);
    put(0x10, &0xfebc_0000u32.to_le_bytes());
    put(0x18, &0xfebf_0004u32.to_le_bytes());
    put(0x20, &0x0000_c001u32.to_le_bytes());
    put(0x2c, &0x8086u16.to_le_bytes());
    put(0x34, &[0x40]);
    put(0x3d, &[1]);
    put(0x40, &[0x01, 0x50, 0x03, 0x00]);
    put(0x50, &[0x05, 0x70]);
    put(0x52, &0x0084u16.to_le_bytes());
    put(0x70, &[0x11, 0xa0]);
    put(0x72, &0x0004u16.to_le_bytes());
    put(0x74, &0x0000_0002u32.to_le_bytes());
    put(0x78, &0x0000_0802u32.to_le_bytes());
    put(0xa0, &[0x10, 0x00, 0x02, 0x00]);
    put(
        0x100,
        &(0x0001u32 | (1 << 16) | (0x140 << 20)).to_le_bytes(),
    );
    put(
        0x140,
        &(0x0010u32 | (1 << 16) | (0x180 << 20)).to_le_bytes(),
    );
    put(0x180, &(0x0003u32 | (1 << 16)).to_le_bytes());
    c
}
