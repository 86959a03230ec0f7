//! Interrupt delivery through KVM for PCI devices: every MSI/MSI-X vector is
//! a GSI with an MSI route and an irqfd, every INTx line an IOAPIC pin with an
//! irqfd and a resample eventfd. Implements the pci crate's `InterruptManager`,
//! so neither emulated nor assigned devices need our process per interrupt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use pci::{InterruptError, InterruptManager, IntxLine, IntxPin, MsiMessage, MsiVector, PciAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::layout::intx_gsi;

/// IOAPIC pins; GSIs below this are the default irqchip routes.
pub const IOAPIC_PINS: u32 = 24;
/// GSIs KVM accepts in a routing table on every x86 host.
const MAX_GSI: u32 = 1024;

fn os(context: &str) -> impl FnOnce(kvm_ioctls::Error) -> InterruptError + '_ {
    move |e| InterruptError::Os {
        context: context.to_string(),
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> InterruptError + '_ {
    move |source| InterruptError::Os {
        context: context.to_string(),
        source,
    }
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi_entry(gsi: u32, msg: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = msg.address as u32;
    e.u.msi.address_hi = (msg.address >> 32) as u32;
    e.u.msi.data = msg.data;
    e
}

/// KVM's own default routes, kept when MSI routes are added: ISA IRQs 0..15
/// to the PICs and the IOAPIC, 16..23 to the IOAPIC, each GSI on its own pin
/// (our MADT has no interrupt source overrides).
fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut routes = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < 8 {
            routes.push(irqchip_entry(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            routes.push(irqchip_entry(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        routes.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    routes
}

struct Routes {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

/// State shared by the manager and every vector it handed out.
struct Shared {
    vm: Arc<VmFd>,
    routes: Mutex<Routes>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pushes the whole table to KVM (KVM_SET_GSI_ROUTING replaces it).
    fn commit(&self, routes: &Routes) -> Result<(), InterruptError> {
        let mut entries = default_routes();
        entries.extend(routes.msi.iter().map(|(&gsi, &msg)| msi_entry(gsi, msg)));
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| InterruptError::Backend(format!("routing table too large: {e:?}")))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(os("KVM_SET_GSI_ROUTING"))
    }
}

/// Hands out KVM-backed MSI vectors and INTx lines.
pub struct KvmInterruptManager {
    shared: Arc<Shared>,
}

impl KvmInterruptManager {
    /// A manager for `vm`; installs the default routes.
    pub fn new(vm: Arc<VmFd>) -> Result<Self, InterruptError> {
        let shared = Arc::new(Shared {
            vm,
            routes: Mutex::new(Routes {
                msi: BTreeMap::new(),
                next_gsi: IOAPIC_PINS,
            }),
        });
        shared.commit(&shared.lock())?;
        Ok(KvmInterruptManager { shared })
    }
}

impl InterruptManager for KvmInterruptManager {
    fn allocate_msi_vectors(
        &self,
        count: usize,
    ) -> Result<Vec<Box<dyn MsiVector>>, InterruptError> {
        let first = {
            let mut routes = self.shared.lock();
            let available = (MAX_GSI - routes.next_gsi) as usize;
            if count > available {
                return Err(InterruptError::NoVectors {
                    requested: count,
                    available,
                });
            }
            let first = routes.next_gsi;
            routes.next_gsi += count as u32;
            first
        };
        (first..first + count as u32)
            .map(|gsi| {
                let evt = EventFd::new(EFD_NONBLOCK).map_err(io("eventfd"))?;
                Ok(Box::new(KvmMsiVector {
                    gsi,
                    evt,
                    shared: self.shared.clone(),
                    routed: false,
                    live: false,
                }) as Box<dyn MsiVector>)
            })
            .collect()
    }

    fn allocate_intx(
        &self,
        address: PciAddress,
        pin: IntxPin,
    ) -> Result<Box<dyn IntxLine>, InterruptError> {
        let gsi = intx_gsi(address.device(), pin);
        let evt = EventFd::new(EFD_NONBLOCK).map_err(io("eventfd"))?;
        let resample = EventFd::new(EFD_NONBLOCK).map_err(io("eventfd"))?;
        self.shared
            .vm
            .register_irqfd_with_resample(&evt, &resample, gsi)
            .map_err(os("KVM_IRQFD with resample"))?;
        Ok(Box::new(KvmIntxLine {
            gsi,
            evt,
            resample,
            vm: self.shared.vm.clone(),
        }))
    }
}

/// One MSI/MSI-X vector: its own GSI, an MSI route, and an irqfd while unmasked.
struct KvmMsiVector {
    gsi: u32,
    evt: EventFd,
    shared: Arc<Shared>,
    /// A route exists for `gsi`.
    routed: bool,
    /// The irqfd is registered (the vector is unmasked).
    live: bool,
}

impl MsiVector for KvmMsiVector {
    fn set_route(&mut self, msg: MsiMessage) -> Result<(), InterruptError> {
        log::debug!("GSI {}: MSI route {msg}", self.gsi);
        let mut routes = self.shared.lock();
        if routes.msi.insert(self.gsi, msg) == Some(msg) {
            return Ok(());
        }
        self.routed = true;
        self.shared.commit(&routes)
    }

    fn mask(&mut self) -> Result<(), InterruptError> {
        log::debug!(
            "GSI {}: mask (irqfd was {})",
            self.gsi,
            if self.live { "live" } else { "off" }
        );
        if self.live {
            self.shared
                .vm
                .unregister_irqfd(&self.evt, self.gsi)
                .map_err(os("KVM_IRQFD deassign"))?;
            self.live = false;
        }
        Ok(())
    }

    fn unmask(&mut self) -> Result<(), InterruptError> {
        log::debug!(
            "GSI {}: unmask (irqfd was {})",
            self.gsi,
            if self.live { "live" } else { "off" }
        );
        if !self.routed {
            return Err(InterruptError::Backend(format!(
                "GSI {} unmasked before it was routed",
                self.gsi
            )));
        }
        if !self.live {
            // KVM injects at once if the eventfd was signalled while masked.
            self.shared
                .vm
                .register_irqfd(&self.evt, self.gsi)
                .map_err(os("KVM_IRQFD"))?;
            self.live = true;
        }
        Ok(())
    }

    fn trigger(&self) -> Result<(), InterruptError> {
        self.evt.write(1).map_err(io("irqfd write"))
    }

    fn eventfd(&self) -> Option<&EventFd> {
        Some(&self.evt)
    }
}

impl Drop for KvmMsiVector {
    fn drop(&mut self) {
        let _ = self.mask();
        let mut routes = self.shared.lock();
        if routes.msi.remove(&self.gsi).is_some() {
            let _ = self.shared.commit(&routes);
        }
    }
}

/// A level-triggered INTx line: an irqfd with resample on an IOAPIC pin.
struct KvmIntxLine {
    gsi: u32,
    evt: EventFd,
    resample: EventFd,
    vm: Arc<VmFd>,
}

impl IntxLine for KvmIntxLine {
    fn assert(&self) -> Result<(), InterruptError> {
        self.evt.write(1).map_err(io("irqfd write"))
    }

    /// KVM lowers the line itself when the guest acknowledges it (resample).
    fn deassert(&self) -> Result<(), InterruptError> {
        Ok(())
    }

    fn irq(&self) -> u8 {
        self.gsi as u8
    }

    fn eventfd(&self) -> Option<&EventFd> {
        Some(&self.evt)
    }

    fn resample_eventfd(&self) -> Option<&EventFd> {
        Some(&self.resample)
    }
}

impl Drop for KvmIntxLine {
    fn drop(&mut self) {
        let _ = self.vm.unregister_irqfd(&self.evt, self.gsi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intx_pins_are_swizzled_over_the_pci_ioapic_pins() {
        assert_eq!(intx_gsi(0, IntxPin::A), 16);
        assert_eq!(intx_gsi(3, IntxPin::A), 19);
        assert_eq!(intx_gsi(7, IntxPin::B), 16);
        assert_eq!(intx_gsi(31, IntxPin::D), 18);
    }

    #[test]
    fn default_routes_put_each_gsi_on_its_own_ioapic_pin_and_isa_irqs_on_the_pics() {
        let routes = default_routes();
        let chip_pin = |e: &kvm_irq_routing_entry| {
            // SAFETY: every default route is built by irqchip_entry, so `irqchip` is the live member.
            unsafe { (e.u.irqchip.irqchip, e.u.irqchip.pin) }
        };
        let ioapic: Vec<_> = routes
            .iter()
            .filter(|e| chip_pin(e).0 == KVM_IRQCHIP_IOAPIC)
            .collect();
        assert_eq!(ioapic.len(), IOAPIC_PINS as usize);
        assert!(ioapic.iter().all(|e| chip_pin(e).1 == e.gsi));
        assert_eq!(routes.len(), IOAPIC_PINS as usize + 16);
        let irq9 = routes
            .iter()
            .find(|e| e.gsi == 9 && chip_pin(e).0 == KVM_IRQCHIP_PIC_SLAVE)
            .unwrap();
        assert_eq!(chip_pin(irq9).1, 1);
    }
}
