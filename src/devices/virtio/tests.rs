//! Tests of the virtio PCI transport (capabilities, feature negotiation,
//! queue setup, the status state machine, interrupts, notifications) with a
//! fake device model, fake interrupt backend and fake ioeventfd registry.
//! The net device with a real tap is tested in `net_tests.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pci::{
    BarKind, BarMove, InterruptError, InterruptManager, IntxLine, IntxPin, MsiMessage, MsiVector,
    PciAddress, PciDevice,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::pci_transport::*;
use super::*;
use crate::memory::GuestMemory;

/// What the fake interrupt backend saw.
#[derive(Default)]
pub(super) struct Fired {
    /// MSI-X vectors triggered, in order.
    pub msi: Mutex<Vec<usize>>,
    /// INTx level.
    pub intx: AtomicBool,
}

struct FakeVector {
    index: usize,
    fired: Arc<Fired>,
}

impl MsiVector for FakeVector {
    fn set_route(&mut self, _msg: MsiMessage) -> Result<(), InterruptError> {
        Ok(())
    }
    fn mask(&mut self) -> Result<(), InterruptError> {
        Ok(())
    }
    fn unmask(&mut self) -> Result<(), InterruptError> {
        Ok(())
    }
    fn trigger(&self) -> Result<(), InterruptError> {
        self.fired.msi.lock().unwrap().push(self.index);
        Ok(())
    }
}

struct FakeLine(Arc<Fired>);

