//! Interrupt mode switching as the guest driver enables INTx, MSI and MSI-X.

use super::device::{nic, write32, Rig};
use super::fakes::Call;
use crate::device::PciDevice;
use crate::vfio::{IrqMode, INTX_IRQ, MSIX_IRQ, MSI_IRQ};

#[test]
fn enabling_msi_moves_vfio_off_intx_and_back() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    rig.vfio.take(false);
    write32(&mut dev, 0x54, 0xfee0_0000);
    write32(&mut dev, 0x58, 0);
    dev.config_write(0x5c, &0x0041u16.to_le_bytes());
    assert!(
        rig.vfio.take(false).is_empty(),
        "address and data only change routes"
    );
    // Enable with MME = 1 (two vectors).
    dev.config_write(0x52, &0x0095u16.to_le_bytes());
    let fds = rig.irqs.fds.lock().unwrap().clone();
    assert_eq!(
        rig.vfio.take(false),
        vec![
            Call::Disable(INTX_IRQ),
            Call::Enable(MSI_IRQ, fds[0..2].to_vec())
        ]
    );
    assert_eq!(dev.irq_mode(), IrqMode::Msi(2));
    let log = rig.irqs.log.lock().unwrap().clone();
    assert!(log
        .iter()
        .any(|(gsi, what, msg)| *gsi == 24 && *what == "route" && msg.unwrap().data == 0x40));
    assert!(log
        .iter()
        .any(|(gsi, what, msg)| *gsi == 25 && *what == "route" && msg.unwrap().data == 0x41));
    dev.config_write(0x52, &0x0084u16.to_le_bytes());
    let (trigger, _) = rig.irqs.intx_fds.lock().unwrap().unwrap();
    let calls = rig.vfio.take(false);
    assert_eq!(calls[0], Call::Disable(MSI_IRQ));
    assert_eq!(calls[1], Call::Enable(INTX_IRQ, vec![trigger]));
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
    assert_eq!(dev.stats().relayed_interrupts(), 0);
}

#[test]
fn msix_wires_every_vector_and_masking_stays_in_kvm() {
    let rig = Rig::new(nic());
    let mut dev = rig.attach();
    rig.vfio.take(false);
    // The 4 MSI vectors come first (GSI 24..28), MSI-X gets the next 5.
    let fds = rig.irqs.fds.lock().unwrap().clone();
    dev.config_write(0x72, &0x8004u16.to_le_bytes());
    assert_eq!(
        rig.vfio.take(false),
        vec![
            Call::Disable(INTX_IRQ),
            Call::Enable(MSIX_IRQ, fds[4..9].to_vec())
        ]
    );
    assert_eq!(dev.irq_mode(), IrqMode::Msix(5));
    // Program and unmask vector 1, then set the function mask.
    dev.bar_write(2, 0x10, &0xfee0_0000u32.to_le_bytes());
    dev.bar_write(2, 0x18, &0x51u32.to_le_bytes());
    dev.bar_write(2, 0x1c, &0u32.to_le_bytes());
    dev.config_write(0x72, &0xc004u16.to_le_bytes());
    assert!(
        rig.vfio.take(false).is_empty(),
        "masking never goes to VFIO"
    );
    let log = rig.irqs.log.lock().unwrap().clone();
    assert!(
        log.contains(&(29, "unmask", None)) && log.contains(&(29, "mask", None)),
        "{log:?}"
    );
    // MSI-X wins over MSI.
    dev.config_write(0x52, &0x0085u16.to_le_bytes());
    assert!(rig.vfio.take(false).is_empty());
    dev.config_write(0x72, &0x0004u16.to_le_bytes());
    assert_eq!(
        rig.vfio.take(false),
        vec![
            Call::Disable(MSIX_IRQ),
            Call::Enable(MSI_IRQ, fds[0..1].to_vec())
        ]
    );
}

#[test]
fn a_device_without_a_pin_starts_with_nothing_wired() {
    let mut config = super::nic_config();
    config[0x3d] = 0;
    let vfio = super::fakes::FakeVfio::new(config)
        .irq(INTX_IRQ, 1)
        .irq(MSI_IRQ, 4);
    let rig = Rig::new(vfio);
    let mut dev = rig.attach();
    assert_eq!(dev.irq_mode(), IrqMode::Off);
    let mut line = [0u8; 2];
    dev.config_read(0x3c, &mut line);
    assert_eq!(line, [0, 0]);
    // MSI-X has no VFIO vectors here: its capability is unlinked.
    let mut next = [0u8; 1];
    dev.config_read(0x51, &mut next);
    assert_eq!(next[0], 0xa0);
}
