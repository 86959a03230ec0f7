//! The boot CPU's starting state, for the 64-bit Linux entry point (GDT,
//! identity page tables, long mode) or the PVH entry (GDT, 32-bit protected
//! mode, paging off); control registers, general registers, FPU and LAPIC
//! LINT pins. Written by hand: no rust-vmm crate sets up x86 boot state.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{
    BOOT_STACK_ADDR, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemory;

/// Errors while setting up a vCPU's boot state.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// Writing the GDT or page tables into guest memory failed.
    #[error("cannot write boot structures into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// A KVM register ioctl failed.
    #[error("cannot set vCPU {what}: {err}")]
    Kvm {
        /// Which registers.
        what: &'static str,
        /// The ioctl's error.
        err: kvm_ioctls::Error,
    },
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Where the boot vCPU starts, and in which mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// The 64-bit Linux boot protocol: long mode with the first 1 GiB
    /// identity-mapped, at this address, RSI pointing at the zero page.
    Linux64(u64),
    /// The PVH boot protocol: 32-bit protected mode, paging off, flat
    /// segments, at `entry`, EBX pointing at the `hvm_start_info`.
    Pvh {
        /// The address in the kernel's PVH note.
        entry: u64,
        /// Where the `hvm_start_info` is.
        start_info: u64,
    },
}

/// GDT entries: null, unused, 64-bit code (`__BOOT_CS` 0x10), data
/// (`__BOOT_DS` 0x18), TSS (0x20), as the 64-bit boot protocol asks.
const GDT: [u64; 5] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // code, L=1
    gdt_entry(0xc093, 0, 0xfffff), // data
    gdt_entry(0x808b, 0, 0xfffff), // TSS
];

/// GDT entries for PVH: null, 32-bit flat code (0x08), 32-bit flat data
/// (0x10), a 32-bit busy TSS of limit 0x67 (0x18), as the PVH ABI asks.
const PVH_GDT: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff), // code, D=1, 4 GiB
    gdt_entry(0xc093, 0, 0xfffff), // data, B=1, 4 GiB
    gdt_entry(0x008b, 0, 0x67),    // TSS
];

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn segment(entry: u64, index: u16) -> kvm_segment {
    let flag = |shift: u64, width: u64| ((entry >> shift) & ((1 << width) - 1)) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: {
            let raw = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
            let raw = raw as u32;
            if flag(55, 1) == 1 {
                (raw << 12) | 0xfff
            } else {
                raw
            }
        },
        selector: index * 8,
        type_: flag(40, 4),
        present: flag(47, 1),
        dpl: flag(45, 2),
        db: flag(54, 1),
        s: flag(44, 1),
        l: flag(53, 1),
        g: flag(55, 1),
        avl: flag(52, 1),
        unusable: if flag(47, 1) == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// The GDT a boot `entry` starts with.
fn gdt_for(entry: BootEntry) -> &'static [u64] {
    match entry {
        BootEntry::Linux64(_) => &GDT,
        BootEntry::Pvh { .. } => &PVH_GDT,
    }
}

/// Writes the GDT for `entry`, an empty IDT and the identity map of the
/// first 1 GiB (which a PVH kernel, starting with paging off, ignores).
pub fn write_boot_tables(mem: &GuestMemory, entry: BootEntry) -> Result<(), CpuError> {
    for (i, e) in gdt_for(entry).iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    mem.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR))?;
    mem.write_obj(PD_ADDR | 0x3, GuestAddress(PDPT_ADDR))?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        mem.write_obj((i << 21) | 0x83, GuestAddress(PD_ADDR + i * 8))?;
    }
    Ok(())
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |err| CpuError::Kvm { what, err }
}

/// Puts the boot vCPU at `entry`: in 64-bit mode with RSI pointing at the
/// zero page, or (PVH) in 32-bit protected mode without paging, with EBX
/// pointing at the start info.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: BootEntry) -> Result<(), CpuError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("sregs"))?;
    let gdt = gdt_for(entry);
    // Code, data and TSS follow each other in both tables.
    let first = gdt.len() - 3;
    let at = |i: usize| segment(gdt[i], i as u16);
    let (code, data, tss) = (at(first), at(first + 1), at(first + 2));
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (8 * gdt.len() - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = tss;
    let regs = match entry {
        BootEntry::Linux64(rip) => {
            sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
            kvm_regs {
                rflags: 0x2,
                rip,
                rsp: BOOT_STACK_ADDR,
                rbp: BOOT_STACK_ADDR,
                rsi: ZERO_PAGE_ADDR,
                ..Default::default()
            }
        }
        BootEntry::Pvh { entry, start_info } => {
            // PE only (ET reads as 1 anyway), CR4 clear, no long mode; IF clear.
            (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) = (X86_CR0_PE | X86_CR0_ET, 0, 0, 0);
            kvm_regs {
                rflags: 0x2,
                rip: entry,
                rbx: start_info,
                ..Default::default()
            }
        }
    };
    vcpu.set_sregs(&sregs).map_err(kvm_err("sregs"))?;
    vcpu.set_regs(&regs).map_err(kvm_err("regs"))
}

/// Sets the FPU's power-on control words (every vCPU).
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("fpu"))
}

/// Wires LINT0 to ExtINT and LINT1 to NMI, as a PC's firmware does (every vCPU).
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), CpuError> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const DELIVERY_EXTINT: u32 = 0x7 << 8;
    const DELIVERY_NMI: u32 = 0x4 << 8;
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("lapic"))?;
    let mut set = |reg: usize, mode: u32| {
        let bytes: Vec<u8> = lapic.regs[reg..reg + 4].iter().map(|&b| b as u8).collect();
        let old = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let new = (old & !0x700) | mode;
        for (dst, src) in lapic.regs[reg..reg + 4].iter_mut().zip(new.to_le_bytes()) {
            *dst = src as _;
        }
    };
    set(LVT_LINT0, DELIVERY_EXTINT);
    set(LVT_LINT1, DELIVERY_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm_err("lapic"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit_present_and_spans_4g() {
        let cs = segment(GDT[2], 2);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(cs.selector, 0x10);
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(GDT[3], 3);
        assert_eq!((ds.l, ds.db, ds.type_, ds.selector), (0, 1, 0x3, 0x18));
    }

    #[test]
    fn pvh_segments_are_flat_32_bit_with_a_busy_tss() {
        let cs = segment(PVH_GDT[1], 1);
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.type_, cs.selector),
            (0, 1, 1, 0xb, 0x08)
        );
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        let ds = segment(PVH_GDT[2], 2);
        assert_eq!(
            (ds.db, ds.type_, ds.limit, ds.selector),
            (1, 0x3, 0xffff_ffff, 0x10)
        );
        let tr = segment(PVH_GDT[3], 3);
        assert_eq!((tr.type_, tr.s, tr.base, tr.limit), (0xb, 0, 0, 0x67));
    }

    #[test]
    fn gdt_entry_encodes_base_and_limit() {
        let e = gdt_entry(0x008b, 0x1234_5678, 0xabcde);
        let seg = segment(e, 3);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.type_, 0xb);
        let paged = segment(gdt_entry(0x808b, 0, 0xabcde), 4);
        assert_eq!(paged.limit, 0xabcd_efff);
    }
}
