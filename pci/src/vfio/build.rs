//! Attaching a VFIO device: reset it, read its configuration space, declare
//! its BARs and ROM in the shadow, set up the MSI / MSI-X emulation at the
//! hardware's capability offsets with vectors from the VMM, take its INTx
//! line, mmap what can be mapped, and wire INTx through VFIO.

use std::sync::Arc;

use log::{info, warn};
use thiserror::Error;

use crate::bar::{BarKind, NUM_BARS, ROM_BAR};
use crate::capability::{CapabilityPlace, CAP_ID_MSI, CAP_ID_MSIX};
use crate::config::{
    ConfigError, PciConfig, PciHeader, BAR0, CONFIG_SPACE_SIZE, EXT_CONFIG_SPACE_SIZE,
    INTERRUPT_PIN,
};
use crate::device::PciAddress;
use crate::interrupt::{InterruptError, InterruptManager, IntxLine, IntxPin, MsiVector};
use crate::msi::{Msi, MsiCapability, MsiError};
use crate::msix::{Msix, MsixCapability, MsixError};
use crate::vfio::bars::{mmap_areas, BarHandle, BarMappings};
use crate::vfio::config::ConfigLayout;
use crate::vfio::device::VfioPciDevice;
use crate::vfio::irq::{IrqError, IrqRouting};
use crate::vfio::ops::{
    GuestMapper, ResetOutcome, VfioDeviceOps, VfioOpsError, CONFIG_REGION, INTX_IRQ, MSIX_IRQ,
    MSI_IRQ, ROM_REGION,
};
use crate::vfio::stats::{BarSummary, CountingLine, CountingVector, VfioStats};

/// Errors attaching a VFIO device.
#[derive(Debug, Error)]
pub enum VfioPciError {
    /// The device has no usable config region.
    #[error("{device}: VFIO reports no configuration space (config region of {size} bytes); is it a PCI function bound to vfio-pci?")]
    NoConfig {
        /// Host device.
        device: String,
        /// Size of the config region.
        size: u64,
    },
    /// Reading config space failed.
    #[error("{device}: cannot read configuration space")]
    ConfigRead {
        /// Host device.
        device: String,
        /// The backend's error.
        #[source]
        source: VfioOpsError,
    },
    /// A BAR cannot be declared as the device reports it.
    #[error("{device}: BAR {bar} ({size:#x} bytes) cannot be passed through")]
    Bar {
        /// Host device.
        device: String,
        /// BAR index.
        bar: usize,
        /// Size VFIO reports.
        size: u64,
        /// Why not.
        #[source]
        source: ConfigError,
    },
    /// The VMM could not provide interrupt vectors or a line.
    #[error("{device}: cannot allocate {what}")]
    Interrupts {
        /// Host device.
        device: String,
        /// What was asked for.
        what: String,
        /// The backend's error.
        #[source]
        source: InterruptError,
    },
    /// The MSI capability could not be emulated.
    #[error("{device}: cannot emulate the MSI capability")]
    Msi {
        /// Host device.
        device: String,
        /// Why not.
        #[source]
        source: MsiError,
    },
    /// The MSI-X capability could not be emulated.
    #[error("{device}: cannot emulate the MSI-X capability")]
    Msix {
        /// Host device.
        device: String,
        /// Why not.
        #[source]
        source: MsixError,
    },
    /// INTx could not be wired through VFIO.
    #[error("{device}: cannot wire INTx")]
    Irq {
        /// Host device.
        device: String,
        /// Why not.
        #[source]
        source: IrqError,
    },
}

/// Per-device options from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfioPciOptions {
    /// Show the expansion ROM to the guest (`rombar=off` hides it).
    pub rombar: bool,
}

impl Default for VfioPciOptions {
    fn default() -> Self {
        VfioPciOptions { rombar: true }
    }
}

/// What a device needs from the VMM to attach.
pub struct AttachContext<'a> {
    /// Name for messages (the host BDF).
    pub name: String,
    /// Guest address the device will get on the bus.
    pub address: PciAddress,
    /// Source of MSI vectors and the INTx line.
    pub interrupts: &'a dyn InterruptManager,
    /// Maker of guest memory slots for BAR mappings.
    pub mapper: Arc<dyn GuestMapper>,
    /// Command line options.
    pub options: VfioPciOptions,
}

/// Little-endian word of `bytes` at `offset` (zero past the end).
fn word(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([byte(bytes, offset), byte(bytes, offset + 1)])
}

/// Little-endian dword of `bytes` at `offset` (zero past the end).
fn dword(bytes: &[u8], offset: usize) -> u32 {
    u32::from(word(bytes, offset)) | (u32::from(word(bytes, offset + 2)) << 16)
}

