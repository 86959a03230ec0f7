//! The checks made from sysfs before any VFIO file is opened, so each way a
//! device can be unusable gets its own error saying what to do: no IOMMU,
//! no such device, not bound to vfio-pci, group not viable (other members on
//! host drivers), no `/dev/vfio/N`, or the group held by another process.

use std::path::PathBuf;

use crate::bdf::Bdf;
use crate::group::{group_ids, is_vfio_driver, GroupError, IommuGroup};
use crate::process::holders;
use crate::sysfs::{Sysfs, SysfsError};

/// A device that cannot be assigned.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The host has no IOMMU groups at all.
    #[error(
        "this host has no IOMMU (no entries in /sys/kernel/iommu_groups): enable VT-d/AMD-Vi in the \
         firmware and boot with intel_iommu=on (Intel) or amd_iommu=on (AMD); `vfio-vmm host check` says which"
    )]
    NoIommu,
    /// The device is named twice.
    #[error("--device {0} is given twice")]
    Duplicate(Bdf),
    /// The device does not exist.
    #[error("no PCI device {0} on this host; `vfio-vmm host list` shows the devices present")]
    NoDevice(Bdf),
    /// The device is not on vfio-pci.
    #[error("{bdf} is {}, not vfio-pci: run `vfio-vmm host bind {bdf}` first", match .driver { Some(d) => format!("bound to {d}"), None => "bound to no driver".to_string() })]
    NotBound {
        /// The device.
        bdf: Bdf,
        /// Its driver.
        driver: Option<String>,
    },
    /// Other members of the group are on host drivers.
    #[error(
        "IOMMU group {group} of {bdf} is not viable: {}. VFIO needs the whole group: run \
         `vfio-vmm host bind --group {bdf}`",
        members.iter().map(|(b, d)| format!("{b} is on {d}")).collect::<Vec<_>>().join(", ")
    )]
    NotViable {
        /// The device asked for.
        bdf: Bdf,
        /// Its group.
        group: u32,
        /// Members on host drivers, with the driver.
        members: Vec<(Bdf, String)>,
    },
    /// `/dev/vfio/N` does not exist.
    #[error("{path} does not exist although {bdf} is on vfio-pci: is the vfio module loaded (`modprobe vfio-pci`)?")]
    NoGroupNode {
        /// The device.
        bdf: Bdf,
        /// The missing node.
        path: PathBuf,
    },
    /// Another process holds the group.
    #[error(
        "IOMMU group {group} ({path}) of {bdf} is in use by {}: stop it first (one VM per group)",
        holders.join(", ")
    )]
    Busy {
        /// The device.
        bdf: Bdf,
        /// Its group.
        group: u32,
        /// The group node.
        path: PathBuf,
        /// `command (pid N)` of each holder.
        holders: Vec<String>,
    },
    /// The device has no group (IOMMU off for it).
    #[error(transparent)]
    Group(#[from] GroupError),
    /// sysfs could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
}

/// A device that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDevice {
    /// The device.
    pub bdf: Bdf,
    /// Its IOMMU group.
    pub group: u32,
    /// `/sys/bus/pci/devices/BDF` (what VFIO opens it by).
    pub sysfs_path: PathBuf,
}

/// Checks every device the VM wants, in order, and returns them with their groups.
pub fn preflight(sysfs: &Sysfs, bdfs: &[Bdf]) -> Result<Vec<PlannedDevice>, PreflightError> {
    if bdfs.is_empty() {
        return Ok(Vec::new());
    }
    if group_ids(sysfs)?.is_empty() {
        return Err(PreflightError::NoIommu);
    }
    for (i, bdf) in bdfs.iter().enumerate() {
        if bdfs[..i].contains(bdf) {
            return Err(PreflightError::Duplicate(*bdf));
        }
    }
    let mut planned = Vec::new();
    for &bdf in bdfs {
        if !sysfs.device_exists(bdf) {
            return Err(PreflightError::NoDevice(bdf));
        }
        let driver = sysfs.driver_of(bdf)?;
        if !driver.as_deref().is_some_and(is_vfio_driver) {
            return Err(PreflightError::NotBound { bdf, driver });
        }
        let group = IommuGroup::of_device(sysfs, bdf)?;
        let members: Vec<(Bdf, String)> = group
            .culprits(bdfs)
            .into_iter()
            .map(|d| (d.bdf, d.driver.clone().unwrap_or_default()))
            .collect();
        if !members.is_empty() {
            return Err(PreflightError::NotViable {
                bdf,
                group: group.id,
                members,
            });
        }
        let node = sysfs.path(&format!("/dev/vfio/{}", group.id));
        if !node.exists() {
            return Err(PreflightError::NoGroupNode { bdf, path: node });
        }
        let me = std::process::id();
        let users: Vec<String> = holders(sysfs, bdf, Some(group.id))
            .into_iter()
            .filter(|h| h.pid != me)
            .map(|h| format!("{} (pid {})", h.command, h.pid))
            .collect();
        if !users.is_empty() {
            return Err(PreflightError::Busy {
                bdf,
                group: group.id,
                path: PathBuf::from(format!("/dev/vfio/{}", group.id)),
                holders: users,
            });
        }
        planned.push(PlannedDevice {
            bdf,
            group: group.id,
            sysfs_path: sysfs.device_dir(bdf),
        });
    }
    Ok(planned)
}
