//! Attaching the fake NIC and driving it as a guest would: config merging,
//! BAR mapping and moves, trapped accesses, ROM and attach errors.

use std::sync::Arc;

use super::fakes::{fake_host_addr, Call, FakeIrqs, FakeMapper, FakeVfio};
use super::nic_config;
use crate::bar::{BarKind, BarMove, ROM_BAR};
use crate::device::{PciAddress, PciDevice};
use crate::vfio::{
    AttachContext, IrqMode, VfioPciDevice, VfioPciError, VfioPciOptions, CONFIG_REGION, INTX_IRQ,
    MSIX_IRQ, MSI_IRQ, ROM_REGION,
};

/// The fake NIC: BAR0 128 KiB, BAR2 16 KiB (64-bit, MSI-X inside), BAR4 32 I/O ports, 64 KiB ROM.
pub fn nic() -> FakeVfio {
    FakeVfio::new(nic_config())
        .region(0, 0x20000, true)
        .region(2, 0x4000, true)
        .region(4, 0x20, false)
        .region(ROM_REGION, 0x10000, false)
        .irq(INTX_IRQ, 1)
        .irq(MSI_IRQ, 4)
        .irq(MSIX_IRQ, 5)
}

pub struct Rig {
    pub vfio: Arc<FakeVfio>,
    pub irqs: FakeIrqs,
    pub mapper: Arc<FakeMapper>,
}

impl Rig {
    pub fn new(vfio: FakeVfio) -> Self {
        Rig {
            vfio: Arc::new(vfio),
            irqs: FakeIrqs::default(),
            mapper: Arc::new(FakeMapper::default()),
        }
    }

    pub fn attach_with(&self, options: VfioPciOptions) -> Result<VfioPciDevice, VfioPciError> {
        VfioPciDevice::attach(
            self.vfio.clone(),
            AttachContext {
                name: "0000:01:00.0".into(),
                address: PciAddress::new(0, 3, 0).unwrap(),
                interrupts: &self.irqs,
                mapper: self.mapper.clone(),
                options,
            },
        )
    }

    pub fn attach(&self) -> VfioPciDevice {
        self.attach_with(VfioPciOptions::default()).unwrap()
    }
}

pub fn read32(dev: &mut VfioPciDevice, offset: usize) -> u32 {
    let mut b = [0u8; 4];
    dev.config_read(offset, &mut b);
    u32::from_le_bytes(b)
}

pub fn write32(dev: &mut VfioPciDevice, offset: usize, value: u32) {
    dev.config_write(offset, &value.to_le_bytes());
}

#[test]
fn attach_resets_declares_bars_and_wires_intx() {
    let rig = Rig::new(nic());
    let dev = rig.attach();
    let calls = rig.vfio.take(false);
    let (trigger, resample) = rig.irqs.intx_fds.lock().unwrap().unwrap();
    assert_eq!(calls[0], Call::Reset);
    assert!(
        calls.contains(&Call::Enable(INTX_IRQ, vec![trigger])),
        "{calls:?}"
    );
    assert!(calls.contains(&Call::Resample(resample)), "{calls:?}");
    let config = dev.config();
    assert_eq!(
        config.bar(0).unwrap().kind,
        BarKind::Memory32 {
            prefetchable: false
        }
    );
    assert_eq!(
        config.bar(2).unwrap().kind,
        BarKind::Memory64 {
            prefetchable: false
        }
    );
    assert_eq!(config.bar(4).unwrap().kind, BarKind::Io);
    assert_eq!(config.bar(ROM_BAR).unwrap().size, 0x10000);
    assert_eq!(config.read_u8(0x3c), 17);
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
}

#[test]
fn a_device_without_reset_still_attaches() {
    let mut vfio = nic();
    vfio.resettable = false;
    let rig = Rig::new(vfio);
    let dev = rig.attach();
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
}

