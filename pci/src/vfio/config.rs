//! How a passed-through function's configuration space is split between the
//! VMM's shadow and the device: [`ConfigLayout`] walks the real capability
//! lists, unlinks the capabilities the guest must not drive (SR-IOV, ARI,
//! resizable BAR and the ones that need a virtual IOMMU), and says for every
//! byte whether the guest sees the shadow or the device. Writes into hidden
//! capabilities are dropped.
//!
//! The shadow holds the BARs, the ROM BAR, the capability pointer and the
//! next pointers (re-linked around hidden capabilities), interrupt line and
//! pin, and the capabilities the VMM emulates (MSI, MSI-X); the device
//! serves the rest through the VFIO config region, where the kernel's
//! vfio-pci applies its own virtualisation.

use std::ops::Range;

use crate::config::{
    BAR0, CAPABILITIES_POINTER, CONFIG_SPACE_SIZE, EXT_CONFIG_SPACE_SIZE, INTERRUPT_LINE,
    INTERRUPT_PIN, ROM_BAR_OFFSET, STATUS, STATUS_CAPABILITIES_LIST,
};

/// First byte after the type 0 header.
const FIRST_CAPABILITY: usize = 0x40;
/// Start of the PCIe extended capability list.
const FIRST_EXT_CAPABILITY: usize = CONFIG_SPACE_SIZE;
/// Longest standard chain followed (dword slots in 0x40..0x100).
const MAX_STD_CHAIN: usize = (CONFIG_SPACE_SIZE - FIRST_CAPABILITY) / 4;
/// Longest extended chain followed (dword slots in 0x100..0x1000).
const MAX_EXT_CHAIN: usize = (EXT_CONFIG_SPACE_SIZE - FIRST_EXT_CAPABILITY) / 4;

/// Extended capabilities never shown to the guest, with their names. The
/// guest cannot create virtual functions, resize BARs the VMM placed, use
/// ARI's function numbering on our single-function slots, or use ATS/PRI/PASID
/// without a virtual IOMMU.
pub const HIDDEN_EXT_CAPS: &[(u16, &str)] = &[
    (0x000e, "ARI"),
    (0x000f, "ATS"),
    (0x0010, "SR-IOV"),
    (0x0011, "MR-IOV"),
    (0x0013, "PRI"),
    (0x0015, "Resizable BAR"),
    (0x001b, "PASID"),
    (0x0024, "VF Resizable BAR"),
];

/// Standard capabilities found by following the list from 0x34:
/// `(offset, id)` in chain order. Stops at a null pointer, a pointer into
/// the header or past `bytes`, a loop, or after a bounded number of steps,
/// so a corrupt list cannot hang or panic.
pub fn standard_capabilities(bytes: &[u8]) -> Vec<(usize, u8)> {
    let byte = |o: usize| bytes.get(o).copied().unwrap_or(0);
    let status = u16::from_le_bytes([byte(STATUS), byte(STATUS + 1)]);
    let mut found: Vec<(usize, u8)> = Vec::new();
    if status & STATUS_CAPABILITIES_LIST == 0 {
        return found;
    }
    let mut next = usize::from(byte(CAPABILITIES_POINTER) & !0x3);
    while next >= FIRST_CAPABILITY
        && next + 1 < bytes.len().min(CONFIG_SPACE_SIZE)
        && found.len() < MAX_STD_CHAIN
        && !found.iter().any(|(o, _)| *o == next)
    {
        found.push((next, byte(next)));
        next = usize::from(byte(next + 1) & !0x3);
    }
    found
}

/// Extended capabilities found by following the list from 0x100:
/// `(offset, id)` in chain order, with the same guards as
/// [`standard_capabilities`]. Empty for conventional functions (256-byte
/// config space) and for an all-zero or all-ones header at 0x100.
pub fn extended_capabilities(bytes: &[u8]) -> Vec<(usize, u16)> {
    let mut found: Vec<(usize, u16)> = Vec::new();
    let mut next = FIRST_EXT_CAPABILITY;
    while next >= FIRST_EXT_CAPABILITY && found.len() < MAX_EXT_CHAIN {
        let Some(header) = dword(bytes, next) else {
            break;
        };
        if header == 0 || header == u32::MAX || found.iter().any(|(o, _)| *o == next) {
            break;
        }
        // Truncation intended: the ID is the low 16 bits of the header.
        found.push((next, header as u16));
        next = (header >> 20) as usize & !0x3;
    }
    found
}

