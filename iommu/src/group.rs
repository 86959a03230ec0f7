//! IOMMU groups as sysfs shows them (`sys/kernel/iommu_groups/N/devices/`), and the rule
//! that decides whether a group can be handed to VFIO: every member must be on a VFIO
//! driver, on `pci-stub`, on no driver, or be a bridge (the kernel lets bridges keep
//! `pcieport`). A member on any other host driver makes the whole group unusable.

use std::fmt;

use crate::bdf::Bdf;
use crate::sysfs::{PciDevice, Sysfs, SysfsError};

/// Why an IOMMU group could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// sysfs could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The device exists but belongs to no IOMMU group, so the IOMMU is not in use.
    #[error(
        "{0} has no IOMMU group: the IOMMU is off. Enable VT-d/AMD-Vi in the firmware and \
         intel_iommu=on (Intel) on the kernel command line; `vfio-vmm host check` says which"
    )]
    NoGroup(Bdf),
}

/// The driver the kernel's VFIO PCI support binds; the one `host bind` uses.
pub const VFIO_PCI: &str = "vfio-pci";

/// True for `vfio-pci` and vendor variant drivers built on it (`mlx5_vfio_pci`, ...).
pub fn is_vfio_driver(driver: &str) -> bool {
    driver == VFIO_PCI || driver.ends_with("vfio_pci") || driver.ends_with("vfio-pci")
}

/// Where a group member stands with respect to handing its group to VFIO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberState {
    /// Bound to a VFIO driver.
    Vfio(String),
    /// Bound to no driver.
    Unbound,
    /// Bound to `pci-stub`, which the kernel accepts in a VFIO group.
    Stub,
    /// A bridge, which may keep its host driver (usually `pcieport`).
    Bridge(Option<String>),
    /// Bound to a host driver: blocks the group until it is rebound.
    HostDriver(String),
}

impl MemberState {
    /// Classifies a device.
    pub fn of(device: &PciDevice) -> Self {
        if device.is_bridge() {
            return MemberState::Bridge(device.driver.clone());
        }
        match device.driver.as_deref() {
            None => MemberState::Unbound,
            Some("pci-stub") => MemberState::Stub,
            Some(d) if is_vfio_driver(d) => MemberState::Vfio(d.to_string()),
            Some(d) => MemberState::HostDriver(d.to_string()),
        }
    }

    /// True when this member prevents VFIO from using the group.
    pub fn blocks_group(&self) -> bool {
        matches!(self, MemberState::HostDriver(_))
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberState::Vfio(d) => write!(f, "on {d}"),
            MemberState::Unbound => write!(f, "on no driver"),
            MemberState::Stub => write!(f, "on pci-stub"),
            MemberState::Bridge(Some(d)) => write!(f, "a bridge on {d}"),
            MemberState::Bridge(None) => write!(f, "a bridge on no driver"),
            MemberState::HostDriver(d) => write!(f, "on host driver {d}"),
        }
    }
}

/// A member of a group that is not a PCI function (rare on x86; platform devices on Arm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherMember {
    /// The sysfs device name.
    pub name: String,
    /// Its driver, if any.
    pub driver: Option<String>,
}

/// One IOMMU group and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuGroup {
    /// Group number, as in `/dev/vfio/N`.
    pub id: u32,
    /// PCI members, sorted by address.
    pub devices: Vec<PciDevice>,
    /// Members that are not PCI functions.
    pub others: Vec<OtherMember>,
}

impl IommuGroup {
    /// Reads group `id`.
    pub fn read(sysfs: &Sysfs, id: u32) -> Result<Self, GroupError> {
        let dir = sysfs.group_dir(id).join("devices");
        let mut devices = Vec::new();
        let mut others = Vec::new();
        for name in sysfs.list_dir(&dir)? {
            match name.parse::<Bdf>() {
                Ok(bdf) => devices.push(sysfs.device(bdf)?),
                Err(_) => {
                    let driver = sysfs.link_name(&dir.join(&name).join("driver"))?;
                    others.push(OtherMember { name, driver });
                }
            }
        }
        devices.sort_by_key(|d| d.bdf);
        Ok(IommuGroup {
            id,
            devices,
            others,
        })
    }

    /// Reads the group `bdf` belongs to.
    pub fn of_device(sysfs: &Sysfs, bdf: Bdf) -> Result<Self, GroupError> {
        if !sysfs.device_exists(bdf) {
            return Err(SysfsError::NoDevice {
                bdf,
                path: sysfs.device_dir(bdf),
            }
            .into());
        }
        let id = sysfs.group_of(bdf)?.ok_or(GroupError::NoGroup(bdf))?;
        Self::read(sysfs, id)
    }

    /// Members other than those in `assigned` that are on host drivers.
    pub fn culprits(&self, assigned: &[Bdf]) -> Vec<&PciDevice> {
        self.devices
            .iter()
            .filter(|d| !assigned.contains(&d.bdf) && MemberState::of(d).blocks_group())
            .collect()
    }

    /// Non-bridge members: what `host bind --group` binds to vfio-pci.
    pub fn assignable(&self) -> Vec<Bdf> {
        self.devices
            .iter()
            .filter(|d| !d.is_bridge())
            .map(|d| d.bdf)
            .collect()
    }
}

/// Every IOMMU group number on the host, ascending.
pub fn group_ids(sysfs: &Sysfs) -> Result<Vec<u32>, SysfsError> {
    sysfs.list_parsed(&sysfs.path("/sys/kernel/iommu_groups"))
}