#[test]
fn config_reads_merge_device_and_shadow() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    assert_eq!(read32(&mut dev, 0), 0x10d3_8086, "identity from the device");
    assert_eq!(
        read32(&mut dev, 0x10),
        0,
        "BAR from the shadow, not the host address"
    );
    assert_eq!(read32(&mut dev, 0x18) & 0xf, 0x4, "64-bit flag kept");
    assert_eq!(read32(&mut dev, 0x3c) & 0xffff, 0x0111, "line 17, pin A");
    // MSI capability: emulated at the hardware's offset, same shape.
    assert_eq!(read32(&mut dev, 0x50) & 0xffff_00ff, 0x0084_0005);
    // Extended space: SR-IOV unlinked.
    assert_eq!(read32(&mut dev, 0x100) >> 20, 0x180);
}

#[test]
fn bar_sizing_stays_in_the_shadow() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    rig.vfio.take(true);
    write32(&mut dev, 0x10, 0xffff_ffff);
    assert_eq!(
        read32(&mut dev, 0x10),
        0xfffe_0000,
        "128 KiB BAR sizes as such"
    );
    assert!(rig.vfio.take(true).is_empty(), "nothing reaches the device");
}

#[test]
fn the_command_register_reaches_both_sides() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    rig.vfio.take(true);
    dev.config_write(4, &0x0406u16.to_le_bytes());
    assert_eq!(
        rig.vfio.take(true),
        vec![Call::Write(CONFIG_REGION, 4, vec![0x06, 0x04])]
    );
    assert_eq!(dev.config().command(), 0x0406);
    let mut cmd = [0u8; 2];
    dev.config_read(4, &mut cmd);
    assert_eq!(u16::from_le_bytes(cmd), 0x0406);
}

#[test]
fn writes_to_hidden_capabilities_are_dropped() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    rig.vfio.take(true);
    write32(&mut dev, 0x148, 0x1); // SR-IOV control: VF enable
    assert!(rig.vfio.take(true).is_empty());
    assert_eq!(rig.vfio.byte(CONFIG_REGION, 0x148), 0);
    write32(&mut dev, 0x184, 0x5a);
    assert_eq!(
        rig.vfio.take(true).len(),
        1,
        "visible capabilities pass through"
    );
}

#[test]
fn bars_map_where_placed_and_follow_moves() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    let bars = dev.bar_handle();
    bars.place(0, 0xc000_0000).unwrap();
    bars.place(2, 0x1_0000_0000).unwrap();
    assert_eq!(
        rig.mapper.mappings(),
        vec![
            (0xc000_0000, 0x20000, fake_host_addr(0, 0)),
            (0x1_0000_1000, 0x3000, fake_host_addr(2, 0x1000)),
        ],
        "BAR2's first page holds the MSI-X table and PBA, so it stays trapped"
    );
    let mv = BarMove {
        address: PciAddress::new(0, 3, 0).unwrap(),
        bar: 0,
        kind: BarKind::Memory32 {
            prefetchable: false,
        },
        old: Some(0xc000_0000),
        new: 0xd000_0000,
        size: 0x20000,
    };
    dev.move_bar(&mv).unwrap();
    assert_eq!(
        rig.mapper.mappings()[0],
        (0xd000_0000, 0x20000, fake_host_addr(0, 0))
    );
    assert_eq!(rig.mapper.mappings().len(), 2);
    drop(dev);
    drop(bars);
    assert!(rig.mapper.mappings().is_empty(), "slots go with the device");
}

