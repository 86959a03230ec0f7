//! Loading Linux by the x86-64 boot protocol: the bzImage (linux-loader), the
//! initramfs, the command line and the zero page with the E820 map.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::{load_cmdline, Cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{self, CMDLINE_ADDR, HIMEM_START, ZERO_PAGE_ADDR};
use crate::memory::GuestMemory;

/// Errors while loading the guest kernel.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// The kernel or initramfs file cannot be opened or read.
    #[error("cannot read {path}: {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// The kernel is not a bzImage.
    #[error("{0} is not a bzImage kernel ({1}): pass the kernel's bzImage, e.g. /boot/vmlinuz-*")]
    NotBzImage(PathBuf, linux_loader::loader::Error),
    /// The command line does not fit or has bad characters.
    #[error("bad kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing the command line into the guest failed.
    #[error("cannot place the kernel command line: {0}")]
    LoadCmdline(linux_loader::loader::Error),
    /// The initramfs is too large for guest RAM below the kernel's limit.
    #[error("the initramfs ({size} MiB) does not fit in guest RAM above the kernel: give the guest more --memory")]
    InitramfsTooLarge {
        /// MiB of the initramfs.
        size: u64,
    },
    /// Writing into guest memory failed.
    #[error("cannot write into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// The zero page cannot be written.
    #[error("cannot write the zero page: {0}")]
    ZeroPage(linux_loader::configurator::Error),
}

/// Where the kernel went and where its 64-bit entry is.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The 64-bit entry point (load address + 0x200).
    pub entry: u64,
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// startup_64 sits 0x200 bytes into the protected-mode kernel.
const STARTUP_64_OFFSET: u64 = 0x200;

fn open(path: &Path) -> Result<File, LinuxError> {
    File::open(path).map_err(|err| LinuxError::Read {
        path: path.into(),
        err,
    })
}

/// The loaded initramfs: guest address and size.
struct Initramfs {
    addr: u64,
    size: u64,
}

fn load_initramfs(
    mem: &GuestMemory,
    path: &Path,
    kernel_end: u64,
    max_addr: u64,
    low_ram_end: u64,
) -> Result<Initramfs, LinuxError> {
    let data = std::fs::read(path).map_err(|err| LinuxError::Read {
        path: path.into(),
        err,
    })?;
    let size = data.len() as u64;
    let top = low_ram_end.min(max_addr.saturating_add(1));
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end);
    let addr = addr.ok_or(LinuxError::InitramfsTooLarge { size: size >> 20 })?;
    mem.write_slice(&data, GuestAddress(addr))?;
    Ok(Initramfs { addr, size })
}

/// Loads kernel, initramfs and command line, and writes the zero page
/// describing RAM in the `ram` regions (start, size).
pub fn load(
    mem: &GuestMemory,
    ram: &[(u64, u64)],
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
) -> Result<LoadedKernel, LinuxError> {
    let mut file = open(kernel)?;
    let loaded = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| LinuxError::NotBzImage(kernel.into(), e))?;
    let mut params = boot_params::default();
    if let Some(hdr) = loaded.setup_header {
        params.hdr = hdr;
    }

    let max_cmdline = match params.hdr.cmdline_size {
        0 => 2048,
        n => n as usize,
    };
    let cl = Cmdline::try_from(cmdline, max_cmdline).map_err(LinuxError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl).map_err(LinuxError::LoadCmdline)?;

    if let Some(path) = initramfs {
        let max = match params.hdr.initrd_addr_max {
            0 => 0x37ff_ffff,
            n => u64::from(n),
        };
        let low_ram_end = ram.first().map_or(0, |&(start, size)| {
            (start + size).min(layout::MMIO_HOLE_START)
        });
        let rd = load_initramfs(mem, path, loaded.kernel_end, max, low_ram_end)?;
        params.hdr.ramdisk_image = rd.addr as u32;
        params.hdr.ramdisk_size = rd.size as u32;
    }

    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;
    params.acpi_rsdp_addr = layout::ACPI_START;
    let map = layout::e820_map(ram);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        (slot.addr, slot.size, slot.r#type) = (e.addr, e.size, e.kind);
    }
    params.e820_entries = map.len() as u8;

    let bp = BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR));
    LinuxBootConfigurator::write_bootparams(&bp, mem).map_err(LinuxError::ZeroPage)?;
    Ok(LoadedKernel {
        entry: loaded.kernel_load.0 + STARTUP_64_OFFSET,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryConfig;
    use crate::memory::create_guest_memory;

    fn mem() -> GuestMemory {
        create_guest_memory(
            &MemoryConfig {
                size: 64 << 20,
                hugepages: false,
                mergeable: false,
            },
            &[(0, 64 << 20)],
        )
        .unwrap()
    }

    #[test]
    fn a_file_that_is_not_a_bzimage_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("vfio-vmm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-kernel");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let err = load(&mem(), &[(0, 64 << 20)], &path, None, "console=ttyS0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a bzImage"), "{err}");
        let err = load(&mem(), &[(0, 64 << 20)], &dir.join("missing"), None, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn initramfs_goes_high_and_page_aligned() {
        let dir = std::env::temp_dir().join(format!("vfio-vmm-rd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rd");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let rd = load_initramfs(&mem(), &path, 0x200_0000, u64::MAX, 64 << 20).unwrap();
        assert_eq!(rd.addr % 4096, 0);
        assert!(rd.addr + rd.size <= 64 << 20 && rd.addr >= 0x200_0000);
        let err = load_initramfs(&mem(), &path, (64 << 20) - 4096, u64::MAX, 64 << 20);
        assert!(matches!(err, Err(LinuxError::InitramfsTooLarge { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
