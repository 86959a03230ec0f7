//! The JSON form of a [`VmConfig`]: cloud-hypervisor's `VmConfig` (field
//! names and units of its OpenAPI schema), because that is what orchestrators
//! such as Kata send. `vfio-vmm run --config FILE` reads it; the control API
//! will too.
//!
//! ```json
//! {
//!   "payload": {"kernel": "/boot/bzImage", "cmdline": "console=ttyS0", "initramfs": "/boot/initrd"},
//!   "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
//!   "memory": {"size": 536870912, "hugepages": false, "mergeable": false},
//!   "serial": {"mode": "Tty"},
//!   "devices": [{"path": "/sys/bus/pci/devices/0000:01:00.0", "id": "nic0"}],
//!   "net": [{"tap": "tap0", "mac": "02:00:00:00:00:01", "id": "net0"}],
//!   "disks": [{"path": "/img/root.raw", "readonly": false, "direct": false, "id": "root", "serial": "root"}],
//!   "vsock": {"cid": 3, "socket": "/run/vm.vsock", "id": "vsock0"},
//!   "rng": {"src": "/dev/urandom"},
//!   "pit": {"reinject": false}
//! }
//! ```
//!
//! Defaults follow cloud-hypervisor: 1 vCPU, 512 MiB, an empty command line,
//! serial `Null` (port present, output discarded). Serial modes: `Tty` (stdio),
//! `File` (with `file`), `Null`, `Off` (no port). `payload.kernel` is a
//! bzImage or a PVH vmlinux. `disks[].image_type` `Raw` or `Qcow2` opens the
//! image as that format without probing it (`--disk format=`); `Unknown` or
//! no `image_type` probes the image's first bytes. `rng` adds a
//! virtio-rng (`src` defaults to `/dev/urandom`); unlike cloud-hypervisor,
//! which always has one, without `rng` (or with `"rng": null`) the guest has
//! none.
//!
//! vfio-vmm extensions: `devices[].rombar: false` (hide the ROM) and
//! `pit: {"reinject": bool}` (KVM's PIT tick reinjection, default true, as
//! `--pit reinject=on|off`).
//!
//! Fields cloud-hypervisor defines and vfio-vmm does not implement are
//! accepted and ignored only with a value that changes nothing (null, their
//! default, an empty list, `console: {"mode": "Off"}`); any other value is
//! refused as "not supported yet", since it would change the guest (balloon,
//! fs, pmem, ...). Fields cloud-hypervisor does not define are refused.

mod disks;
mod sizing;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::device::parse_bdf;
use super::{check_id, ConfigError, DeviceConfig, MemoryConfig, NetConfig};
use super::{PayloadConfig, PitConfig, RngConfig, SerialConfig, VmConfig};
use disks::{disk, disk_json, vsock, vsock_json, DiskJson, VsockJson};
use sizing::{cpus, memory, CpusJson, MemoryJson};

/// Fields of an object that no struct below takes.
type Rest = BTreeMap<String, Value>;

