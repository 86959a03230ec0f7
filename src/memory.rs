//! Guest RAM: allocating it (anonymous or huge pages), marking it for KSM,
//! and checking first that the host can give it.

use std::fs::File;
use std::ptr::NonNull;

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{madvise, MapFlags, MmapAdvise, ProtFlags};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::config::MemoryConfig;

/// The guest memory type used throughout the VMM.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Errors while allocating guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host does not have the memory free.
    #[error("--memory {want} MiB is more than the host can give ({avail} MiB available): use a smaller --memory")]
    TooLarge {
        /// MiB asked for.
        want: u64,
        /// MiB the host reports available.
        avail: u64,
    },
    /// Not enough free 2 MiB huge pages.
    #[error("hugepages=on needs {want} free 2 MiB huge pages but the host has {free}: reserve them with `echo {want} > /proc/sys/vm/nr_hugepages` (as root) or drop hugepages=on")]
    NoHugepages {
        /// Pages needed.
        want: u64,
        /// Pages free.
        free: u64,
    },
    /// memfd_create or ftruncate failed.
    #[error("cannot create the huge-page backing file: {0}")]
    Memfd(std::io::Error),
    /// mmap of a RAM region failed.
    #[error("cannot map {size} MiB of guest RAM: {err}")]
    Mmap {
        /// MiB of the region.
        size: u64,
        /// The mmap error.
        err: vm_memory::mmap::MmapRegionError,
    },
    /// The regions overlap or wrap (a bug in the layout).
    #[error("bad guest memory layout: {0}")]
    Layout(vm_memory::GuestRegionCollectionError),
}

/// A field of /proc/meminfo in KiB.
fn meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn free_hugepages_2m() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Checks that the host can back `config` before anything is allocated.
pub fn check_host_can_give(config: &MemoryConfig) -> Result<(), MemoryError> {
    if config.hugepages {
        let want = config.size >> 21;
        let free = free_hugepages_2m();
        if free < want {
            return Err(MemoryError::NoHugepages { want, free });
        }
    } else if let Some(avail) = meminfo_kib("MemAvailable") {
        if config.size >> 10 > avail {
            return Err(MemoryError::TooLarge {
                want: config.size >> 20,
                avail: avail >> 10,
            });
        }
    }
    Ok(())
}

fn hugepage_file(size: u64) -> Result<File, MemoryError> {
    let fd = memfd_create(
        "vfio-vmm-ram",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_HUGETLB,
    )
    .map_err(|e| MemoryError::Memfd(e.into()))?;
    let file = File::from(fd);
    file.set_len(size).map_err(MemoryError::Memfd)?;
    Ok(file)
}

fn map_region(
    start: u64,
    size: u64,
    config: &MemoryConfig,
) -> Result<GuestRegionMmap, MemoryError> {
    let prot = (ProtFlags::PROT_READ | ProtFlags::PROT_WRITE).bits();
    let mmap_err = |err| MemoryError::Mmap {
        size: size >> 20,
        err,
    };
    let region = if config.hugepages {
        // No MAP_NORESERVE: the kernel reserves every huge page now, so a
        // short pool fails here instead of killing the guest by SIGBUS later.
        let file = FileOffset::new(hugepage_file(size)?, 0);
        let flags = MapFlags::MAP_SHARED.bits();
        MmapRegion::build(Some(file), size as usize, prot, flags).map_err(mmap_err)?
    } else {
        let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS | MapFlags::MAP_NORESERVE;
        MmapRegion::build(None, size as usize, prot, flags.bits()).map_err(mmap_err)?
    };
    if config.mergeable {
        let addr = NonNull::new(region.as_ptr().cast()).expect("a built mapping is never null");
        // SAFETY: the range is exactly the mapping MmapRegion just created and
        // owns; MADV_MERGEABLE only lets KSM share identical pages.
        if let Err(e) = unsafe { madvise(addr, size as usize, MmapAdvise::MADV_MERGEABLE) } {
            log::warn!("KSM merging unavailable: {}", std::io::Error::from(e));
        }
    }
    GuestRegionMmap::new(region, GuestAddress(start)).ok_or(MemoryError::Layout(
        vm_memory::GuestRegionCollectionError::NoMemoryRegion,
    ))
}

/// Allocates guest RAM in the `ram` regions (start, size) of the layout.
pub fn create_guest_memory(
    config: &MemoryConfig,
    ram: &[(u64, u64)],
) -> Result<GuestMemory, MemoryError> {
    check_host_can_give(config)?;
    let regions = ram
        .iter()
        .map(|&(start, size)| map_region(start, size, config))
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn ram_is_allocated_as_laid_out_and_usable() {
        let config = MemoryConfig {
            size: 64 << 20,
            hugepages: false,
            mergeable: true,
        };
        let mem = create_guest_memory(&config, &crate::layout::ram_regions(config.size)).unwrap();
        assert_eq!(mem.num_regions(), 1);
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert!(mem.write_obj(0u8, GuestAddress(64 << 20)).is_err());
    }

    #[test]
    fn more_than_the_host_has_is_refused_before_allocating() {
        let config = MemoryConfig {
            size: 1 << 50,
            hugepages: false,
            mergeable: false,
        };
        let err = check_host_can_give(&config).unwrap_err().to_string();
        assert!(err.contains("more than the host can give"), "{err}");
    }

    #[test]
    fn missing_hugepages_say_how_to_reserve_them() {
        let want = free_hugepages_2m() + 1;
        let config = MemoryConfig {
            size: want << 21,
            hugepages: true,
            mergeable: false,
        };
        let err = check_host_can_give(&config).unwrap_err().to_string();
        assert!(err.contains("nr_hugepages"), "{err}");
    }
}
