//! Guest RAM: allocating it (anonymous at 2 MiB aligned addresses, or huge
//! pages), marking it for THP and KSM, checking first that the host can give
//! it, and unmapping what this module mapped itself.

use std::ffi::CString;
use std::fs::File;
use std::ops::Deref;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::config::MemoryConfig;

/// The guest memory type used throughout the VMM.
pub type GuestMemory = GuestMemoryMmap<()>;

/// The 2 MiB huge page size anonymous RAM is aligned to.
const HUGE_PAGE: usize = 2 << 20;

/// Guest RAM, and the host mappings this module made for it. vm-memory unmaps
/// only mappings it made itself; the aligned anonymous ones are made here, so
/// they are unmapped here, once nothing else holds their region.
pub struct GuestRam {
    mem: GuestMemory,
    own: Vec<Arc<GuestRegionMmap<()>>>,
}

impl Deref for GuestRam {
    type Target = GuestMemory;

    fn deref(&self) -> &GuestMemory {
        &self.mem
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.mem));
        for region in self.own.drain(..) {
            // A clone of the memory still alive elsewhere keeps its regions
            // mapped until the process exits; only the last holder unmaps.
            if let Some(region) = Arc::into_inner(region) {
                // SAFETY: this was the last reference to the region, so nothing
                // can reach its range any more, and the range is exactly the
                // mapping map_anonymous_aligned made for it.
                unsafe { libc::munmap(region.as_ptr().cast(), region.size()) };
            }
        }
    }
}

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
            return Err(MemoryError::TooLarge { want: config.size >> 20, avail: avail >> 10 });
        }
    }
    Ok(())
}

fn hugepage_file(size: u64) -> Result<File, MemoryError> {
    let name = CString::new("vfio-vmm-ram").expect("static name has no NUL");
    // SAFETY: `name` is a valid NUL-terminated string; the flags are plain constants.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_HUGETLB) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Memfd)?;
    Ok(file)
}

/// Maps `size` bytes of private anonymous memory at a 2 MiB aligned address.
///
/// Written by hand because vm-memory maps where the kernel chooses, and Linux
/// before 6.7 does not align large anonymous mappings. KVM maps guest RAM with
/// 2 MiB nested page table entries only where host and guest addresses agree
/// modulo 2 MiB; otherwise transparent huge pages buy the guest nothing and it
/// takes a nested page fault per 4 KiB as it first touches memory (QEMU aligns
/// its RAM for the same reason).
fn map_anonymous_aligned(size: usize, prot: libc::c_int, flags: libc::c_int) -> std::io::Result<*mut u8> {
    let span = size + HUGE_PAGE;
    let reserve = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a new inaccessible reservation where the kernel chooses; nothing refers to it.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), span, libc::PROT_NONE, reserve, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let base = base as usize;
    let start = (base + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    // SAFETY: MAP_FIXED replaces [start, start + size), which lies inside the
    // reservation just made and owned by nothing else.
    let addr = unsafe { libc::mmap(start as *mut libc::c_void, size, prot, flags | libc::MAP_FIXED, -1, 0) };
    let result = if addr == libc::MAP_FAILED { Err(std::io::Error::last_os_error()) } else { Ok(start as *mut u8) };
    // Give back the unaligned head and the tail of the reservation (all of it on failure).
    let keep = if result.is_ok() { start..start + size } else { start..start };
    for (from, to) in [(base, keep.start), (keep.end, base + span)] {
        if to > from {
            // SAFETY: the range is part of the reservation made above and is not in use.
            unsafe { libc::munmap(from as *mut libc::c_void, to - from) };
        }
    }
    result
}

