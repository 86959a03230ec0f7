//! The JSON form of the machine's size: cloud-hypervisor's `CpusConfig`
//! (`cpus`) and `MemoryConfig` (`memory`), including the two fields Kata
//! always sends for hotplug that vfio-vmm does not have: `cpus.topology`
//! (accepted when it describes plain cores) and `memory.hotplug_size`
//! (accepted; the guest keeps `memory.size`, and `vm.resize` is refused).

use serde::{Deserialize, Serialize};

use super::{check_rest, Ignorable, Rest};
use crate::config::{check_cpus, ConfigError, MemoryConfig};

/// Fields of `cpus` besides the ones [`CpusJson`] takes.
const CPUS_FIELDS: &[Ignorable] = &[
    ("kvm_hyperv", &["false"]),
    ("max_phys_bits", &[]),
    ("nested", &["true"]),
    ("affinity", &["[]"]),
    ("features", &["{}"]),
    ("core_scheduling", &[r#""Vm""#]),
];
/// Fields of `memory` besides the ones [`MemoryJson`] takes.
const MEMORY_FIELDS: &[Ignorable] = &[
    ("hotplugged_size", &["0"]),
    ("hotplug_method", &[r#""Acpi""#, r#""VirtioMem""#]),
    ("shared", &["false"]),
    ("hugepage_size", &["2097152"]),
    ("prefault", &["false"]),
    ("reserve", &["false"]),
    ("thp", &["true"]),
    ("zones", &["[]"]),
];

#[derive(Serialize, Deserialize)]
pub(super) struct CpusJson {
    pub boot_vcpus: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<TopologyJson>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// cloud-hypervisor's `CpuTopology`; absent members count as 1.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TopologyJson {
    #[serde(default)]
    threads_per_core: Option<u64>,
    #[serde(default)]
    cores_per_die: Option<u64>,
    #[serde(default)]
    dies_per_package: Option<u64>,
    #[serde(default)]
    packages: Option<u64>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct MemoryJson {
    /// Bytes.
    pub size: u64,
    #[serde(default)]
    pub hugepages: bool,
    #[serde(default)]
    pub mergeable: bool,
    /// Bytes set aside for memory hotplug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<u64>,
    #[serde(flatten)]
    pub rest: Rest,
}

pub(super) fn cpus(c: CpusJson) -> Result<u8, ConfigError> {
    check_rest("cpus", &c.rest, CPUS_FIELDS)?;
    if let Some(max) = c.max_vcpus.filter(|&m| m > c.boot_vcpus) {
        // Kata sends max_vcpus above boot_vcpus by default; nothing hotplugs
        // them here, so the guest simply keeps boot_vcpus.
        log::info!("config: cpus.max_vcpus {max} is above boot_vcpus {}: CPU hotplug is absent, booting {0}", c.boot_vcpus);
    }
    if let Some(max) = c.max_vcpus.filter(|&m| m < c.boot_vcpus) {
        return Err(ConfigError::CpuHotplug {
            boot: c.boot_vcpus,
            max,
        });
    }
    if let Some(t) = &c.topology {
        topology(t, c.max_vcpus.unwrap_or(c.boot_vcpus))?;
    }
    check_cpus(c.boot_vcpus)
}

/// A topology is accepted when it is plain cores (one thread each) and, as
/// cloud-hypervisor checks, accounts for exactly `max_vcpus`. vfio-vmm shows
/// the guest one thread per core whatever the split into dies and packages,
/// so that split is logged and otherwise ignored.
fn topology(t: &TopologyJson, max_vcpus: u64) -> Result<(), ConfigError> {
    let n = |v: Option<u64>| v.unwrap_or(1);
    let threads = n(t.threads_per_core);
    if threads != 1 {
        return Err(ConfigError::Unsupported(
            format!("cpus.topology.threads_per_core {threads}"),
            " (or set it to 1: vfio-vmm shows the guest one thread per core)".into(),
        ));
    }
    let (cores, dies, packages) = (n(t.cores_per_die), n(t.dies_per_package), n(t.packages));
    let total = cores.saturating_mul(dies).saturating_mul(packages);
    if total != max_vcpus {
        return Err(ConfigError::Json(format!(
            "cpus.topology has {cores} cores x {dies} dies x {packages} packages = {total} vCPUs, \
             but max_vcpus is {max_vcpus}: make them agree"
        )));
    }
    if dies != 1 || packages != 1 {
        log::info!("config: cpus.topology {dies} dies x {packages} packages: the guest sees its vCPUs as cores of one package");
    }
    Ok(())
}

pub(super) fn memory(m: MemoryJson) -> Result<MemoryConfig, ConfigError> {
    check_rest("memory", &m.rest, MEMORY_FIELDS)?;
    if let Some(hotplug) = m.hotplug_size.filter(|&h| h > 0) {
        // Kata sends its maximum memory here by default; nothing hotplugs
        // memory here, so the guest keeps memory.size and vm.resize is refused.
        log::info!("config: memory.hotplug_size {hotplug} set aside for hotplug: memory hotplug is absent, the guest has memory.size {} and vm.resize is refused", m.size);
    }
    Ok(MemoryConfig {
        size: m.size,
        hugepages: m.hugepages,
        mergeable: m.mergeable,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::fake_bzimage;
    use crate::config::{ConfigError, VmConfig};

    fn parse(extra: &str) -> Result<VmConfig, ConfigError> {
        let k = fake_bzimage("json-sizing");
        VmConfig::from_json(&format!(
            r#"{{"payload": {{"kernel": {:?}}}{extra}}}"#,
            k.display().to_string()
        ))
    }

    #[test]
    fn kata_topology_and_hotplug_size_are_accepted() {
        let kata = r#", "cpus": {"boot_vcpus": 1, "max_vcpus": 4,
            "topology": {"threads_per_core": 1, "cores_per_die": 4, "dies_per_package": 1, "packages": 1}},
            "memory": {"size": 268435456, "shared": false, "hugepages": false, "hotplug_size": 17179869184}"#;
        let c = parse(kata).expect("Kata's sizing is accepted");
        assert_eq!((c.cpus, c.memory.size), (1, 256 << 20));
        // The stored form keeps neither, so a re-read logs nothing again.
        assert!(!c.to_json().contains("hotplug_size") && !c.to_json().contains("topology"));
    }

    #[test]
    fn smt_and_mismatched_topologies_are_refused() {
        let smt = r#", "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "topology": {"threads_per_core": 2, "cores_per_die": 1}}"#;
        let e = parse(smt).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("threads_per_core 2 is not supported"), "{e}");
        let odd =
            r#", "cpus": {"boot_vcpus": 2, "max_vcpus": 4, "topology": {"cores_per_die": 3}}"#;
        let e = parse(odd).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("= 3 vCPUs, but max_vcpus is 4"), "{e}");
        let typo = r#", "cpus": {"boot_vcpus": 1, "topology": {"cores": 1}}"#;
        assert!(parse(typo).is_err());
    }
}
