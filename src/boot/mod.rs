//! Booting an x86-64 Linux guest: the kernel and its zero page, the CPU
//! state each vCPU starts with, and the ACPI tables that describe the machine.

pub mod acpi;
pub mod cpu;
pub mod cpuid;
pub mod linux;
pub mod msr;