impl IntxLine for FakeLine {
    fn assert(&self) -> Result<(), InterruptError> {
        self.0.intx.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn deassert(&self) -> Result<(), InterruptError> {
        self.0.intx.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn irq(&self) -> u8 {
        10
    }
}

/// Interrupt backend recording into a [`Fired`].
pub(super) struct FakeManager(pub Arc<Fired>);

impl InterruptManager for FakeManager {
    fn allocate_msi_vectors(
        &self,
        count: usize,
    ) -> Result<Vec<Box<dyn MsiVector>>, InterruptError> {
        Ok((0..count)
            .map(|index| {
                Box::new(FakeVector {
                    index,
                    fired: self.0.clone(),
                }) as Box<dyn MsiVector>
            })
            .collect())
    }
    fn allocate_intx(
        &self,
        _: PciAddress,
        _: IntxPin,
    ) -> Result<Box<dyn IntxLine>, InterruptError> {
        Ok(Box::new(FakeLine(self.0.clone())))
    }
}

/// ioeventfd registry recording addresses.
#[derive(Default)]
pub(super) struct FakeIoEvents(pub Mutex<Vec<u64>>);

impl IoEventRegistry for FakeIoEvents {
    fn register(&self, _evt: &EventFd, addr: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().push(addr);
        Ok(())
    }
    fn unregister(&self, _evt: &EventFd, addr: u64) -> std::io::Result<()> {
        let mut regs = self.0.lock().unwrap();
        let i = regs
            .iter()
            .position(|a| *a == addr)
            .ok_or(std::io::ErrorKind::NotFound)?;
        regs.remove(i);
        Ok(())
    }
}

/// What the fake device model saw.
#[derive(Default)]
struct Seen {
    activations: Mutex<Vec<(u64, Vec<Queue>)>>,
    resets: Mutex<usize>,
}

struct FakeDevice {
    seen: Arc<Seen>,
    sizes: [u16; 2],
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u16 {
        1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_EVENT_IDX | 1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = [0xa0, 0xa1, 0xa2, 0xa3]
                .get(offset as usize + i)
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), String> {
        self.seen
            .activations
            .lock()
            .unwrap()
            .push((ctx.features, ctx.queues));
        Ok(())
    }
    fn reset(&mut self) {
        *self.seen.resets.lock().unwrap() += 1;
    }
}

/// Guest RAM of 1 MiB at 0.
pub(super) fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

/// Base BAR 0 is placed at in these tests.
pub(super) const BAR_BASE: u64 = 0x1_0000_0000;

pub(super) struct Rig {
    pub dev: VirtioPciDevice,
    fired: Arc<Fired>,
    ioevents: Arc<FakeIoEvents>,
    seen: Arc<Seen>,
}

pub(super) fn rig() -> Rig {
    let fired = Arc::new(Fired::default());
    let ioevents = Arc::new(FakeIoEvents::default());
    let seen = Arc::new(Seen::default());
    let device = FakeDevice {
        seen: seen.clone(),
        sizes: [256, 64],
    };
    let mut dev = VirtioPciDevice::new(
        Box::new(device),
        PciAddress::new(0, 3, 0).unwrap(),
        memory(),
        &FakeManager(fired.clone()),
        ioevents.clone(),
    )
    .unwrap();
    place_bar(&mut dev);
    Rig {
        dev,
        fired,
        ioevents,
        seen,
    }
}

/// Programs BAR 0 at [`BAR_BASE`] and enables memory decoding, as firmware would.
pub(super) fn place_bar(dev: &mut VirtioPciDevice) {
    dev.config_mut().set_bar_address(0, BAR_BASE).unwrap();
    dev.config_write(4, &2u16.to_le_bytes());
}

pub(super) fn write(dev: &mut VirtioPciDevice, offset: u64, value: u64, len: usize) {
    dev.bar_write(0, offset, &value.to_le_bytes()[..len]);
}

pub(super) fn read(dev: &mut VirtioPciDevice, offset: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    dev.bar_read(0, offset, &mut b[..len]);
    u64::from_le_bytes(b)
}

/// Sets up queue `index` (size, rings via 32-bit halves) and enables it.
pub(super) fn setup_queue(
    dev: &mut VirtioPciDevice,
    index: u16,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
) {
    write(dev, 0x16, index.into(), 2);
    write(dev, 0x18, size.into(), 2);
    for (field, addr) in [(0x20, desc), (0x28, avail), (0x30, used)] {
        write(dev, field, addr & 0xffff_ffff, 4);
        write(dev, field + 4, addr >> 32, 4);
    }
    write(dev, 0x1c, 1, 2);
}

/// ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
pub(super) fn negotiate(dev: &mut VirtioPciDevice, features: u64) -> u8 {
    write(dev, 0x14, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER), 1);
    for select in 0..2u64 {
        write(dev, 0x08, select, 4);
        write(dev, 0x0c, (features >> (32 * select)) & 0xffff_ffff, 4);
    }
    write(
        dev,
        0x14,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
        1,
    );
    read(dev, 0x14, 1) as u8
}

/// Turns MSI-X on and unmasks every vector.
pub(super) fn enable_msix(dev: &mut VirtioPciDevice, vectors: u64) {
    let cap = dev.config().find_capability(0x11).unwrap();
    dev.config_write(cap + 2, &0x8000u16.to_le_bytes());
    for v in 0..vectors {
        let entry = MSIX_TABLE_OFFSET + v * 16;
        write(dev, entry, 0xfee0_0000, 4);
        write(dev, entry + 12, 0, 4);
    }
}

#[test]
fn identity_bar_and_capabilities() {
    let r = rig();
    let c = r.dev.config();
    assert_eq!(
        (c.read_u16(0), c.read_u16(2), c.read_u8(8)),
        (0x1af4, 0x1041, 1)
    );
    assert_eq!(c.read_u32(8) >> 8, 0x02_0000);
    assert_eq!(c.read_u8(0x3d), 1, "INTA#");
    assert_eq!(c.read_u8(0x3c), 10, "interrupt line from the backend");
    let bar = c.bar(0).unwrap();
    assert_eq!(
        (bar.kind, bar.size),
        (
            BarKind::Memory64 {
                prefetchable: false
            },
            BAR_SIZE
        )
    );
    let vendor: Vec<(u8, u8, u32, u32)> = c
        .capabilities()
        .into_iter()
        .filter(|(_, id)| *id == 0x09)
        .map(|(off, _)| {
            (
                c.read_u8(off + 3),
                c.read_u8(off + 4),
                c.read_u32(off + 8),
                c.read_u32(off + 12),
            )
        })
        .collect();
    assert_eq!(
        vendor,
        vec![
            (1, 0, 0, 0x38),
            (2, 0, 0x3000, 8),
            (3, 0, 0x1000, 4),
            (4, 0, 0x2000, 0x1000),
            (5, 0, 0, 0)
        ]
    );
    let notify = c
        .capabilities()
        .into_iter()
        .find(|(off, _)| c.read_u8(off + 3) == 2)
        .unwrap()
        .0;
    assert_eq!(c.read_u32(notify + 16), 4, "notify_off_multiplier");
    let msix = c.find_capability(0x11).unwrap();
    assert_eq!(c.read_u16(msix + 2) & 0x7ff, 2, "queues + 1 vectors");
}

#[test]
fn feature_negotiation() {
    let mut r = rig();
    let dev = &mut r.dev;
    write(dev, 0x00, 0, 4);
    assert_eq!(read(dev, 0x04, 4), (F_EVENT_IDX | 1) & 0xffff_ffff);
    write(dev, 0x00, 1, 4);
    assert_eq!(read(dev, 0x04, 4), 1, "VERSION_1 is bit 32");
    write(dev, 0x00, 7, 4);
    assert_eq!(read(dev, 0x04, 4), 0);

    // Something not offered: FEATURES_OK does not stick.
    assert_eq!(negotiate(dev, F_VERSION_1 | 1 << 3) & STATUS_FEATURES_OK, 0);
    write(dev, 0x14, 0, 1);
    // A legacy driver (no VERSION_1) is refused.
    assert_eq!(negotiate(dev, 1) & STATUS_FEATURES_OK, 0);
    write(dev, 0x14, 0, 1);
    // A subset with VERSION_1 is accepted and then frozen.
    assert_ne!(negotiate(dev, F_VERSION_1 | 1) & STATUS_FEATURES_OK, 0);
    write(dev, 0x08, 0, 4);
    write(dev, 0x0c, 0, 4);
    assert_eq!(
        read(dev, 0x0c, 4),
        1,
        "features are read-only after FEATURES_OK"
    );
}

#[test]
fn queue_setup_through_common_cfg_reaches_the_device() {
    let mut r = rig();
    let dev = &mut r.dev;
    assert_eq!(read(dev, 0x12, 2), 2, "num_queues");
    write(dev, 0x16, 1, 2);
    assert_eq!(read(dev, 0x18, 2), 64, "max size is the reset size");
    assert_eq!(read(dev, 0x1e, 2), 1, "queue_notify_off");
    write(dev, 0x16, 9, 2);
    assert_eq!(read(dev, 0x18, 2), 0, "absent queue reads size 0");

    negotiate(dev, F_VERSION_1 | F_EVENT_IDX);
    setup_queue(dev, 0, 128, 0x1000, 0x2000, 0x3000);
    setup_queue(dev, 1, 64, 0x4000, 0x5000, 0x6000);
    write(dev, 0x16, 0, 2);
    assert_eq!((read(dev, 0x18, 2), read(dev, 0x1c, 2)), (128, 1));
    assert_eq!(
        (read(dev, 0x20, 8), read(dev, 0x28, 4), read(dev, 0x34, 4)),
        (0x1000, 0x2000, 0)
    );
    write(dev, 0x14, 0x0f, 1);
    assert_eq!(read(dev, 0x14, 1), 0x0f);
    let acts = r.seen.activations.lock().unwrap();
    let (features, queues) = &acts[0];
    assert_eq!(*features, F_VERSION_1 | F_EVENT_IDX);
    assert_eq!(
        (
            queues[0].size(),
            queues[0].desc_table(),
            queues[0].used_ring()
        ),
        (128, 0x1000, 0x3000)
    );
    assert!(queues.iter().all(|q| q.ready() && q.event_idx_enabled()));
    drop(acts);
    // Setup is closed once DRIVER_OK is set.
    write(dev, 0x16, 0, 2);
    write(dev, 0x18, 16, 2);
    assert_eq!(read(dev, 0x18, 2), 128);
}

#[test]
fn status_state_machine_and_reset() {
    let mut r = rig();
    let dev = &mut r.dev;
    write(
        dev,
        0x14,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK),
        1,
    );
    assert_eq!(
        read(dev, 0x14, 1) as u8,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER,
        "DRIVER_OK needs FEATURES_OK"
    );
    assert!(r.seen.activations.lock().unwrap().is_empty());
    write(dev, 0x14, u64::from(STATUS_ACKNOWLEDGE), 1);
    assert_eq!(
        read(dev, 0x14, 1) as u8,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER,
        "bits only clear by reset"
    );
    write(dev, 0x10, 1, 2);
    write(dev, 0x16, 1, 2);
    write(dev, 0x1a, 2, 2);
    write(dev, 0x14, 0, 1);
    assert_eq!(read(dev, 0x14, 1), 0);
    assert_eq!(*r.seen.resets.lock().unwrap(), 1);
    assert_eq!((read(dev, 0x10, 2), read(dev, 0x16, 2)), (0xffff, 0));
    write(dev, 0x16, 1, 2);
    assert_eq!(read(dev, 0x1a, 2), 0xffff, "vectors unassigned by reset");
}