/// A cloud-hypervisor field vfio-vmm does not implement, with the values (as
/// JSON) that change nothing here. Null is always accepted.
type Ignorable = (&'static str, &'static [&'static str]);

const VM_FIELDS: &[Ignorable] = &[
    ("rate_limit_groups", &["[]"]),
    ("balloon", &[]),
    ("fs", &["[]"]),
    ("generic_vhost_user", &["[]"]),
    ("pmem", &["[]"]),
    ("console", &[r#"{"mode":"Off"}"#]),
    ("debug_console", &[r#"{"mode":"Off"}"#]),
    ("user_devices", &["[]"]),
    ("vdpa", &["[]"]),
    ("numa", &["[]"]),
    ("iommu", &["false"]),
    ("watchdog", &["false"]),
    ("rtc", &[]),
    ("pvpanic", &["false"]),
    ("pci_segments", &["[]"]),
    ("platform", &["{}", r#"{"num_pci_segments":1}"#]),
    ("tpm", &[]),
    ("landlock_enable", &["false"]),
    ("landlock_rules", &["[]"]),
];
const PAYLOAD_FIELDS: &[Ignorable] = &[("firmware", &[]), ("igvm", &[]), ("host_data", &[])];
const SERIAL_FIELDS: &[Ignorable] = &[("socket", &[])];
const DEVICE_FIELDS: &[Ignorable] = &[
    ("iommu", &["false"]),
    ("pci_segment", &["0"]),
    ("pci_device_id", &[]),
    ("x_nv_gpudirect_clique", &[]),
    ("x_exclude_mmap_bars", &["[]"]),
];
const RNG_FIELDS: &[Ignorable] = &[("iommu", &["false"])];
const NET_FIELDS: &[Ignorable] = &[
    ("ip", &[]),
    ("mask", &[]),
    ("host_mac", &[]),
    ("mtu", &[]),
    ("iommu", &["false"]),
    ("num_queues", &["2"]),
    ("queue_size", &["256"]),
    ("vhost_user", &["false"]),
    ("vhost_socket", &[]),
    ("vhost_mode", &[r#""Client""#]),
    ("pci_segment", &["0"]),
    ("pci_device_id", &[]),
    ("rate_limiter_config", &[]),
    ("offload_tso", &["true"]),
    ("offload_ufo", &["true"]),
    ("offload_csum", &["true"]),
];

#[derive(Serialize, Deserialize)]
struct VmJson {
    payload: PayloadJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpus: Option<CpusJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial: Option<SerialJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    devices: Vec<DeviceJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    net: Vec<NetJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    disks: Vec<DiskJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vsock: Option<VsockJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rng: Option<RngJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pit: Option<PitJson>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Serialize, Deserialize)]
struct PayloadJson {
    kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initramfs: Option<PathBuf>,
    #[serde(flatten)]
    rest: Rest,
}

/// cloud-hypervisor's console modes.
#[derive(Serialize, Deserialize, Debug)]
enum SerialMode {
    Off,
    Pty,
    Tty,
    File,
    Socket,
    Null,
}

#[derive(Serialize, Deserialize)]
struct SerialJson {
    mode: SerialMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Serialize, Deserialize)]
struct DeviceJson {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    rombar: bool,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Serialize, Deserialize)]
struct NetJson {
    tap: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Serialize, Deserialize)]
struct RngJson {
    #[serde(default = "default_rng_src")]
    src: PathBuf,
    #[serde(flatten)]
    rest: Rest,
}

/// vfio-vmm's own: cloud-hypervisor has no PIT setting.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PitJson {
    #[serde(default = "yes")]
    reinject: bool,
}

fn default_rng_src() -> PathBuf {
    RngConfig::default().src
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl VmConfig {
    /// Reads and validates the JSON form. Errors are one line: control
    /// characters the text brought into a message (a key, a path) are escaped.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Self::parse_json(text).map_err(ConfigError::one_line)
    }

    fn parse_json(text: &str) -> Result<Self, ConfigError> {
        let vm: VmJson =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        check_rest("", &vm.rest, VM_FIELDS)?;
        check_rest("payload", &vm.payload.rest, PAYLOAD_FIELDS)?;
        let config = VmConfig {
            payload: PayloadConfig {
                kernel: vm.payload.kernel,
                initramfs: vm.payload.initramfs,
                cmdline: vm.payload.cmdline.unwrap_or_default(),
            },
            cpus: vm.cpus.map_or(Ok(1), cpus)?,
            memory: vm.memory.map_or(Ok(MemoryConfig::default()), memory)?,
            serial: vm.serial.map_or(Ok(SerialConfig::Null), serial)?,
            devices: vm
                .devices
                .into_iter()
                .enumerate()
                .map(device)
                .collect::<Result<_, _>>()?,
            net: vm
                .net
                .into_iter()
                .enumerate()
                .map(net)
                .collect::<Result<_, _>>()?,
            disks: vm
                .disks
                .into_iter()
                .enumerate()
                .map(disk)
                .collect::<Result<_, _>>()?,
            vsock: vm.vsock.map(vsock).transpose()?,
            rng: vm.rng.map(rng).transpose()?,
            pit: PitConfig {
                reinject: vm.pit.is_none_or(|p| p.reinject),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// The JSON form; [`VmConfig::from_json`] reads it back to an equal config.
    pub fn to_json(&self) -> String {
        let vm = VmJson {
            payload: PayloadJson {
                kernel: self.payload.kernel.clone(),
                cmdline: Some(self.payload.cmdline.clone()),
                initramfs: self.payload.initramfs.clone(),
                rest: Rest::new(),
            },
            cpus: Some(CpusJson {
                boot_vcpus: u64::from(self.cpus),
                max_vcpus: Some(u64::from(self.cpus)),
                topology: None,
                rest: Rest::new(),
            }),
            memory: Some(MemoryJson {
                size: self.memory.size,
                hugepages: self.memory.hugepages,
                mergeable: self.memory.mergeable,
                hotplug_size: None,
                rest: Rest::new(),
            }),
            serial: Some(serial_json(&self.serial)),
            devices: self.devices.iter().map(device_json).collect(),
            net: self.net.iter().map(net_json).collect(),
            disks: self.disks.iter().map(disk_json).collect(),
            vsock: self.vsock.as_ref().map(vsock_json),
            rng: self.rng.as_ref().map(|r| RngJson {
                src: r.src.clone(),
                rest: Rest::new(),
            }),
            pit: (self.pit != PitConfig::default()).then_some(PitJson {
                reinject: self.pit.reinject,
            }),
            rest: Rest::new(),
        };
        // Plain structs, maps with string keys and strings: this cannot fail.
        serde_json::to_string_pretty(&vm).unwrap_or_default()
    }
}

fn serial(s: SerialJson) -> Result<SerialConfig, ConfigError> {
    check_rest("serial", &s.rest, SERIAL_FIELDS)?;
    match (s.mode, s.file) {
        (SerialMode::Tty, _) => Ok(SerialConfig::Stdio),
        (SerialMode::File, Some(file)) => Ok(SerialConfig::File(file)),
        (SerialMode::File, None) => Err(ConfigError::Json(
            "serial.mode \"File\" needs serial.file, the output file".into(),
        )),
        (SerialMode::Null, _) => Ok(SerialConfig::Null),
        (SerialMode::Off, _) => Ok(SerialConfig::Off),
        (mode, _) => Err(ConfigError::Unsupported(
            format!("serial.mode {mode:?}"),
            " (or use Tty, File, Null or Off)".into(),
        )),
    }
}

fn serial_json(s: &SerialConfig) -> SerialJson {
    let (mode, file) = match s {
        SerialConfig::Stdio => (SerialMode::Tty, None),
        SerialConfig::File(path) => (SerialMode::File, Some(path.clone())),
        SerialConfig::Null => (SerialMode::Null, None),
        SerialConfig::Off => (SerialMode::Off, None),
    };
    SerialJson {
        mode,
        file,
        rest: Rest::new(),
    }
}

fn device((i, d): (usize, DeviceJson)) -> Result<DeviceConfig, ConfigError> {
    check_rest(&format!("devices[{i}]"), &d.rest, DEVICE_FIELDS)?;
    if let Some(id) = &d.id {
        check_id(id)?;
    }
    let bdf = parse_bdf(&d.path).map_err(|e| match e {
        ConfigError::Bdf(e) => ConfigError::Json(format!("devices[{i}].path: {e}")),
        other => other,
    })?;
    Ok(DeviceConfig {
        bdf,
        rombar: d.rombar,
        id: d.id,
    })
}

fn device_json(d: &DeviceConfig) -> DeviceJson {
    DeviceJson {
        path: d.sysfs_path(),
        id: d.id.clone(),
        rombar: d.rombar,
        rest: Rest::new(),
    }
}

fn net((i, n): (usize, NetJson)) -> Result<NetConfig, ConfigError> {
    check_rest(&format!("net[{i}]"), &n.rest, NET_FIELDS)?;
    if let Some(id) = &n.id {
        check_id(id)?;
    }
    Ok(NetConfig {
        mac: n.mac.as_deref().map(str::parse).transpose()?,
        id: n.id,
        ..NetConfig::new(&n.tap)?
    })
}

fn rng(r: RngJson) -> Result<RngConfig, ConfigError> {
    check_rest("rng", &r.rest, RNG_FIELDS)?;
    Ok(RngConfig { src: r.src })
}

fn net_json(n: &NetConfig) -> NetJson {
    NetJson {
        tap: n.tap.clone(),
        mac: n.mac.map(|m| m.to_string()),
        id: n.id.clone(),
        rest: Rest::new(),
    }
}

/// Accepts (and logs) the fields of `rest` that `known` lists with a value
/// that changes nothing; refuses the others.
fn check_rest(section: &str, rest: &Rest, known: &[Ignorable]) -> Result<(), ConfigError> {
    for (key, value) in rest {
        let path = match section {
            "" => key.clone(),
            _ => format!("{section}.{key}"),
        };
        let Some((_, neutral)) = known.iter().find(|(k, _)| k == key) else {
            return Err(ConfigError::UnknownField(path));
        };
        if value.is_null() || neutral.iter().any(|n| changes_nothing(value, n)) {
            log::info!("config: ignoring {path} = {value}: it changes nothing here");
            continue;
        }
        let hint = match neutral.is_empty() {
            true => String::new(),
            false => format!(" (or set it to {})", neutral.join(" or ")),
        };
        return Err(ConfigError::Unsupported(path, hint));
    }
    Ok(())
}

/// Whether `value` is `neutral` once members that are null, false or empty are dropped.
fn changes_nothing(value: &Value, neutral: &str) -> bool {
    serde_json::from_str::<Value>(neutral).is_ok_and(|n| strip(value) == strip(&n))
}

fn strip(value: &Value) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let empty = |v: &Value| match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    Value::Object(
        map.iter()
            .filter(|(_, v)| !empty(v))
            .map(|(k, v)| (k.clone(), strip(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{config, fake_bzimage};
    use super::*;

    fn kernel_json(k: &std::path::Path, extra: &str) -> String {
        format!(
            r#"{{"payload": {{"kernel": {:?}}}{extra}}}"#,
            k.display().to_string()
        )
    }

    #[test]
    fn the_json_form_round_trips() {
        let k = fake_bzimage("json-round-trip");
        let mut c = config(k.clone());
        c.serial = SerialConfig::File("/tmp/serial.log".into());
        c.devices[0].rombar = false;
        c.net[0].mac = Some("02:00:00:00:00:09".parse().unwrap());
        c.pit.reinject = false;
        let text = c.to_json();
        assert!(text.contains(r#""src": "/dev/urandom""#), "{text}");
        assert!(text.contains(r#""reinject": false"#), "{text}");
        assert!(text.contains(r#""boot_vcpus": 2"#), "{text}");
        assert!(text.contains(r#""path": "/sys/bus/pci/devices/0000:01:00.0""#));
        assert!(text.contains(r#""size": 268435456"#), "bytes: {text}");
        assert_eq!(VmConfig::from_json(&text), Ok(c.clone()));
        for serial in [SerialConfig::Stdio, SerialConfig::Null, SerialConfig::Off] {
            c.serial = serial;
            assert_eq!(VmConfig::from_json(&c.to_json()), Ok(c.clone()));
        }
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn missing_sections_take_cloud_hypervisors_defaults() {
        let k = fake_bzimage("json-defaults");
        let c = VmConfig::from_json(&kernel_json(&k, "")).unwrap();
        assert_eq!(c.cpus, 1);
        assert_eq!(c.memory, MemoryConfig::default());
        assert_eq!(c.serial, SerialConfig::Null);
        assert_eq!(c.payload.cmdline, "");
        assert!(c.devices.is_empty() && c.net.is_empty());
        assert_eq!((c.rng, c.pit), (None, PitConfig::default()));
        let c = VmConfig::from_json(&kernel_json(&k, r#", "rng": {"iommu": false}"#)).unwrap();
        assert_eq!(c.rng, Some(RngConfig::default()), "what Kata sends");
        let c = VmConfig::from_json(&kernel_json(&k, r#", "pit": {}"#)).unwrap();
        assert!(c.pit.reinject);
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn fields_that_change_nothing_are_ignored() {
        let k = fake_bzimage("json-ignored");
        let extra = r#", "console": {"mode": "Off", "iommu": false}, "disks": [], "iommu": false,
            "memory": {"size": 1073741824, "thp": true, "shared": false},
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "nested": true},
            "platform": {"num_pci_segments": 1}"#;
        let c = VmConfig::from_json(&kernel_json(&k, extra)).unwrap();
        assert_eq!((c.cpus, c.memory.size), (2, 1 << 30));
        let kata = r#", "cpus": {"boot_vcpus": 1, "max_vcpus": 8}"#;
        assert_eq!(VmConfig::from_json(&kernel_json(&k, kata)).unwrap().cpus, 1);
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn bad_json_fields_give_clear_errors() {
        let k = fake_bzimage("json-errors");
        let cases = [
            (r#", "disks": [{"path": "/d.img", "vhost_user": true}]"#, "disks[0].vhost_user is not supported yet: remove it"),
            (r#", "vsock": {"cid": 2, "socket": "/s"}"#, "vsock cid 2: use 3 to 4294967294"),
            (r#", "console": {"mode": "Tty"}"#, "console is not supported yet"),
            (r#", "memory": {"size": 1073741824, "shared": true}"#, "memory.shared is not supported yet: remove it from the configuration (or set it to false)"),
            (r#", "cpus": {"boot_vcpus": 4, "max_vcpus": 1}"#, "CPU hotplug is not supported yet"),
            (r#", "cpus": {"boot_vcpus": 0}"#, "use 1 to 254"),
            (r#", "memory": {"size": 1024}"#, "at least 64 MiB"),
            (r#", "serial": {"mode": "Pty"}"#, "serial.mode Pty is not supported yet"),
            (r#", "serial": {"mode": "File"}"#, "needs serial.file"),
            (r#", "serial": {"mode": "Loud"}"#, "unknown variant `Loud`"),
            (r#", "net": [{"tap": "t0", "mac": "zz"}]"#, "invalid MAC address"),
            (r#", "net": [{"tap": "t0", "speed": 10}]"#, "unknown field net[0].speed"),
            (r#", "devices": [{"path": "/sys/bus/pci/devices/zz"}]"#, "JSON configuration: devices[0].path: malformed PCI address 'zz'"),
            (r#", "devices": [{"path": "/sys/bus/pci/devices/0000:01:00.0", "pci_device_id": 3}]"#, "devices[0].pci_device_id is not supported yet"),
            (r#", "memory": {"size": "1G"}"#, "invalid type: string \"1G\", expected u64"),
            (r#", "colour": "blue""#, "unknown field colour"),
            (r#", "rng": {"src": "/nonexistent/rng"}"#, "entropy source /nonexistent/rng"),
            (r#", "rng": {"src": "/dev/urandom", "iommu": true}"#, "rng.iommu is not supported yet"),
            (r#", "pit": {"reinject": "no"}"#, "expected a boolean"),
            (r#", "pit": {"speaker": true}"#, "unknown field `speaker`"),
        ];
        for (extra, want) in cases {
            let err = VmConfig::from_json(&kernel_json(&k, extra))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{extra}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let err = VmConfig::from_json(r#"{"cpus": {"boot_vcpus": 1}}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `payload`"), "{err}");
        let err = VmConfig::from_json("{").unwrap_err().to_string();
        assert!(err.starts_with("JSON configuration: EOF"), "{err}");
        std::fs::remove_file(k).unwrap();
    }
}
