//! The adapter that lets the pci crate's VFIO device logic drive a real
//! VFIO device: [`VfioAdapter`] implements `pci::vfio::VfioDeviceOps` over an
//! `iommu::vfio::DeviceHandle` (the orphan rule keeps it out of both crates).

use std::io;
use std::sync::Arc;

use iommu::vfio::{DeviceError, DeviceHandle, RegionMmap};
use pci::vfio::{Area, MappedArea, RegionInfo, ResetOutcome, VfioDeviceOps, VfioOpsError};
use vmm_sys_util::eventfd::EventFd;

/// Converts an iommu-crate device error for the pci crate.
fn ops_error(e: DeviceError) -> VfioOpsError {
    let op = e.to_string();
    match e {
        DeviceError::Io { source, .. } => VfioOpsError::Os { op, source },
        DeviceError::Irq { source, .. } => VfioOpsError::Os {
            op,
            source: io::Error::other(source),
        },
    }
}

/// A real VFIO device as the pci crate's device logic sees it.
pub struct VfioAdapter(pub Arc<DeviceHandle>);

/// A host mapping of part of a BAR.
struct HostArea(RegionMmap);

impl MappedArea for HostArea {
    fn host_addr(&self) -> u64 {
        self.0.addr()
    }

    fn size(&self) -> u64 {
        self.0.size()
    }
}

impl VfioDeviceOps for VfioAdapter {
    fn region(&self, index: u32) -> Option<RegionInfo> {
        let r = self.0.region(index)?;
        Some(RegionInfo {
            size: r.size,
            readable: r.readable,
            writable: r.writable,
            mmappable: r.mmappable,
            sparse_areas: r.sparse.map(|a| {
                a.into_iter()
                    .map(|(offset, size)| Area { offset, size })
                    .collect()
            }),
            msix_mappable: r.msix_mappable,
        })
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), VfioOpsError> {
        self.0.read(index, offset, data).map_err(ops_error)
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), VfioOpsError> {
        self.0.write(index, offset, data).map_err(ops_error)
    }

    fn mmap(&self, index: u32, area: Area) -> Result<Box<dyn MappedArea>, VfioOpsError> {
        let m = self
            .0
            .mmap(index, area.offset, area.size)
            .map_err(ops_error)?;
        Ok(Box::new(HostArea(m)))
    }

    fn irq_count(&self, index: u32) -> u32 {
        self.0.irq_count(index)
    }

    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioOpsError> {
        self.0.enable_irq(index, fds).map_err(ops_error)
    }

    fn disable_irq(&self, index: u32) -> Result<(), VfioOpsError> {
        self.0.disable_irq(index).map_err(ops_error)
    }

    fn set_intx_resample(&self, fd: &EventFd) -> Result<(), VfioOpsError> {
        self.0.set_intx_resample(fd).map_err(ops_error)
    }

    fn reset(&self) -> Result<ResetOutcome, VfioOpsError> {
        match self.0.reset().map_err(ops_error)? {
            true => Ok(ResetOutcome::Done),
            false => Ok(ResetOutcome::Unsupported),
        }
    }
}