#[test]
fn garbage_queue_setup_marks_needs_reset_without_activating() {
    let cases: [(u16, u64); 3] = [
        (128, 0x10_0000_0000), // rings outside guest RAM
        (128, 0x1001),         // misaligned descriptor table
        (100, 0x1000),         // size not a power of two
    ];
    for (size, desc) in cases {
        let mut r = rig();
        let dev = &mut r.dev;
        enable_msix(dev, 3);
        write(dev, 0x10, 2, 2);
        negotiate(dev, F_VERSION_1);
        setup_queue(dev, 0, size, desc, 0x2000, 0x3000);
        setup_queue(dev, 1, 64, 0x4000, 0x5000, 0x6000);
        write(dev, 0x14, 0x0f, 1);
        assert_ne!(
            read(dev, 0x14, 1) as u8 & STATUS_NEEDS_RESET,
            0,
            "size {size} desc {desc:#x}"
        );
        assert!(r.seen.activations.lock().unwrap().is_empty());
        assert_eq!(
            *r.fired.msi.lock().unwrap(),
            vec![2],
            "config change vector"
        );
        assert_eq!(read(dev, ISR_OFFSET, 1), 2, "ISR config bit");
        write(dev, 0x14, 0, 1);
        assert_eq!(read(dev, 0x14, 1), 0, "reset clears NEEDS_RESET");
    }
}

