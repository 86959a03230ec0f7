//! The passed-through function at run time: [`VfioPciDevice`] implements
//! [`PciDevice`] by merging the shadow and the device per byte of config
//! space (see [`crate::vfio::config`]), keeping MSI / MSI-X emulation and the
//! VFIO interrupt mode in step with guest writes, serving trapped BAR
//! accesses (MSI-X table and PBA emulated, everything else forwarded through
//! VFIO region reads and writes) and moving the direct BAR mappings when the
//! guest moves a BAR.

use std::collections::HashSet;
use std::sync::Arc;

use log::{info, warn};

use crate::bar::{BarMove, ROM_BAR};
use crate::config::{PciConfig, COMMAND, COMMAND_IO_SPACE, COMMAND_MEMORY_SPACE};
use crate::device::{DeviceError, PciDevice};
use crate::msi::Msi;
use crate::msix::Msix;
use crate::vfio::bars::BarHandle;
use crate::vfio::config::ConfigLayout;
use crate::vfio::irq::{IrqMode, IrqRouting};
use crate::vfio::ops::{VfioDeviceOps, CONFIG_REGION, MSIX_IRQ};
use crate::vfio::stats::VfioStats;

/// Where a guest config byte goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The shadow only.
    Shadow,
    /// The device only.
    Device,
    /// Both (the command register: the VMM routes BARs by it, the device decodes by it).
    Both,
    /// Nowhere (hidden capabilities, past the device's config space).
    Drop,
}

/// A host PCI function given to the guest through VFIO.
pub struct VfioPciDevice {
    /// The kernel's device.
    pub(super) ops: Arc<dyn VfioDeviceOps>,
    /// Name for messages (host BDF).
    pub(super) name: String,
    /// Shadow config space (BARs, command bits, MSI/MSI-X, links).
    pub(super) config: PciConfig,
    /// Bytes of config space the device has (256 or up to 4096).
    pub(super) config_size: usize,
    /// Per-byte split between shadow and device.
    pub(super) layout: ConfigLayout,
    /// MSI emulation, if the device has MSI.
    pub(super) msi: Option<Msi>,
    /// MSI vectors offered to the guest.
    pub(super) msi_vectors: usize,
    /// MSI-X emulation, if the device has MSI-X.
    pub(super) msix: Option<Msix>,
    /// Which interrupt VFIO signals.
    pub(super) irq: IrqRouting,
    /// Direct BAR mappings.
    pub(super) bars: BarHandle,
    /// Counters.
    pub(super) stats: Arc<VfioStats>,
    /// Kinds of guest-triggered failures already logged.
    pub(super) warned: HashSet<&'static str>,
}

impl VfioPciDevice {
    /// The handle the VMM uses to map BARs after `PciBus::assign_bars`.
    pub fn bar_handle(&self) -> BarHandle {
        self.bars.clone()
    }

    /// The device's counters.
    pub fn stats(&self) -> Arc<VfioStats> {
        Arc::clone(&self.stats)
    }

    /// The interrupt mode VFIO is in.
    pub fn irq_mode(&self) -> IrqMode {
        self.irq.mode()
    }

    /// The name used in messages (host BDF).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Logs a guest-triggered failure once per kind.
    fn warn_once(&mut self, kind: &'static str, message: impl FnOnce() -> String) {
        if self.warned.insert(kind) {
            warn!(
                "{}: {} (further failures of this kind are not logged)",
                self.name,
                message()
            );
        }
    }

    /// Where config byte `offset` goes.
    fn route(&self, offset: usize) -> Route {
        if self.layout.is_hidden(offset) || offset >= self.config_size {
            Route::Drop
        } else if offset == COMMAND || offset == COMMAND + 1 {
            Route::Both
        } else if self.layout.is_shadow(offset) {
            Route::Shadow
        } else {
            Route::Device
        }
    }

    /// MSI vectors the guest enabled (Multiple Message Enable), if MSI is on.
    fn msi_enabled_vectors(&self) -> Option<usize> {
        let msi = self.msi.as_ref().filter(|m| m.enabled())?;
        let control = self.config.read_u16(msi.offset() + 2);
        Some((1usize << ((control >> 4) & 0x7)).min(self.msi_vectors))
    }

    /// MSI-X vectors to wire, if MSI-X is on.
    fn msix_enabled_vectors(&self) -> Option<usize> {
        let msix = self.msix.as_ref().filter(|m| m.enabled())?;
        let vfio = usize::try_from(self.ops.irq_count(MSIX_IRQ)).unwrap_or(usize::MAX);
        Some(msix.capability().vectors().min(vfio))
    }

    /// Brings VFIO's interrupt mode in line with the guest's programming.
    fn sync_irqs(&mut self) {
        let want = self
            .irq
            .wanted(self.msi_enabled_vectors(), self.msix_enabled_vectors());
        match self.irq.apply(
            self.ops.as_ref(),
            want,
            self.msi.as_ref(),
            self.msix.as_ref(),
        ) {
            Ok(true) => {
                info!("{}: interrupts now {}", self.name, self.irq.mode());
                self.stats.switched(self.irq.mode());
            }
            Ok(false) => {}
            Err(e) => {
                self.stats.switched(self.irq.mode());
                let e = format!("{e}: {}", e.source_text());
                self.warn_once("irq", || e);
            }
        }
    }