fn map_region(start: u64, size: u64, config: &MemoryConfig) -> Result<(GuestRegionMmap, bool), MemoryError> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let mmap_err = |err| MemoryError::Mmap { size: size >> 20, err };
    let (region, own) = if config.hugepages {
        // No MAP_NORESERVE: the kernel reserves every huge page now, so a
        // short pool fails here instead of killing the guest by SIGBUS later.
        let file = FileOffset::new(hugepage_file(size)?, 0);
        (MmapRegion::build(Some(file), size as usize, prot, libc::MAP_SHARED).map_err(mmap_err)?, false)
    } else {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let addr = map_anonymous_aligned(size as usize, prot, flags).map_err(|e| mmap_err(MmapRegionError::Mmap(e)))?;
        // SAFETY: [addr, addr + size) is the mapping just made; GuestRam
        // unmaps it only when no region refers to it any more.
        let builder = unsafe { MmapRegionBuilder::new(size as usize).with_raw_mmap_pointer(addr) };
        (builder.with_mmap_prot(prot).with_mmap_flags(flags).build().map_err(mmap_err)?, true)
    };
    if !config.hugepages {
        // Transparent huge pages where the host allows them: KVM then maps guest
        // RAM with 2 MiB nested page table entries, so the guest takes far fewer
        // nested page faults as it first touches memory (QEMU advises the same).
        // A kernel without THP refuses; guest RAM then uses small pages.
        if let Err(e) = advise(&region, size, libc::MADV_HUGEPAGE) {
            log::debug!("transparent huge pages unavailable: {e}");
        }
    }
    if config.mergeable {
        if let Err(e) = advise(&region, size, libc::MADV_MERGEABLE) {
            log::warn!("KSM merging unavailable: {e}");
        }
    }
    let region = GuestRegionMmap::new(region, GuestAddress(start))
        .ok_or(MemoryError::Layout(vm_memory::GuestRegionCollectionError::NoMemoryRegion))?;
    Ok((region, own))
}

/// madvise on the whole of `region`.
fn advise(region: &MmapRegion, size: u64, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the range is exactly the mapping MmapRegion created and owns;
    // advice changes how the kernel backs it, never its contents.
    let ret = unsafe { libc::madvise(region.as_ptr().cast(), size as usize, advice) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Allocates guest RAM in the `ram` regions (start, size) of the layout.
pub fn create_guest_memory(config: &MemoryConfig, ram: &[(u64, u64)]) -> Result<GuestRam, MemoryError> {
    check_host_can_give(config)?;
    let mut ram_regions = GuestRam { mem: GuestMemory::default(), own: Vec::new() };
    let mut regions = Vec::new();
    for &(start, size) in ram {
        // Each region joins GuestRam as soon as it exists, so an error later unmaps it.
        let (region, own) = map_region(start, size, config)?;
        let region = Arc::new(region);
        if own {
            ram_regions.own.push(region.clone());
        }
        regions.push(region);
    }
    ram_regions.mem = GuestMemoryMmap::from_arc_regions(regions).map_err(MemoryError::Layout)?;
    Ok(ram_regions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn ram_is_allocated_as_laid_out_and_usable() {
        let config = MemoryConfig { size: 64 << 20, hugepages: false, mergeable: true };
        let mem = create_guest_memory(&config, &crate::layout::ram_regions(config.size)).unwrap();
        assert_eq!(mem.num_regions(), 1);
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert!(mem.write_obj(0u8, GuestAddress(64 << 20)).is_err());
    }

    /// Whether /proc/self/maps has a mapping that starts at `addr`.
    fn mapped_at(addr: usize) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|l| l.split('-').next() == Some(&format!("{addr:x}")))
    }

    #[test]
    fn anonymous_ram_sits_on_2m_boundaries_and_is_unmapped_after_its_last_user() {
        let config = MemoryConfig { size: 6 << 20, hugepages: false, mergeable: false };
        let ram = create_guest_memory(&config, &[(0, 2 << 20), (4 << 20, 4 << 20)]).unwrap();
        let hosts: Vec<usize> = ram.iter().map(|r| r.as_ptr() as usize).collect();
        assert!(hosts.iter().all(|h| h % HUGE_PAGE == 0), "{hosts:x?}");
        assert!(hosts.iter().all(|&h| mapped_at(h)));
        // A clone that outlives GuestRam keeps the RAM mapped and usable.
        let clone: GuestMemory = (*ram).clone();
        drop(ram);
        clone.write_obj(7u8, GuestAddress(0x1000)).unwrap();
        assert!(hosts.iter().all(|&h| mapped_at(h)));
        let ram = create_guest_memory(&config, &[(0, 2 << 20)]).unwrap();
        let host = ram.iter().next().unwrap().as_ptr() as usize;
        drop(ram);
        assert!(!mapped_at(host), "{host:x} still mapped");
    }

    #[test]
    fn more_than_the_host_has_is_refused_before_allocating() {
        let config = MemoryConfig { size: 1 << 50, hugepages: false, mergeable: false };
        let err = check_host_can_give(&config).unwrap_err().to_string();
        assert!(err.contains("more than the host can give"), "{err}");
    }

    #[test]
    fn missing_hugepages_say_how_to_reserve_them() {
        let want = free_hugepages_2m() + 1;
        let config = MemoryConfig { size: want << 21, hugepages: true, mergeable: false };
        let err = check_host_can_give(&config).unwrap_err().to_string();
        assert!(err.contains("nr_hugepages"), "{err}");
    }
}