#[test]
fn garbage_register_accesses_are_ignored() {
    let mut r = rig();
    let dev = &mut r.dev;
    for (off, len) in [
        (0x13, 1),
        (0x15, 1),
        (0x21, 4),
        (0x37, 8),
        (0x38, 4),
        (0x1ffe, 8),
        (0x7fff, 1),
    ] {
        dev.bar_write(0, off, &[0xff; 8][..len]);
        let mut b = [0u8; 8];
        dev.bar_read(0, off, &mut b[..len]);
    }
    dev.bar_write(0, 0, &[0xff; 3]);
    dev.bar_write(5, 0, &[1]);
    assert_eq!(read(dev, 0x14, 1), 0);
    assert_eq!(read(dev, 0x12, 2), 2);
    assert_eq!(
        read(dev, DEVICE_OFFSET + 2, 4),
        0x0000_a3a2,
        "device config, zero past its end"
    );
}

#[test]
fn msix_vectors_and_queue_interrupts() {
    let mut r = rig();
    let dev = &mut r.dev;
    write(dev, 0x10, 0, 2);
    assert_eq!(read(dev, 0x10, 2), 0);
    write(dev, 0x10, 3, 2);
    assert_eq!(
        read(dev, 0x10, 2),
        0xffff,
        "vector past the table is refused"
    );
    write(dev, 0x16, 1, 2);
    write(dev, 0x1a, 2, 2);
    assert_eq!(read(dev, 0x1a, 2), 2);
    enable_msix(dev, 3);
    dev.interrupts().signal_queue(1);
    dev.interrupts().signal_queue(0); // no vector assigned: nothing
    assert_eq!(*r.fired.msi.lock().unwrap(), vec![2]);
    assert!(!r.fired.intx.load(Ordering::SeqCst));
    assert_eq!(
        read(dev, ISR_OFFSET, 1),
        0,
        "queue interrupts do not touch the ISR under MSI-X"
    );
}