/// Byte of `bytes` at `offset` (zero past the end).
fn byte(bytes: &[u8], offset: usize) -> u8 {
    bytes.get(offset).copied().unwrap_or(0)
}

/// The kind of BAR `index` from its register value.
fn bar_kind(register: u32) -> BarKind {
    let prefetchable = register & 0x8 != 0;
    if register & 0x1 != 0 {
        BarKind::Io
    } else if (register >> 1) & 0x3 == 0x2 {
        BarKind::Memory64 { prefetchable }
    } else {
        BarKind::Memory32 { prefetchable }
    }
}

impl VfioPciDevice {
    /// Attaches the VFIO device behind `ops` (see the module doc for the steps).
    pub fn attach(
        ops: Arc<dyn VfioDeviceOps>,
        ctx: AttachContext<'_>,
    ) -> Result<Self, VfioPciError> {
        let name = ctx.name.clone();
        reset(ops.as_ref(), &name);
        let bytes = read_config(ops.as_ref(), &name)?;
        let mut config = PciConfig::new(&header_of(&bytes));
        declare_bars(ops.as_ref(), &mut config, &bytes, &name, ctx.options)?;
        let mut layout = mirror_layout(ops.as_ref(), &mut config, &bytes, &name);

        let stats = Arc::new(VfioStats::default());
        let vectors = Vectors {
            ctx: &ctx,
            stats: &stats,
        };
        let mut caps = Mirror {
            config: &mut config,
            layout: &mut layout,
            bytes: &bytes,
            name: &name,
        };
        let (msi, msi_vectors) = match caps.find(CAP_ID_MSI) {
            Some(offset) => {
                let (msi, count) = caps.msi(offset, ops.as_ref(), &vectors)?;
                (Some(msi), count)
            }
            None => (None, 0),
        };
        let msix = match caps.find(CAP_ID_MSIX) {
            Some(offset) => Some(caps.msix(offset, &vectors)?),
            None => None,
        };

        let intx = take_intx(ops.as_ref(), &ctx, &mut config, &bytes, &stats)?;
        let bars = map_bars(Arc::clone(&ops), &ctx, &config, msix.as_ref(), &stats);
        let mut irq = IrqRouting::new(intx);
        let want = irq.wanted(None, None);
        irq.apply(ops.as_ref(), want, None, None)
            .map_err(|source| VfioPciError::Irq {
                device: name.clone(),
                source,
            })?;
        stats.switched(irq.mode());

        Ok(VfioPciDevice {
            ops,
            name,
            config,
            config_size: bytes.len(),
            layout,
            msi,
            msi_vectors,
            msix,
            irq,
            bars,
            stats,
            warned: std::collections::HashSet::new(),
        })
    }
}

/// Resets the device if it can be, and says how that went.
fn reset(ops: &dyn VfioDeviceOps, name: &str) {
    match ops.reset() {
        Ok(ResetOutcome::Done) => info!("{name}: reset"),
        Ok(ResetOutcome::Unsupported) => {
            warn!("{name}: no reset mechanism, the device keeps the state its last user left it in")
        }
        Err(e) => warn!("{name}: reset failed ({e}); continuing with the device as it is"),
    }
}

/// The shadow's identity registers, as the hardware reports them.
fn header_of(bytes: &[u8]) -> PciHeader {
    PciHeader {
        vendor_id: word(bytes, 0),
        device_id: word(bytes, 2),
        revision_id: byte(bytes, 8),
        class_code: dword(bytes, 8) >> 8,
        subsystem_vendor_id: word(bytes, 0x2c),
        subsystem_id: word(bytes, 0x2e),
        interrupt_pin: None,
    }
}

/// Mirrors the hardware's capability chain into the shadow, hiding MSI and
/// MSI-X where VFIO offers no such interrupts.
fn mirror_layout(
    ops: &dyn VfioDeviceOps,
    config: &mut PciConfig,
    bytes: &[u8],
    name: &str,
) -> ConfigLayout {
    let no_msi = ops.irq_count(MSI_IRQ) == 0;
    let no_msix = ops.irq_count(MSIX_IRQ) == 0;
    let layout = ConfigLayout::new(bytes, |id| {
        (id == CAP_ID_MSI && no_msi) || (id == CAP_ID_MSIX && no_msix)
    });
    for (offset, value) in layout.links().to_vec() {
        config.write_internal(offset, &[value]);
    }
    for hidden in layout.hidden_names() {
        info!("{name}: hiding {hidden} from the guest");
    }
    layout
}

/// Source of the VMM's MSI vectors for one device, counted in its stats.
struct Vectors<'a> {
    ctx: &'a AttachContext<'a>,
    stats: &'a Arc<VfioStats>,
}

