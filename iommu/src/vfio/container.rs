//! One VFIO container per VM (type1v2 IOMMU), registered with KVM's VFIO
//! pseudo-device: opening devices (their groups join the container and KVM
//! on first use, several devices of one group share it), reading the valid
//! IOVA ranges, and mapping guest RAM for DMA with IOVA = guest physical
//! address, remembered so it can be unmapped at exit.

use std::io;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use log::warn;
use nix::errno::Errno;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError, VfioOps};

use crate::size::format_size;
use crate::vfio::device::DeviceHandle;
use crate::vfio::ioctl;
use crate::vfio::iova::{parse_iommu_info, IovaError, IovaRange};
use crate::vfio::preflight::PlannedDevice;

/// Errors of the container and of opening devices.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// KVM refused to create its VFIO pseudo-device.
    #[error("KVM cannot create its VFIO device (KVM_DEV_TYPE_VFIO): {0}; is the kernel built with CONFIG_KVM_VFIO?")]
    KvmDevice(#[source] kvm_ioctls::Error),
    /// /dev/vfio/vfio could not be opened or lacks type1v2.
    #[error("cannot set up a VFIO container: {0}; is vfio_iommu_type1 loaded (`modprobe vfio_iommu_type1`)?")]
    Container(#[source] VfioError),
    /// The group node is held by another process.
    #[error("{bdf}: /dev/vfio/{group} is busy: another process (another VM?) has the group open; stop it first")]
    GroupBusy {
        /// The device.
        bdf: String,
        /// Its group.
        group: u32,
    },
    /// The group node is not accessible to this user.
    #[error("{bdf}: no permission to open /dev/vfio/{group}: give this user the node (as root: `vfio-vmm host bind --owner USER {bdf}`; `vfio-vmm host check --user USER {bdf}` lists what else it lacks) or run as root")]
    GroupAccess {
        /// The device.
        bdf: String,
        /// Its group.
        group: u32,
    },
    /// The kernel says the group is not viable.
    #[error("{bdf}: IOMMU group {group} is not viable (a member is on a host driver): run `vfio-vmm host bind --group {bdf}`")]
    GroupNotViable {
        /// The device.
        bdf: String,
        /// Its group.
        group: u32,
    },
    /// /dev/vfio/vfio is not accessible to this user.
    #[error("no permission to open /dev/vfio/vfio: as root, `chmod 0666 /dev/vfio/vfio` (the kernel's default mode) or run as root")]
    ContainerAccess,
    /// Another failure opening the device.
    #[error("{bdf}: cannot open the VFIO device")]
    Open {
        /// The device.
        bdf: String,
        /// The crate's error.
        #[source]
        source: VfioError,
    },
    /// VFIO_IOMMU_GET_INFO failed.
    #[error("cannot read the IOMMU's valid address ranges (VFIO_IOMMU_GET_INFO): {0}")]
    Info(#[source] io::Error),
    /// Its reply could not be parsed.
    #[error(transparent)]
    Iova(#[from] IovaError),
    /// A DMA mapping failed.
    #[error(
        "cannot map guest RAM {iova:#x}+{} for DMA: {source}; if this says ENOMEM or EPERM, RLIMIT_MEMLOCK \
         is too low (`vfio-vmm host check --memory SIZE`)",
        format_size(*size)
    )]
    DmaMap {
        /// Guest physical address = IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
        /// The crate's error.
        #[source]
        source: VfioError,
    },
    /// A DMA unmapping failed.
    #[error("cannot unmap guest RAM {iova:#x}+{size:#x} from the IOMMU")]
    DmaUnmap {
        /// IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
        /// The crate's error.
        #[source]
        source: VfioError,
    },
}

/// The errno of a system call's error, if it has one.
fn errno(err: &io::Error) -> Option<Errno> {
    err.raw_os_error().map(Errno::from_raw)
}

/// The VM's VFIO container.
pub struct Container {
    /// The crate's container (holds the groups and the KVM device).
    inner: Arc<VfioContainer>,
    /// DMA mappings made, `(iova, size)`.
    mapped: Mutex<Vec<(u64, u64)>>,
}

impl Container {
    /// Creates KVM's VFIO pseudo-device on `vm` and an empty container
    /// whose groups will be registered with it.
    pub fn new(vm: &VmFd) -> Result<Self, ContainerError> {
        let mut request = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let kvm_device = vm
            .create_device(&mut request)
            .map_err(ContainerError::KvmDevice)?;
        let handle = Arc::new(VfioDeviceFd::new_from_kvm(kvm_device));
        let inner = VfioContainer::new(Some(handle)).map_err(|e| match e {
            VfioError::OpenContainer(ref io)
                if matches!(errno(io), Some(Errno::EACCES | Errno::EPERM)) =>
            {
                ContainerError::ContainerAccess
            }
            e => ContainerError::Container(e),
        })?;
        Ok(Container {
            inner: Arc::new(inner),
            mapped: Mutex::default(),
        })
    }

    /// Opens a checked device: its group joins the container (and KVM) the
    /// first time, the IOMMU type is set with the first group.
    pub fn open_device(&self, planned: &PlannedDevice) -> Result<DeviceHandle, ContainerError> {
        let bdf = planned.bdf.to_string();
        let group = planned.group;
        let ops: Arc<dyn VfioOps> = self.inner.clone();
        let device = VfioDevice::new(&planned.sysfs_path, ops, false).map_err(|e| match e {
            VfioError::OpenGroup(ref io, _) if errno(io) == Some(Errno::EBUSY) => {
                ContainerError::GroupBusy {
                    bdf: bdf.clone(),
                    group,
                }
            }
            VfioError::OpenGroup(ref io, _)
                if matches!(errno(io), Some(Errno::EACCES | Errno::EPERM)) =>
            {
                ContainerError::GroupAccess {
                    bdf: bdf.clone(),
                    group,
                }
            }
            VfioError::GroupViable => ContainerError::GroupNotViable {
                bdf: bdf.clone(),
                group,
            },
            source => ContainerError::Open {
                bdf: bdf.clone(),
                source,
            },
        })?;
        Ok(DeviceHandle::new(device, planned.bdf))
    }

    /// The container's valid IOVA ranges (`None`: the kernel reports no
    /// limit). Only meaningful once a device is open (the IOMMU type is set
    /// with the first group).
    pub fn iova_ranges(&self) -> Result<Option<Vec<IovaRange>>, ContainerError> {
        let reply = ioctl::iommu_info(&*self.inner).map_err(ContainerError::Info)?;
        Ok(parse_iommu_info(&reply)?)
    }

    /// Maps `[host_addr, host_addr + size)` for DMA at IOVA `gpa`.
    ///
    /// # Safety
    ///
    /// The host range must be a live mapping of guest RAM that stays mapped
    /// until [`Container::unmap_all`] has run or the container is dropped;
    /// the device may read and write it at any time, so no Rust reference
    /// may be held to it (guest memory is only accessed through volatile
    /// copies, as vm-memory does).
    pub unsafe fn map_dma(
        &self,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<(), ContainerError> {
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        // SAFETY: the caller upholds vfio_dma_map's contract (see above).
        unsafe { self.inner.vfio_dma_map(gpa, len, host_addr as *mut u8) }.map_err(|source| {
            ContainerError::DmaMap {
                iova: gpa,
                size,
                source,
            }
        })?;
        self.mapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((gpa, size));
        Ok(())
    }

    /// Unmaps every DMA mapping made; the first failure is returned after
    /// trying them all.
    pub fn unmap_all(&self) -> Result<(), ContainerError> {
        let mapped = std::mem::take(&mut *self.mapped.lock().unwrap_or_else(|p| p.into_inner()));
        let mut first = None;
        for (iova, size) in mapped {
            let len = usize::try_from(size).unwrap_or(usize::MAX);
            if let Err(source) = self.inner.vfio_dma_unmap(iova, len) {
                warn!("cannot unmap guest RAM {iova:#x}+{size:#x} from the IOMMU: {source}");
                first.get_or_insert(ContainerError::DmaUnmap { iova, size, source });
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Bytes mapped for DMA.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, s)| s)
            .sum()
    }
}