#[test]
fn a_move_that_cannot_be_mapped_falls_back_to_trapping() {
    let mut rig = Rig::new(nic());
    rig.mapper = Arc::new(FakeMapper {
        refuse_from: Some(0xd000_0000),
        ..Default::default()
    });
    let mut dev = rig.attach();
    dev.bar_handle().place(0, 0xc000_0000).unwrap();
    let mv = BarMove {
        address: PciAddress::new(0, 3, 0).unwrap(),
        bar: 0,
        kind: BarKind::Memory32 {
            prefetchable: false,
        },
        old: Some(0xc000_0000),
        new: 0xd000_0000,
        size: 0x20000,
    };
    assert!(dev.move_bar(&mv).is_ok());
    assert!(
        rig.mapper.mappings().is_empty(),
        "nothing left at the old place"
    );
    let mut b = [0u8; 4];
    dev.bar_read(0, 0x10, &mut b);
    assert_eq!(b, [0x10, 0x11, 0x12, 0x13], "served by forwarding");
}

#[test]
fn trapped_accesses_are_forwarded_and_counted() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    let mut b = [0u8; 2];
    dev.bar_read(4, 0x10, &mut b);
    assert_eq!(b, [0x10, 0x11]);
    dev.bar_write(4, 0x4, &[0xaa]);
    assert_eq!(rig.vfio.byte(4, 4), 0xaa);
    let mut rom = [0u8; 2];
    dev.bar_read(ROM_BAR, 0x0, &mut rom);
    assert_eq!(rom, [0x00, 0x01]);
    dev.bar_write(ROM_BAR, 0x0, &[0xff]);
    assert_eq!(rig.vfio.byte(ROM_REGION, 0), 0, "the ROM is read-only");
    let stats = dev.stats();
    assert_eq!(stats.trapped(4), (1, 1));
    assert_eq!(stats.trapped(ROM_BAR), (1, 1));
    // An out-of-range access reads as ones instead of panicking.
    let mut far = [0u8; 4];
    dev.bar_read(4, 0x1e, &mut far);
    assert_eq!(far, [0xff; 4]);
    let report = stats.report("0000:01:00.0");
    assert!(
        report.contains(
            "BAR4: I/O BAR, 32 B, 0 B mapped in 0 slot(s), trapped accesses: 2 reads, 1 writes"
        ),
        "{report}"
    );
    assert!(report.contains("relayed by vfio-vmm: 0"), "{report}");
}

#[test]
fn the_msix_table_is_emulated_not_forwarded() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    rig.vfio.take(true);
    dev.bar_write(2, 0x8, &0x4041u32.to_le_bytes());
    let mut b = [0u8; 4];
    dev.bar_read(2, 0x8, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x4041);
    assert!(rig.vfio.take(true).is_empty());
    assert_eq!(dev.stats().msix_accesses(), 2);
    assert_eq!(dev.stats().trapped(2), (0, 0));
}

#[test]
fn rombar_off_hides_the_rom() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach_with(VfioPciOptions { rombar: false }).unwrap();
    assert!(dev.config().bar(ROM_BAR).is_none());
    write32(&mut dev, 0x30, 0xffff_f800);
    assert_eq!(read32(&mut dev, 0x30), 0);
}

#[test]
fn a_backend_without_eventfds_is_refused() {
    let mut rig = Rig::new(nic());
    rig.irqs.no_eventfd = true;
    let mut dev = rig.attach();
    // Vectors are fine until the guest enables MSI-X: then VFIO needs eventfds.
    dev.config_write(0x72, &0x8004u16.to_le_bytes());
    assert_eq!(dev.irq_mode(), IrqMode::Off);
}

#[test]
fn a_device_without_config_space_is_an_error() {
    let rig = Rig::new(FakeVfio::new(vec![0; 64]));
    let err = rig.attach_with(VfioPciOptions::default()).err().unwrap();
    assert!(err.to_string().contains("no configuration space"), "{err}");
}

#[test]
fn an_impossible_bar_is_an_error_naming_it() {
    let mut config = nic_config();
    config[0x10] = 0x1; // BAR0 claims I/O, but is 128 KiB
    let rig = Rig::new(FakeVfio::new(config).region(0, 0x20000, true));
    let err = rig.attach_with(VfioPciOptions::default()).err().unwrap();
    assert!(matches!(err, VfioPciError::Bar { bar: 0, .. }), "{err}");
}
