//! `host list`: every PCI device grouped by IOMMU group, as text or as JSON.
//!
//! JSON schema (`host list --json`), version 1:
//! ```text
//! {
//!   "schema": 1,
//!   "pci_ids": "/usr/share/misc/pci.ids" | null,   // where names came from
//!   "groups": [                                    // ascending group; ungrouped last
//!     {
//!       "group": 12 | null,                        // null: devices with no IOMMU group
//!       "devices": [
//!         {
//!           "bdf": "0000:01:00.0",
//!           "vendor_id": "10de", "device_id": "2204",          // 4 lowercase hex digits
//!           "subsystem_vendor_id": "1458", "subsystem_device_id": "403b",
//!           "vendor_name": "NVIDIA Corporation" | null,        // from pci.ids
//!           "device_name": "GA102 [GeForce RTX 3090]" | null,
//!           "class": "030000",                                 // 6 hex digits
//!           "class_name": "VGA compatible controller" | null,
//!           "driver": "nvidia" | null,
//!           "iommu_group": 12 | null,
//!           "bridge": false
//!         }
//!       ]
//!     }
//!   ]
//! }
//! ```
//! Fields are only ever added within a schema version.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::bdf::Bdf;
use crate::pciids::PciNames;
use crate::sysfs::{Sysfs, SysfsError};

/// Why the device list could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// sysfs could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// JSON serialisation failed.
    #[error("cannot produce JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Version of the JSON schema above.
pub const SCHEMA_VERSION: u32 = 1;

/// One PCI function in the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceEntry {
    /// Address.
    pub bdf: Bdf,
    /// Vendor ID, 4 hex digits.
    pub vendor_id: String,
    /// Device ID, 4 hex digits.
    pub device_id: String,
    /// Subsystem vendor ID, 4 hex digits.
    pub subsystem_vendor_id: String,
    /// Subsystem device ID, 4 hex digits.
    pub subsystem_device_id: String,
    /// Vendor name from pci.ids.
    pub vendor_name: Option<String>,
    /// Device name from pci.ids.
    pub device_name: Option<String>,
    /// Class code, 6 hex digits.
    pub class: String,
    /// Class (subclass) name from pci.ids.
    pub class_name: Option<String>,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// PCI bridge (may stay on its host driver in a group given to VFIO).
    pub bridge: bool,
}

/// Devices of one IOMMU group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupEntry {
    /// Group number; `None` for devices without a group.
    pub group: Option<u32>,
    /// Members, by address.
    pub devices: Vec<DeviceEntry>,
}

/// The whole listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The pci.ids file names came from.
    pub pci_ids: Option<String>,
    /// Groups, ascending; devices without a group last.
    pub groups: Vec<GroupEntry>,
}

/// Lists every PCI device under the sysfs root.
pub fn list(sysfs: &Sysfs, names: &PciNames) -> Result<Listing, ListError> {
    let mut by_group: BTreeMap<Option<u32>, Vec<DeviceEntry>> = BTreeMap::new();
    for bdf in sysfs.pci_devices()? {
        let d = sysfs.device(bdf)?;
        let entry = DeviceEntry {
            bdf,
            vendor_id: format!("{:04x}", d.vendor),
            device_id: format!("{:04x}", d.device),
            subsystem_vendor_id: format!("{:04x}", d.subsystem_vendor),
            subsystem_device_id: format!("{:04x}", d.subsystem_device),
            vendor_name: names.vendor(d.vendor).map(str::to_string),
            device_name: names.device(d.vendor, d.device).map(str::to_string),
            class: format!("{:06x}", d.class),
            class_name: names.class(d.class).map(str::to_string),
            bridge: d.is_bridge(),
            driver: d.driver,
            iommu_group: d.iommu_group,
        };
        by_group.entry(d.iommu_group).or_default().push(entry);
    }
    // BTreeMap orders None first; ungrouped devices read better last.
    let ungrouped = by_group.remove(&None);
    let mut groups: Vec<GroupEntry> = by_group
        .into_iter()
        .map(|(group, devices)| GroupEntry { group, devices })
        .collect();
    if let Some(devices) = ungrouped {
        groups.push(GroupEntry {
            group: None,
            devices,
        });
    }
    Ok(Listing {
        schema: SCHEMA_VERSION,
        pci_ids: names.source().map(|p| p.display().to_string()),
        groups,
    })
}

impl Listing {
    /// The listing as pretty-printed JSON (schema in the module documentation).
    pub fn to_json(&self) -> Result<String, ListError> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

impl fmt::Display for Listing {
    /// Text form: a heading per group, one line per device:
    /// `0000:01:00.0 [10de:2204] VGA compatible controller [0300]: NVIDIA Corporation GA102 (driver nvidia)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.groups.is_empty() {
            return writeln!(f, "no PCI devices found");
        }
        for group in &self.groups {
            match group.group {
                Some(id) => writeln!(f, "IOMMU group {id}:")?,
                None => writeln!(
                    f,
                    "No IOMMU group (IOMMU off; `vfio-vmm host check` says why):"
                )?,
            }
            for d in &group.devices {
                let class = d.class_name.as_deref().unwrap_or("Class");
                let name = match (&d.vendor_name, &d.device_name) {
                    (Some(v), Some(n)) => format!("{v} {n}"),
                    (Some(v), None) => format!("{v} device {}", d.device_id),
                    _ => format!("device {}:{}", d.vendor_id, d.device_id),
                };
                let driver = d.driver.as_deref().unwrap_or("none");
                writeln!(
                    f,
                    "  {} [{}:{}] {class} [{}]: {name} (driver {driver})",
                    d.bdf,
                    d.vendor_id,
                    d.device_id,
                    &d.class[..4],
                )?;
            }
        }
        if self.pci_ids.is_none() {
            writeln!(
                f,
                "(no pci.ids database found: install the pci.ids or hwdata package, or set $VFIO_VMM_PCI_IDS, for names)"
            )?;
        }
        Ok(())
    }
}