    /// Applies a guest write of `data` at `offset` that goes to one place.
    fn write_run(&mut self, route: Route, offset: usize, data: &[u8]) {
        log::debug!(
            "{}: config write at {offset:#x} {data:02x?} to {route:?}",
            self.name
        );
        if matches!(route, Route::Shadow | Route::Both) {
            self.config.write(offset, data);
        }
        if matches!(route, Route::Device | Route::Both) {
            if let Err(e) = self.ops.write(CONFIG_REGION, offset as u64, data) {
                self.warn_once("config write", || {
                    format!("config write at {offset:#x} failed: {e}")
                });
            }
        }
    }
}

/// Text of an error's source chain, for one-line logs.
trait SourceText {
    /// The sources joined with ": ".
    fn source_text(&self) -> String;
}

impl<E: std::error::Error> SourceText for E {
    fn source_text(&self) -> String {
        let mut parts = Vec::new();
        let mut next = self.source();
        while let Some(e) = next {
            parts.push(e.to_string());
            next = e.source();
        }
        parts.join(": ")
    }
}

impl PciDevice for VfioPciDevice {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        let end = offset.saturating_add(data.len());
        let device_end = end.min(self.config_size);
        data.fill(0);
        let needs_device = (offset..device_end).any(|o| self.route(o) != Route::Shadow);
        if needs_device {
            let len = device_end - offset;
            if let Err(e) = self
                .ops
                .read(CONFIG_REGION, offset as u64, &mut data[..len])
            {
                data[..len].fill(0xff);
                self.warn_once("config read", || {
                    format!("config read at {offset:#x} failed: {e}")
                });
            }
        }
        for (i, out) in data.iter_mut().enumerate() {
            let o = offset + i;
            if o == COMMAND {
                // Space enables as the VMM routes them; the other bits as the device has them.
                let owned = (COMMAND_IO_SPACE | COMMAND_MEMORY_SPACE) as u8;
                *out = (*out & !owned) | (self.config.read_u8(o) & owned);
            } else if self.layout.is_shadow(o) {
                *out = self.config.read_u8(o);
            }
        }
        self.layout.patch_extended(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        let mut start = 0;
        while start < data.len() {
            let route = self.route(offset + start);
            let mut end = start + 1;
            while end < data.len() && self.route(offset + end) == route {
                end += 1;
            }
            if route != Route::Drop {
                self.write_run(route, offset + start, &data[start..end]);
            }
            start = end;
        }
        if let Some(msi) = self.msi.as_mut() {
            if let Err(e) = msi.config_written(&mut self.config, offset, data.len()) {
                let e = format!("{e}: {}", e.source_text());
                self.warn_once("msi", || e);
            }
        }
        if let Some(msix) = self.msix.as_mut() {
            if let Err(e) = msix.config_written(&self.config, offset, data.len()) {
                let e = format!("{e}: {}", e.source_text());
                self.warn_once("msix", || e);
            }
        }
        self.sync_irqs();
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if let Some(msix) = self.msix.as_ref() {
            if msix.bar_read(bar, offset, data) {
                self.stats.msix_access();
                return;
            }
        }
        self.stats.trapped_read(bar);
        // BAR n is VFIO region n, and the ROM is region 6 like ROM_BAR.
        if let Err(e) = self.ops.read(bar as u32, offset, data) {
            data.fill(0xff);
            self.warn_once("bar read", || {
                format!("BAR {bar} read at {offset:#x} failed: {e}")
            });
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if let Some(msix) = self.msix.as_mut() {
            match msix.bar_write(bar, offset, data) {
                Ok(true) => {
                    self.stats.msix_access();
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    self.stats.msix_access();
                    let e = format!("{e}: {}", e.source_text());
                    self.warn_once("msix table", || e);
                    return;
                }
            }
        }
        self.stats.trapped_write(bar);
        if bar == ROM_BAR {
            return;
        }
        if let Err(e) = self.ops.write(bar as u32, offset, data) {
            self.warn_once("bar write", || {
                format!("BAR {bar} write at {offset:#x} failed: {e}")
            });
        }
    }

    fn move_bar(&mut self, mv: &BarMove) -> Result<(), DeviceError> {
        if mv.kind.is_io() || mv.bar == ROM_BAR {
            return Ok(());
        }
        if let Err(e) = self.bars.place(mv.bar, mv.new) {
            // The bus keeps routing the BAR to us: accesses trap and are
            // forwarded, slower but correct.
            warn!(
                "{}: BAR {} moved to {:#x} but cannot be mapped there ({e}); its accesses will trap",
                self.name, mv.bar, mv.new
            );
        }
        Ok(())
    }
}
