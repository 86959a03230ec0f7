//! What the API logs once per VM rather than per request: `max_vcpus`
//! above `boot_vcpus` (Kata's default) is noted at `vm.create` only; and
//! the answers the README lists for the fields Kata and libvirt send.

use super::*;

/// Collects log messages (the test binary has no other logger).
struct Capture;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

#[test]
fn max_vcpus_above_boot_vcpus_is_logged_once_per_vm() {
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let rig = Rig::new("max-vcpus", Limits::default());
    let config = rig
        .config("")
        .replace(r#""max_vcpus": 1"#, r#""max_vcpus": 13"#);
    assert_eq!(rig.put("vm.create", Some(&config)).status, 204);
    let disk = format!(
        r#"{{"path": "{}", "readonly": true}}"#,
        rig.kernel.display()
    );
    assert_eq!(rig.put("vm.add-disk", Some(&disk)).status, 204);
    assert_eq!(rig.put("vm.boot", None).status, 204);
    assert_eq!(rig.put("vm.reboot", None).status, 204);
    let info: Value = serde_json::from_str(&rig.get("vm.info").body.unwrap()).unwrap();
    assert_eq!(info["config"]["cpus"]["boot_vcpus"], 1);
    let notes: Vec<String> = LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("max_vcpus 13"))
        .cloned()
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("CPU hotplug is absent, booting 1"),
        "{notes:?}"
    );
}

/// The README's table of what Kata and libvirt send: a field and a value,
/// and whether `vm.create` takes it (the message names refused fields).
#[test]
fn orchestrator_fields_get_the_answers_the_readme_lists() {
    let rig = Rig::new("orchestrator-fields", Limits::default());
    let accepted = [
        r#""cpus": {"boot_vcpus": 1, "max_vcpus": 4, "kvm_hyperv": false}"#,
        r#""cpus": {"boot_vcpus": 1, "max_vcpus": 4, "topology": {"threads_per_core": 1, "cores_per_die": 4, "dies_per_package": 1, "packages": 1}}"#,
        r#""memory": {"size": 268435456, "hugepages": false, "mergeable": false, "thp": true, "prefault": false, "hotplug_method": "Acpi", "shared": false}"#,
        r#""memory": {"size": 268435456, "shared": false, "hotplug_size": 17179869184}"#,
        r#""serial": {"mode": "Off"}, "console": {"mode": "Off"}"#,
        r#""iommu": false, "watchdog": false, "pvpanic": false, "platform": {"num_pci_segments": 1}"#,
        r#""rng": {"src": "/dev/urandom"}"#,
    ];
    let refused = [
        (
            r#""cpus": {"boot_vcpus": 2, "topology": {"threads_per_core": 2, "cores_per_die": 1, "dies_per_package": 1, "packages": 1}}"#,
            "cpus.topology.threads_per_core",
        ),
        (
            r#""memory": {"size": 268435456, "shared": true}"#,
            "memory.shared",
        ),
        (r#""serial": {"mode": "Pty"}"#, "serial.mode"),
        (r#""console": {"mode": "Pty"}"#, "console"),
        (
            r#""pmem": [{"file": "/img", "discard_writes": true}]"#,
            "pmem",
        ),
        (
            r#""fs": [{"tag": "kataShared", "socket": "/run/fs.sock"}]"#,
            "fs",
        ),
        (r#""platform": {"tdx": true}"#, "platform"),
        (r#""sgx_epc": [{"id": "kata-epc", "size": 1}]"#, "sgx_epc"),
        (r#""kernel": {"path": "/vmlinux"}"#, "kernel"),
    ];
    // The rig's config with `extra`'s sections put in (replacing its own).
    let with = |extra: &str| {
        let mut config: Value = serde_json::from_str(&rig.config("")).unwrap();
        let extra: Value = serde_json::from_str(&format!("{{{extra}}}")).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config.to_string()
    };
    for extra in accepted {
        let config = with(extra);
        let resp = rig.put("vm.create", Some(&config));
        assert_eq!(resp.status, 204, "{extra}: {:?}", resp.body);
        assert_eq!(rig.put("vm.delete", None).status, 204);
    }
    for (extra, field) in refused {
        let config = with(extra);
        assert_error(rig.put("vm.create", Some(&config)), 400, field);
    }
}
