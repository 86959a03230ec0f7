//! Loading Linux, by one of two protocols. A bzImage by the x86-64 boot
//! protocol: the kernel (linux-loader), the initramfs, the command line and
//! the zero page with the E820 map. An ELF vmlinux by the PVH protocol:
//! linux-loader's ELF loader places the segments and finds the entry in the
//! PVH note; the `hvm_start_info` (version 1: with a memory map) names the
//! command line, the initramfs as the one module, the memory map and the
//! ACPI RSDP, and linux-loader's PVH configurator writes it.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, Cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use super::cpu::BootEntry;
use crate::layout::{self, CMDLINE_ADDR, HIMEM_START, ZERO_PAGE_ADDR};
use crate::layout::{PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR};
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
    /// The ELF kernel cannot be loaded.
    #[error("cannot load the vmlinux {0}: {1}: pass an uncompressed x86-64 vmlinux whose segments fit in guest RAM (--memory)")]
    Elf(PathBuf, linux_loader::loader::Error),
    /// The ELF kernel has no PVH entry.
    #[error(
        "{0} has no PVH entry note ({1}): boot a vmlinux built with CONFIG_PVH=y, or its bzImage"
    )]
    NoPvhEntry(PathBuf, PvhBootCapability),
    /// The PVH start info cannot be written.
    #[error("cannot write the PVH start info: {0}")]
    StartInfo(linux_loader::configurator::Error),
}

/// Where the kernel went and how the boot vCPU enters it.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The entry: the 64-bit one (load address + 0x200) of a bzImage, or a
    /// vmlinux's PVH entry.
    pub entry: BootEntry,
}

/// `hvm_start_info.magic` ("xEn3" with the high bit of each byte set).
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

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

/// The guest's E820 map for `ram`, as the PVH memory map.
fn pvh_memmap(ram: &[(u64, u64)]) -> Vec<hvm_memmap_table_entry> {
    layout::e820_map(ram)
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect()
}

/// The end of the RAM region that starts at 0, below the MMIO hole.
fn low_ram_end(ram: &[(u64, u64)]) -> u64 {
    ram.first().map_or(0, |&(start, size)| {
        (start + size).min(layout::MMIO_HOLE_START)
    })
}

/// Loads an ELF vmlinux, initramfs and command line, and writes the PVH
/// start info describing RAM in the `ram` regions (start, size).
pub fn load_pvh(
    mem: &GuestMemory,
    ram: &[(u64, u64)],
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
) -> Result<LoadedKernel, LinuxError> {
    let mut file = open(kernel)?;
    let loaded = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| LinuxError::Elf(kernel.into(), e))?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(LinuxError::NoPvhEntry(kernel.into(), loaded.pvh_boot_cap));
    };
    let cl = Cmdline::try_from(cmdline, crate::config::vmlinux::CMDLINE_MAX)
        .map_err(LinuxError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl).map_err(LinuxError::LoadCmdline)?;

    let memmap = pvh_memmap(ram);
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: layout::ACPI_START,
        memmap_paddr: PVH_MEMMAP_ADDR,
        // A handful of entries: fits.
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut module = None;
    if let Some(path) = initramfs {
        let max = u64::from(u32::MAX);
        let rd = load_initramfs(mem, path, loaded.kernel_end, max, low_ram_end(ram))?;
        module = Some(hvm_modlist_entry {
            paddr: rd.addr,
            size: rd.size,
            ..Default::default()
        });
        (info.nr_modules, info.modlist_paddr) = (1, PVH_MODLIST_ADDR);
    }
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if let Some(module) = module {
        params.set_modules(&[module], GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(LinuxError::StartInfo)?;
    Ok(LoadedKernel {
        entry: BootEntry::Pvh {
            entry: entry.0,
            start_info: PVH_INFO_ADDR,
        },
    })
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
        let rd = load_initramfs(mem, path, loaded.kernel_end, max, low_ram_end(ram))?;
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
        entry: BootEntry::Linux64(loaded.kernel_load.0 + STARTUP_64_OFFSET),
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
    fn a_pvh_vmlinux_is_loaded_and_its_start_info_names_everything() {
        let dir = std::env::temp_dir().join(format!("vfio-vmm-pvh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pvh: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &0x10_0040u64.to_le_bytes());
        let (kernel, rd) = (dir.join("vmlinux"), dir.join("rd"));
        std::fs::write(
            &kernel,
            crate::config::vmlinux::tests::elf(62, &[pvh], &[0xf4; 64]),
        )
        .unwrap();
        std::fs::write(&rd, vec![7u8; 10_000]).unwrap();
        let (m, ram) = (mem(), [(0, 64 << 20)]);
        let loaded = load_pvh(&m, &ram, &kernel, Some(&rd), "console=ttyS0").unwrap();
        assert_eq!(
            loaded.entry,
            BootEntry::Pvh {
                entry: 0x10_0040,
                start_info: PVH_INFO_ADDR
            }
        );
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x10_0000)).unwrap(), 0xf4);
        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!((info.magic, info.version), (XEN_HVM_START_MAGIC_VALUE, 1));
        assert_eq!(
            (info.cmdline_paddr, info.rsdp_paddr),
            (CMDLINE_ADDR, layout::ACPI_START)
        );
        let mut cl = [0u8; 14];
        m.read_slice(&mut cl, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&cl, b"console=ttyS0\0");
        let map = layout::e820_map(&ram);
        assert_eq!(info.memmap_entries as usize, map.len());
        for (i, e) in map.iter().enumerate() {
            let at = GuestAddress(info.memmap_paddr + 24 * i as u64);
            let got: hvm_memmap_table_entry = m.read_obj(at).unwrap();
            assert_eq!((got.addr, got.size, got.type_), (e.addr, e.size, e.kind));
        }
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!(module.size, 10_000);
        assert!(module.paddr.is_multiple_of(4096) && module.paddr > 0x10_0000);
        assert_eq!(m.read_obj::<u8>(GuestAddress(module.paddr)).unwrap(), 7);

        std::fs::write(
            &kernel,
            crate::config::vmlinux::tests::elf(62, &[], &[0xf4]),
        )
        .unwrap();
        let err = load_pvh(&m, &ram, &kernel, None, "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no PVH entry note") && err.contains("CONFIG_PVH=y"),
            "{err}"
        );
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
