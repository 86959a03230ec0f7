//! Which I/O virtual addresses the host IOMMU lets us use. Two sources:
//! the container's valid IOVA ranges (the IOVA-range capability of
//! VFIO_IOMMU_GET_INFO, parsed here from the raw reply) and each group's
//! reserved regions (`/sys/kernel/iommu_groups/N/reserved_regions`: MSI
//! doorbells, RMRRs). Since guest physical address = IOVA, guest RAM and
//! the PCI windows must stay inside the first and out of the second.

use std::fmt;

use crate::sysfs::{Sysfs, SysfsError};

/// Errors reading IOVA constraints.
#[derive(Debug, thiserror::Error)]
pub enum IovaError {
    /// A reserved_regions line is not `0xSTART 0xEND TYPE`.
    #[error("unexpected line {line:?} in {path}: expected '0xSTART 0xEND TYPE'")]
    BadReservedLine {
        /// The file.
        path: String,
        /// The line.
        line: String,
    },
    /// The VFIO_IOMMU_GET_INFO reply is shorter than its capability chain claims.
    #[error(
        "VFIO_IOMMU_GET_INFO reply is malformed: {0}; the kernel and vfio-vmm disagree on the ABI"
    )]
    BadInfo(String),
    /// sysfs could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
}

/// An address range `[start, end]` (inclusive, as the kernel reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IovaRange {
    /// First address.
    pub start: u64,
    /// Last address.
    pub end: u64,
}

impl IovaRange {
    /// Whether `[start, start + size)` intersects the range (size > 0).
    pub fn overlaps(&self, start: u64, size: u64) -> bool {
        let last = start.saturating_add(size.saturating_sub(1));
        size > 0 && start <= self.end && self.start <= last
    }
}

impl fmt::Display for IovaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..={:#x}", self.start, self.end)
    }
}

/// A range a group's IOMMU reserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedRegion {
    /// The range.
    pub range: IovaRange,
    /// Kernel type: `msi`, `direct`, `direct-relaxable`, `reserved`, ...
    pub kind: String,
    /// The group reporting it.
    pub group: u32,
}

impl ReservedRegion {
    /// Whether guest addresses must avoid it. `direct-relaxable` regions
    /// (USB and graphics RMRRs) do not block assignment, as in the kernel.
    pub fn blocks(&self) -> bool {
        self.kind != "direct-relaxable"
    }
}

/// Reads group `group`'s reserved regions; a missing file reads as none.
pub fn reserved_regions(sysfs: &Sysfs, group: u32) -> Result<Vec<ReservedRegion>, IovaError> {
    let path = sysfs.group_dir(group).join("reserved_regions");
    let text = sysfs.read_optional(&path)?.unwrap_or_default();
    parse_reserved_regions(&text, group, &path.display().to_string())
}

/// Parses a reserved_regions file of group `group` (`path` for errors).
pub fn parse_reserved_regions(
    text: &str,
    group: u32,
    path: &str,
) -> Result<Vec<ReservedRegion>, IovaError> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || IovaError::BadReservedLine {
                path: path.to_string(),
                line: line.to_string(),
            };
            let mut fields = line.split_whitespace();
            let start = fields.next().and_then(hex).ok_or_else(bad)?;
            let end = fields.next().and_then(hex).ok_or_else(bad)?;
            let kind = fields.next().ok_or_else(bad)?.to_string();
            if end < start {
                return Err(bad());
            }
            Ok(ReservedRegion {
                range: IovaRange { start, end },
                kind,
                group,
            })
        })
        .collect()
}

/// `struct vfio_iommu_type1_info` is 24 bytes: argsz, flags, iova_pgsizes, cap_offset, pad.
pub const IOMMU_INFO_SIZE: usize = 24;
/// VFIO_IOMMU_INFO_CAPS: the reply has a capability chain.
const INFO_FLAG_CAPS: u32 = 2;
/// VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE.
const CAP_IOVA_RANGE: u16 = 1;
/// Capability chain steps followed at most.
const MAX_CAPS: usize = 64;

/// Reads a little-endian integer of `N` bytes at `offset`.
fn le<const N: usize>(buf: &[u8], offset: usize) -> Result<[u8; N], IovaError> {
    offset
        .checked_add(N)
        .and_then(|end| buf.get(offset..end))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            IovaError::BadInfo(format!(
                "{N} bytes at {offset} past the end ({} bytes)",
                buf.len()
            ))
        })
}

/// Parses a VFIO_IOMMU_GET_INFO reply: the valid IOVA ranges, or `None`
/// when the kernel reports no IOVA-range capability (older kernels: every
/// address is valid except reserved regions).
pub fn parse_iommu_info(buf: &[u8]) -> Result<Option<Vec<IovaRange>>, IovaError> {
    let flags = u32::from_ne_bytes(le(buf, 4)?);
    let mut offset = u32::from_ne_bytes(le(buf, 16)?) as usize;
    if flags & INFO_FLAG_CAPS == 0 {
        return Ok(None);
    }
    let mut steps = 0;
    while offset != 0 && steps < MAX_CAPS {
        steps += 1;
        let id = u16::from_ne_bytes(le(buf, offset)?);
        let next = u32::from_ne_bytes(le(buf, offset + 4)?) as usize;
        if id == CAP_IOVA_RANGE {
            let count = u32::from_ne_bytes(le(buf, offset + 8)?) as usize;
            let mut ranges = Vec::with_capacity(count.min(256));
            for i in 0..count {
                let at = offset + 16 + i * 16;
                let start = u64::from_ne_bytes(le(buf, at)?);
                let end = u64::from_ne_bytes(le(buf, at + 8)?);
                ranges.push(IovaRange { start, end });
            }
            ranges.sort();
            return Ok(Some(ranges));
        }
        offset = next;
    }
    Ok(None)
}

/// Everything that limits guest physical addresses when devices are assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IovaConstraints {
    /// Valid IOVA ranges of the container, sorted; `None`: no limit reported.
    pub valid: Option<Vec<IovaRange>>,
    /// Reserved regions of every group in the container.
    pub reserved: Vec<ReservedRegion>,
}

impl IovaConstraints {
    /// The ranges guest addresses must avoid, each with why, sorted by start.
    pub fn forbidden(&self) -> Vec<(IovaRange, String)> {
        let mut out = Vec::new();
        if let Some(valid) = &self.valid {
            let mut next = 0u64;
            let mut open = true;
            for r in valid {
                if r.start > next {
                    out.push((
                        IovaRange {
                            start: next,
                            end: r.start - 1,
                        },
                        "outside the IOMMU's valid IOVA ranges".to_string(),
                    ));
                }
                match r.end.checked_add(1) {
                    Some(n) => next = next.max(n),
                    None => open = false,
                }
            }
            if open {
                out.push((
                    IovaRange {
                        start: next,
                        end: u64::MAX,
                    },
                    "beyond the IOMMU's address width".to_string(),
                ));
            }
        }
        for r in self.reserved.iter().filter(|r| r.blocks()) {
            out.push((
                r.range,
                format!("reserved by IOMMU group {} ({})", r.group, r.kind),
            ));
        }
        out.sort_by_key(|(r, _)| *r);
        out
    }

    /// The first forbidden range `[start, start + size)` overlaps, if any.
    pub fn conflict(&self, start: u64, size: u64) -> Option<(IovaRange, String)> {
        self.forbidden()
            .into_iter()
            .find(|(r, _)| r.overlaps(start, size))
    }
}
