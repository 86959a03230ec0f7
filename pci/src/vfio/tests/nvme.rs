//! A function laid out as QEMU's emulated NVMe controller: one 16 KiB BAR0
//! holding the registers (page 0), the doorbells (page 1), then the MSI-X
//! table (65 vectors, page 2) and PBA (page 3). The register and doorbell
//! pages must be mapped straight into the guest, only the MSI-X pages trap,
//! and all 65 vectors reach VFIO.

use super::device::Rig;
use super::fakes::{fake_host_addr, Call, FakeVfio};
use crate::device::PciDevice;
use crate::vfio::ops::Area;
use crate::vfio::{IrqMode, INTX_IRQ, MSIX_IRQ};

/// MSI-X capability offset.
const MSIX_CAP: usize = 0x40;
/// Vectors in the table: QEMU's default `msix_qsize` (64 I/O queues + admin).
const VECTORS: usize = 65;

/// Config space: vendor 1b36 device 0010, class 010802 (NVMe), BAR0 64-bit
/// memory; MSI-X (0x40) → PCIe (0x80); INTA#.
fn nvme_config() -> Vec<u8> {
    let mut c = vec![0u8; 4096];
    let mut put = |o: usize, b: &[u8]| c[o..o + b.len()].copy_from_slice(b);
    put(0x00, &0x1b36u16.to_le_bytes());
    put(0x02, &0x0010u16.to_le_bytes());
    put(0x06, &0x0010u16.to_le_bytes());
    put(0x08, &[0x02, 0x02, 0x08, 0x01]);
    put(0x10, &0x0000_0004u32.to_le_bytes());
    put(0x34, &[MSIX_CAP as u8]);
    put(0x3d, &[1]);
    put(MSIX_CAP, &[0x11, 0x80]);
    put(MSIX_CAP + 2, &((VECTORS - 1) as u16).to_le_bytes());
    put(MSIX_CAP + 4, &0x0000_2000u32.to_le_bytes());
    put(MSIX_CAP + 8, &0x0000_3000u32.to_le_bytes());
    put(0x80, &[0x10, 0x00, 0x02, 0x00]);
    c
}

fn nvme(sparse: Option<Vec<Area>>) -> FakeVfio {
    let mut vfio = FakeVfio::new(nvme_config())
        .region(0, 0x4000, true)
        .irq(INTX_IRQ, 1)
        .irq(MSIX_IRQ, VECTORS as u32);
    vfio.regions.get_mut(&0).unwrap().sparse_areas = sparse;
    vfio
}

#[test]
fn registers_and_doorbells_are_mapped_and_only_msix_pages_trap() {
    // Whole BAR mmappable (MSIX_MAPPABLE), or the kernel's sparse areas
    // around the table page: the same two pages go to the guest.
    let sparse = vec![
        Area {
            offset: 0,
            size: 0x2000,
        },
        Area {
            offset: 0x3000,
            size: 0x1000,
        },
    ];
    for areas in [None, Some(sparse)] {
        let rig = Rig::new(nvme(areas.clone()));
        let dev = rig.attach();
        dev.bar_handle().place(0, 0x1_0000_0000).unwrap();
        assert_eq!(
            rig.mapper.mappings(),
            vec![(0x1_0000_0000, 0x2000, fake_host_addr(0, 0))],
            "sparse areas {areas:?}"
        );
        let report = dev.stats().report("nvme");
        assert!(
            report.contains("nvme BAR0: 64-bit memory BAR, 16 KiB, 8 KiB mapped in 1 slot(s), trapped accesses: 0 reads, 0 writes"),
            "{report}"
        );
    }
}

#[test]
fn all_65_vectors_are_wired_and_the_table_is_emulated() {
    let rig = Rig::new(nvme(None));
    let mut dev = rig.attach();
    rig.vfio.take(false);
    let fds = rig.irqs.fds.lock().unwrap().clone();
    assert_eq!(fds.len(), VECTORS);
    dev.config_write(
        MSIX_CAP + 2,
        &(0x8000u16 | (VECTORS as u16 - 1)).to_le_bytes(),
    );
    assert_eq!(
        rig.vfio.take(false),
        vec![Call::Disable(INTX_IRQ), Call::Enable(MSIX_IRQ, fds.clone())]
    );
    assert_eq!(dev.irq_mode(), IrqMode::Msix(VECTORS));
    // The driver programs and unmasks the last vector: emulated, never
    // forwarded to the device, never counted as a trapped BAR access.
    let entry = 0x2000 + (VECTORS as u64 - 1) * 16;
    dev.bar_write(0, entry, &0xfee0_0000u32.to_le_bytes());
    dev.bar_write(0, entry + 8, &0x41u32.to_le_bytes());
    dev.bar_write(0, entry + 12, &0u32.to_le_bytes());
    let mut pba = [0u8; 8];
    dev.bar_read(0, 0x3008, &mut pba);
    assert!(
        rig.vfio.take(true).is_empty(),
        "the table never reaches VFIO"
    );
    let log = rig.irqs.log.lock().unwrap().clone();
    assert!(
        log.contains(&(24 + VECTORS as u32 - 1, "unmask", None)),
        "{log:?}"
    );
    let stats = dev.stats();
    assert_eq!((stats.trapped(0), stats.msix_accesses()), ((0, 0), 4));
    // An access in the trapped pages outside the table and PBA (none in
    // QEMU's layout) is forwarded and counted as trapped.
    dev.bar_write(0, 0x2800, &[1]);
    assert_eq!(stats.trapped(0), (0, 1));
    assert!(stats.report("nvme").contains("mode MSI-X (65 vectors)"));
}