#[test]
fn intx_fallback_through_the_isr() {
    let mut r = rig();
    let dev = &mut r.dev;
    dev.interrupts().signal_queue(0);
    assert!(r.fired.intx.load(Ordering::SeqCst));
    let mut status = [0u8; 2];
    dev.config_read(6, &mut status);
    assert_ne!(u16::from_le_bytes(status) & 0x8, 0, "PCI Interrupt Status");
    assert_eq!(read(dev, ISR_OFFSET, 1), 1);
    assert!(
        !r.fired.intx.load(Ordering::SeqCst),
        "ISR read lowers the line"
    );
    assert_eq!(read(dev, ISR_OFFSET, 1), 0, "read clears");
    // INTx Disable keeps the line low while the ISR still records the event.
    dev.config_write(4, &(2u16 | 1 << 10).to_le_bytes());
    dev.interrupts().signal_queue(0);
    assert!(!r.fired.intx.load(Ordering::SeqCst));
    dev.config_write(4, &2u16.to_le_bytes());
    assert!(
        r.fired.intx.load(Ordering::SeqCst),
        "re-enabling INTx raises the pending line"
    );
}

#[test]
fn notifications_and_ioeventfds_follow_the_bar() {
    let mut r = rig();
    let dev = &mut r.dev;
    // A trapped notify write signals the queue's eventfd and registers the ioeventfds.
    write(dev, NOTIFY_OFFSET + 4, 1, 2);
    assert_eq!(dev.queue_eventfd(1).unwrap().read().unwrap(), 1);
    assert!(
        dev.queue_eventfd(0).unwrap().read().is_err(),
        "queue 0 was not notified"
    );
    let base = BAR_BASE + NOTIFY_OFFSET;
    assert_eq!(*r.ioevents.0.lock().unwrap(), vec![base, base + 4]);
    let new = 0x2_0000_0000;
    let mv = BarMove {
        address: PciAddress::new(0, 3, 0).unwrap(),
        bar: 0,
        kind: BarKind::Memory64 {
            prefetchable: false,
        },
        old: Some(BAR_BASE),
        new,
        size: BAR_SIZE,
    };
    dev.move_bar(&mv).unwrap();
    assert_eq!(
        *r.ioevents.0.lock().unwrap(),
        vec![new + NOTIFY_OFFSET, new + NOTIFY_OFFSET + 4]
    );
    dev.stop();
    assert!(
        r.ioevents.0.lock().unwrap().is_empty(),
        "stop removes the ioeventfds"
    );
}

#[test]
fn pci_cfg_capability_reaches_the_bar() {
    let mut r = rig();
    let dev = &mut r.dev;
    let c = dev.config();
    let cap = c
        .capabilities()
        .into_iter()
        .find(|(off, id)| *id == 9 && c.read_u8(off + 3) == 5)
        .unwrap()
        .0;
    dev.config_write(cap + 4, &[0]);
    dev.config_write(cap + 8, &0x12u32.to_le_bytes());
    dev.config_write(cap + 12, &2u32.to_le_bytes());
    let mut data = [0u8; 4];
    dev.config_read(cap + 16, &mut data);
    assert_eq!(
        u16::from_le_bytes([data[0], data[1]]),
        2,
        "num_queues through the window"
    );
    dev.config_write(cap + 8, &0x14u32.to_le_bytes());
    dev.config_write(cap + 12, &1u32.to_le_bytes());
    dev.config_write(cap + 16, &[STATUS_ACKNOWLEDGE, 0, 0, 0]);
    assert_eq!(dev.status(), STATUS_ACKNOWLEDGE);
    // A window outside the BAR does nothing.
    dev.config_write(cap + 8, &0xffff_fff0u32.to_le_bytes());
    dev.config_write(cap + 16, &[0; 4]);
    assert_eq!(dev.status(), STATUS_ACKNOWLEDGE);
}