impl Vectors<'_> {
    /// `count` vectors for the capability `what`.
    fn take(&self, count: usize, what: &str) -> Result<Vec<Box<dyn MsiVector>>, VfioPciError> {
        let raw = self
            .ctx
            .interrupts
            .allocate_msi_vectors(count)
            .map_err(|source| VfioPciError::Interrupts {
                device: self.ctx.name.clone(),
                what: format!("{count} {what} vectors"),
                source,
            })?;
        Ok(raw
            .into_iter()
            .map(|v| Box::new(CountingVector::new(v, Arc::clone(self.stats))) as Box<dyn MsiVector>)
            .collect())
    }
}

/// Emulates the hardware's MSI and MSI-X capabilities in the shadow, at the
/// hardware's offsets, and marks their ranges as shadowed in the layout.
struct Mirror<'a> {
    config: &'a mut PciConfig,
    layout: &'a mut ConfigLayout,
    bytes: &'a [u8],
    name: &'a str,
}

impl Mirror<'_> {
    /// Offset of the visible capability `id`.
    fn find(&self, id: u8) -> Option<usize> {
        let visible = self.layout.visible_standard();
        visible.iter().find(|(_, c)| *c == id).map(|(o, _)| *o)
    }

    /// Where a capability at `offset` goes: there, linked as the hardware links it.
    fn place(&self, offset: usize) -> CapabilityPlace {
        let next = self.layout.next_of(offset);
        CapabilityPlace::At { offset, next }
    }

    /// MSI at `offset`, with as many vectors as both the capability and VFIO
    /// offer; returns it with that count.
    fn msi(
        &mut self,
        offset: usize,
        ops: &dyn VfioDeviceOps,
        vectors: &Vectors<'_>,
    ) -> Result<(Msi, usize), VfioPciError> {
        let control = word(self.bytes, offset + 2);
        let offered = 1usize << ((control >> 1) & 0x7).min(5);
        let vfio = usize::try_from(ops.irq_count(MSI_IRQ)).unwrap_or(usize::MAX);
        // A power of two no larger than what both the capability and VFIO offer.
        let count = 1usize << offered.min(vfio).max(1).ilog2();
        let msi_err = |source| VfioPciError::Msi {
            device: self.name.to_string(),
            source,
        };
        let cap = MsiCapability::new(count, control & 0x80 != 0, control & 0x100 != 0)
            .map_err(msi_err)?;
        let place = self.place(offset);
        let msi =
            Msi::add(self.config, place, cap, vectors.take(count, "MSI")?).map_err(msi_err)?;
        self.layout.shadow_range(offset..offset + cap.size());
        Ok((msi, count))
    }

    /// MSI-X at `offset`, its table and PBA where the hardware has them.
    fn msix(&mut self, offset: usize, vectors: &Vectors<'_>) -> Result<Msix, VfioPciError> {
        let control = word(self.bytes, offset + 2);
        let table = dword(self.bytes, offset + 4);
        let pba = dword(self.bytes, offset + 8);
        let count = usize::from(control & 0x7ff) + 1;
        let msix_err = |source| VfioPciError::Msix {
            device: self.name.to_string(),
            source,
        };
        // Truncations intended: the BIR is the low three bits.
        let cap = MsixCapability::new(
            count,
            (table & 0x7) as u8,
            u64::from(table & !0x7),
            (pba & 0x7) as u8,
            u64::from(pba & !0x7),
        )
        .map_err(msix_err)?;
        let place = self.place(offset);
        let msix =
            Msix::add(self.config, place, cap, vectors.take(count, "MSI-X")?).map_err(msix_err)?;
        self.layout.shadow_range(offset..offset + 12);
        Ok(msix)
    }
}

/// Reads the device's configuration space (256 bytes, or up to 4 KiB for PCIe).
fn read_config(ops: &dyn VfioDeviceOps, name: &str) -> Result<Vec<u8>, VfioPciError> {
    let size = ops.region(CONFIG_REGION).map_or(0, |r| r.size);
    if size < CONFIG_SPACE_SIZE as u64 {
        return Err(VfioPciError::NoConfig {
            device: name.to_string(),
            size,
        });
    }
    let len = usize::try_from(size).map_or(EXT_CONFIG_SPACE_SIZE, |s| s.min(EXT_CONFIG_SPACE_SIZE));
    let mut bytes = vec![0u8; len];
    if let Err(source) = ops.read(CONFIG_REGION, 0, &mut bytes) {
        if len == CONFIG_SPACE_SIZE {
            return Err(VfioPciError::ConfigRead {
                device: name.to_string(),
                source,
            });
        }
        // Some devices fault on parts of extended space: keep the conventional part.
        warn!("{name}: cannot read extended configuration space ({source}); showing the first 256 bytes only");
        bytes.truncate(CONFIG_SPACE_SIZE);
        ops.read(CONFIG_REGION, 0, &mut bytes)
            .map_err(|source| VfioPciError::ConfigRead {
                device: name.to_string(),
                source,
            })?;
    }
    Ok(bytes)
}