/// Little-endian dword of `bytes` at `offset`, if all four bytes are there.
fn dword(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Where each guest-visible config byte comes from.
#[derive(Debug, Clone)]
pub struct ConfigLayout {
    /// Bytes of conventional space served by (and written to) the shadow.
    shadow: [bool; CONFIG_SPACE_SIZE],
    /// Values the shadow must hold at link bytes: `(offset, value)` for the
    /// capability pointer and each visible capability's next pointer.
    links: Vec<(usize, u8)>,
    /// Extended capability headers replaced to unlink hidden capabilities.
    ext_patches: Vec<(usize, u32)>,
    /// Byte ranges of hidden capabilities: guest writes there are dropped.
    hidden: Vec<Range<usize>>,
    /// Names of hidden capabilities, for the attach log.
    hidden_names: Vec<String>,
    /// Standard capabilities left visible, `(offset, id)`.
    visible_standard: Vec<(usize, u8)>,
}

impl ConfigLayout {
    /// Lays out config space of a device whose real contents are `bytes`
    /// (256 or up to 4096 bytes), hiding the standard capabilities for which
    /// `hide_standard(id)` is true and those in [`HIDDEN_EXT_CAPS`].
    pub fn new(bytes: &[u8], hide_standard: impl Fn(u8) -> bool) -> Self {
        let mut layout = ConfigLayout {
            shadow: [false; CONFIG_SPACE_SIZE],
            links: Vec::new(),
            ext_patches: Vec::new(),
            hidden: Vec::new(),
            hidden_names: Vec::new(),
            visible_standard: Vec::new(),
        };
        for range in [
            BAR0..BAR0 + 24,
            ROM_BAR_OFFSET..ROM_BAR_OFFSET + 4,
            INTERRUPT_LINE..INTERRUPT_PIN + 1,
        ] {
            layout.shadow_range(range);
        }
        layout.link_standard(bytes, hide_standard);
        layout.link_extended(bytes);
        layout
    }

    /// Re-links the standard list around hidden capabilities.
    fn link_standard(&mut self, bytes: &[u8], hide: impl Fn(u8) -> bool) {
        let all = standard_capabilities(bytes);
        let mut starts: Vec<usize> = all.iter().map(|(o, _)| *o).collect();
        starts.sort_unstable();
        let (visible, hidden): (Vec<_>, Vec<_>) = all.iter().partition(|(_, id)| !hide(*id));
        for (offset, id) in &hidden {
            self.hidden
                .push(*offset..end_of(*offset, &starts, CONFIG_SPACE_SIZE));
            self.hidden_names
                .push(format!("capability {id:#04x} at {offset:#x}"));
        }
        let first = visible.first().map_or(0, |(o, _)| *o);
        let mut links = vec![(CAPABILITIES_POINTER, first)];
        for (i, (offset, _)) in visible.iter().enumerate() {
            let next = visible.get(i + 1).map_or(0, |(o, _)| *o);
            links.push((offset + 1, next));
        }
        for (offset, value) in links {
            // Offsets below 256 by construction, so the value fits a byte.
            self.shadow[offset] = true;
            self.links.push((offset, value as u8));
        }
        self.visible_standard = visible;
    }

    /// Re-links the extended list around hidden capabilities; a hidden
    /// capability at 0x100 becomes a null capability (ID 0) pointing on.
    fn link_extended(&mut self, bytes: &[u8]) {
        let all = extended_capabilities(bytes);
        let hidden_name = |id: u16| {
            HIDDEN_EXT_CAPS
                .iter()
                .find(|(h, _)| *h == id)
                .map(|(_, n)| *n)
        };
        let mut starts: Vec<usize> = all.iter().map(|(o, _)| *o).collect();
        starts.sort_unstable();
        let visible: Vec<usize> = all
            .iter()
            .filter(|(_, id)| hidden_name(*id).is_none())
            .map(|(o, _)| *o)
            .collect();
        for (offset, id) in &all {
            if let Some(name) = hidden_name(*id) {
                self.hidden
                    .push(*offset..end_of(*offset, &starts, EXT_CONFIG_SPACE_SIZE));
                self.hidden_names.push(name.to_string());
            }
        }
        let next_field = |o: Option<&usize>| (o.copied().unwrap_or(0) as u32) << 20;
        if let Some((first, id)) = all.first() {
            if hidden_name(*id).is_some() {
                self.ext_patches.push((*first, next_field(visible.first())));
            }
        }
        for (i, offset) in visible.iter().enumerate() {
            let Some(header) = dword(bytes, *offset) else {
                continue;
            };
            let patched = (header & 0x000f_ffff) | next_field(visible.get(i + 1));
            if patched != header {
                self.ext_patches.push((*offset, patched));
            }
        }
    }

    /// Serves `range` of conventional space from the shadow.
    pub fn shadow_range(&mut self, range: Range<usize>) {
        for offset in range {
            if let Some(flag) = self.shadow.get_mut(offset) {
                *flag = true;
            }
        }
    }

    /// Whether the guest sees the shadow at `offset`.
    pub fn is_shadow(&self, offset: usize) -> bool {
        self.shadow.get(offset).copied().unwrap_or(false)
    }

    /// Whether `offset` lies in a hidden capability (guest writes dropped).
    pub fn is_hidden(&self, offset: usize) -> bool {
        self.hidden.iter().any(|r| r.contains(&offset))
    }

    /// The link bytes the shadow must hold.
    pub fn links(&self) -> &[(usize, u8)] {
        &self.links
    }

    /// Names of the hidden capabilities.
    pub fn hidden_names(&self) -> &[String] {
        &self.hidden_names
    }

    /// Standard capabilities the guest sees, `(offset, id)` in chain order.
    pub fn visible_standard(&self) -> &[(usize, u8)] {
        &self.visible_standard
    }

    /// The next pointer the shadow gives the capability at `offset`.
    pub fn next_of(&self, offset: usize) -> u8 {
        self.links
            .iter()
            .find(|(o, _)| *o == offset + 1)
            .map_or(0, |(_, v)| *v)
    }

    /// Overwrites the bytes of `data` (read from the device at `offset`)
    /// that fall on patched extended capability headers.
    pub fn patch_extended(&self, offset: usize, data: &mut [u8]) {
        for (at, value) in &self.ext_patches {
            for (i, byte) in value.to_le_bytes().iter().enumerate() {
                let Some(pos) = (at + i).checked_sub(offset) else {
                    continue;
                };
                if let Some(slot) = data.get_mut(pos) {
                    *slot = *byte;
                }
            }
        }
    }
}

/// End of the capability starting at `offset`: the next capability start
/// in address order, else `limit`.
fn end_of(offset: usize, sorted_starts: &[usize], limit: usize) -> usize {
    sorted_starts
        .iter()
        .copied()
        .find(|s| *s > offset)
        .unwrap_or(limit)
}
