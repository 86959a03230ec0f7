//! CPUID for each vCPU: what KVM supports, with the hypervisor bit and the
//! topology (APIC ids, core counts) set for N single-threaded cores.

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_EXT_ADDR: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const ECX_CMP_LEGACY: u32 = 1 << 1;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to number `cpus` cores.
fn id_bits(cpus: u8) -> u32 {
    u32::BITS - (u32::from(cpus.max(1)) - 1).leading_zeros()
}

/// Rewrites `cpuid` (KVM's supported set) for vCPU `id` of `cpus`.
pub fn configure(cpuid: &mut CpuId, id: u8, cpus: u8) {
    let (id32, n) = (u32::from(id), u32::from(cpus));
    let shift = id_bits(cpus);
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (id32 << 24) | (n << 16) | (8 << 8);
                e.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // Cores sharing the package; caches are per core.
                e.eax = (e.eax & 0x03ff_ffff) | ((n - 1) << 26);
                e.eax &= !(0xfff << 14);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = id32;
                (e.eax, e.ebx, e.ecx) = match e.index {
                    0 => (0, 1, (LEVEL_SMT << 8) | e.index),
                    1 => (shift, n, (LEVEL_CORE << 8) | e.index),
                    _ => (0, 0, e.index),
                };
            }
            LEAF_EXT_FEATURES if cpus > 1 => e.ecx |= ECX_CMP_LEGACY,
            LEAF_EXT_ADDR => e.ecx = (e.ecx & !0xf0ff) | (shift << 12) | (n - 1),
            LEAF_AMD_TOPOLOGY => {
                e.eax = id32;
                e.ebx = id32 & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn topology_names_each_vcpu_and_counts_cores() {
        let entries = [
            entry(1, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0x8000_0008, 0),
        ];
        let mut c = CpuId::from_entries(&entries).unwrap();
        configure(&mut c, 3, 4);
        let leaf1 = find(&c, 1, 0);
        assert_eq!(leaf1.ebx >> 24, 3);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_ne!(leaf1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.edx & EDX_HTT, 0);
        let core = find(&c, 0xb, 1);
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8, core.edx),
            (2, 4, LEVEL_CORE, 3)
        );
        assert_eq!(find(&c, 0x8000_0008, 0).ecx & 0xff, 3);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 254].map(id_bits), [0, 1, 2, 2, 3, 8]);
    }
}