/// Declares the device's BARs (kind from the hardware register, size from
/// VFIO) and, unless hidden, its expansion ROM.
fn declare_bars(
    ops: &dyn VfioDeviceOps,
    config: &mut PciConfig,
    bytes: &[u8],
    name: &str,
    options: VfioPciOptions,
) -> Result<(), VfioPciError> {
    let mut bar = 0;
    while bar < NUM_BARS {
        // Fewer than 6 BARs: the index fits a u32.
        let size = ops.region(bar as u32).map_or(0, |r| r.size);
        let kind = bar_kind(dword(bytes, BAR0 + 4 * bar));
        if size > 0 {
            config
                .add_bar(bar, kind, size)
                .map_err(|source| VfioPciError::Bar {
                    device: name.to_string(),
                    bar,
                    size,
                    source,
                })?;
        }
        bar += if matches!(kind, BarKind::Memory64 { .. }) {
            2
        } else {
            1
        };
    }
    let rom = ops.region(ROM_REGION).map_or(0, |r| r.size);
    if options.rombar && rom > 0 {
        config
            .add_bar(ROM_BAR, BarKind::Rom, rom)
            .map_err(|source| VfioPciError::Bar {
                device: name.to_string(),
                bar: ROM_BAR,
                size: rom,
                source,
            })?;
    }
    Ok(())
}

/// Allocates the INTx line when the function has a pin and VFIO offers INTx.
fn take_intx(
    ops: &dyn VfioDeviceOps,
    ctx: &AttachContext<'_>,
    config: &mut PciConfig,
    bytes: &[u8],
    stats: &Arc<VfioStats>,
) -> Result<Option<Box<dyn IntxLine>>, VfioPciError> {
    let pin = match byte(bytes, INTERRUPT_PIN) {
        1 => IntxPin::A,
        2 => IntxPin::B,
        3 => IntxPin::C,
        4 => IntxPin::D,
        _ => return Ok(None),
    };
    if ops.irq_count(INTX_IRQ) == 0 {
        return Ok(None);
    }
    let line = ctx
        .interrupts
        .allocate_intx(ctx.address, pin)
        .map_err(|source| VfioPciError::Interrupts {
            device: ctx.name.clone(),
            what: "the INTx line".to_string(),
            source,
        })?;
    config.set_interrupt_line(line.irq());
    config.write_internal(INTERRUPT_PIN, &[pin.register_value()]);
    Ok(Some(Box::new(CountingLine::new(line, Arc::clone(stats)))))
}

/// Mmaps every mappable page of the memory BARs (leaving the MSI-X table
/// and PBA pages trapped) and records the BAR summary.
fn map_bars(
    ops: Arc<dyn VfioDeviceOps>,
    ctx: &AttachContext<'_>,
    config: &PciConfig,
    msix: Option<&Msix>,
    stats: &VfioStats,
) -> BarHandle {
    let mut mappings = BarMappings::new(Arc::clone(&ctx.mapper));
    let mut summary = Vec::new();
    for (bar, def) in config.bars() {
        if def.kind.is_memory() && bar != ROM_BAR {
            let mut trapped = Vec::new();
            if let Some(cap) = msix.map(Msix::capability) {
                if usize::from(cap.table_bar()) == bar {
                    trapped.push(cap.table_range());
                }
                if usize::from(cap.pba_bar()) == bar {
                    trapped.push(cap.pba_range());
                }
            }
            // Fewer than 7 BAR slots: the index fits a u32.
            let region = ops.region(bar as u32).unwrap_or_default();
            for area in mmap_areas(&region, def.size, &trapped) {
                match ops.mmap(bar as u32, area) {
                    Ok(mapped) => mappings.add_area(bar, area.offset, mapped),
                    Err(e) => warn!(
                        "{}: BAR {bar} at +{:#x} cannot be mmapped ({e}); guest accesses there will trap",
                        ctx.name, area.offset
                    ),
                }
            }
        }
        summary.push(BarSummary {
            bar,
            kind: def.kind,
            size: def.size,
            mapped: mappings.mapped_bytes(bar),
            slots: mappings.pieces(bar),
        });
    }
    stats.set_bars(summary);
    BarHandle::new(mappings)
}
