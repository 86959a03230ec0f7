//! The VFIO ioctls vfio-ioctls 0.10 does not expose, written by hand:
//! VFIO_IOMMU_GET_INFO with its capability chain (for the valid IOVA
//! ranges), and VFIO_DEVICE_GET_INFO / VFIO_DEVICE_RESET with their results
//! (the crate's `VfioDevice::reset` neither says whether the device has a
//! reset mechanism nor whether the reset worked).

use std::io;
use std::os::fd::AsRawFd;

use vfio_bindings::bindings::vfio::{
    vfio_device_info, vfio_iommu_type1_info, VFIO_BASE, VFIO_DEVICE_FLAGS_RESET, VFIO_TYPE,
};
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ptr, ioctl_with_mut_ref};
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(VFIO_DEVICE_GET_INFO, VFIO_TYPE as u32, VFIO_BASE + 7);
ioctl_io_nr!(VFIO_DEVICE_RESET, VFIO_TYPE as u32, VFIO_BASE + 11);
ioctl_io_nr!(VFIO_IOMMU_GET_INFO, VFIO_TYPE as u32, VFIO_BASE + 12);

/// The errno of a failed ioctl.
fn check(rc: i32) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs VFIO_IOMMU_GET_INFO on container `fd` and returns the raw reply
/// (header plus capability chain) for [`crate::vfio::iova::parse_iommu_info`].
pub fn iommu_info(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    let header_size = std::mem::size_of::<vfio_iommu_type1_info>();
    let mut info = vfio_iommu_type1_info {
        argsz: header_size as u32,
        ..Default::default()
    };
    // SAFETY: `fd` is a VFIO container and `info` is a valid, writable
    // vfio_iommu_type1_info whose argsz covers exactly that struct.
    check(unsafe { ioctl_with_mut_ref(fd, VFIO_IOMMU_GET_INFO(), &mut info) })?;
    let full = (info.argsz as usize).max(header_size);
    // u64 elements keep the buffer aligned for the kernel's u64 fields.
    let mut buf = vec![0u64; full.div_ceil(8)];
    let bytes = buf.len() * 8;
    // The first field is argsz (flags follows): tell the kernel how much room there is.
    let argsz = u32::try_from(bytes).unwrap_or(u32::MAX).to_ne_bytes();
    buf[0] = u64::from_ne_bytes([argsz[0], argsz[1], argsz[2], argsz[3], 0, 0, 0, 0]);
    // SAFETY: `buf` is writable for `bytes` bytes, at least the argsz
    // written at its start, and outlives the call.
    check(unsafe { ioctl_with_mut_ptr(fd, VFIO_IOMMU_GET_INFO(), buf.as_mut_ptr()) })?;
    Ok(buf.iter().flat_map(|w| w.to_ne_bytes()).collect())
}

/// Whether the device behind `fd` has a reset mechanism (VFIO_DEVICE_FLAGS_RESET).
pub fn device_can_reset(fd: &impl AsRawFd) -> io::Result<bool> {
    let mut info = vfio_device_info {
        argsz: std::mem::size_of::<vfio_device_info>() as u32,
        ..Default::default()
    };
    // SAFETY: `fd` is a VFIO device and `info` a valid, writable
    // vfio_device_info with argsz set to its size.
    check(unsafe { ioctl_with_mut_ref(fd, VFIO_DEVICE_GET_INFO(), &mut info) })?;
    Ok(info.flags & VFIO_DEVICE_FLAGS_RESET != 0)
}

/// Resets the device behind `fd`.
pub fn device_reset(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: VFIO_DEVICE_RESET takes no argument and only acts on the device behind `fd`.
    check(unsafe { ioctl(fd, VFIO_DEVICE_RESET()) })
}
