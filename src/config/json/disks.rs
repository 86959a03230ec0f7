//! The JSON form of disks and the vsock device: cloud-hypervisor's
//! `DiskConfig` (`disks[]`) and `VsockConfig` (`vsock`), with the fields
//! vfio-vmm ignores when their value changes nothing. A disk's `image_type`
//! is honoured as `--disk format=` is: `Raw` and `Qcow2` are opened as that
//! format without probing, `Unknown` (or none) is probed, VHD and VHDX are
//! refused.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{check_rest, Ignorable, Rest};
use crate::config::disk::check_serial;
use crate::config::vsock::check_cid;
use crate::config::{check_id, ConfigError, DiskConfig, ImageFormat, VsockConfig};

/// Fields of `disks[]` besides the ones [`DiskJson`] takes.
const DISK_FIELDS: &[Ignorable] = &[
    ("iommu", &["false"]),
    ("num_queues", &["1"]),
    ("queue_size", &["128", "256"]),
    ("vhost_user", &["false"]),
    ("vhost_socket", &[]),
    ("rate_limiter_config", &[]),
    ("rate_limit_group", &[]),
    ("pci_segment", &["0"]),
    ("pci_device_id", &[]),
    ("queue_affinity", &["[]"]),
    ("backing_files", &["false"]),
    ("sparse", &["true"]),
    ("lock_granularity", &[r#""ByteRange""#, r#""Full""#]),
];

/// Fields of `vsock` besides the ones [`VsockJson`] takes.
const VSOCK_FIELDS: &[Ignorable] = &[
    ("iommu", &["false"]),
    ("pci_segment", &["0"]),
    ("pci_device_id", &[]),
];

/// cloud-hypervisor's image types; vfio-vmm opens `Raw` and `Qcow2` as
/// stated, probes `Unknown`, and refuses the VHD formats.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ImageType {
    FixedVhd,
    Qcow2,
    Raw,
    Vhdx,
    Unknown,
}

#[derive(Serialize, Deserialize)]
pub(super) struct DiskJson {
    path: PathBuf,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    direct: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_type: Option<ImageType>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Serialize, Deserialize)]
pub(super) struct VsockJson {
    cid: u64,
    socket: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(flatten)]
    rest: Rest,
}

pub(super) fn disk((i, d): (usize, DiskJson)) -> Result<DiskConfig, ConfigError> {
    check_rest(&format!("disks[{i}]"), &d.rest, DISK_FIELDS)?;
    let format = match d.image_type {
        Some(ImageType::Raw) => Some(ImageFormat::Raw),
        Some(ImageType::Qcow2) => Some(ImageFormat::Qcow2),
        Some(ImageType::Unknown) | None => None,
        Some(kind @ (ImageType::FixedVhd | ImageType::Vhdx)) => {
            return Err(ConfigError::Unsupported(
                format!("disks[{i}].image_type {kind:?}"),
                " (vfio-vmm reads raw and qcow2 images: convert it with `qemu-img convert -O raw`)"
                    .into(),
            ))
        }
    };
    if d.path.as_os_str().is_empty() {
        return Err(ConfigError::Json(format!("disks[{i}].path is empty")));
    }
    if let Some(id) = &d.id {
        check_id(id)?;
    }
    if let Some(serial) = &d.serial {
        check_serial(serial)?;
    }
    Ok(DiskConfig {
        path: d.path,
        readonly: d.readonly,
        direct: d.direct,
        id: d.id,
        serial: d.serial,
        format,
    })
}

pub(super) fn disk_json(d: &DiskConfig) -> DiskJson {
    DiskJson {
        path: d.path.clone(),
        readonly: d.readonly,
        direct: d.direct,
        id: d.id.clone(),
        serial: d.serial.clone(),
        image_type: d.format.map(|f| match f {
            ImageFormat::Raw => ImageType::Raw,
            ImageFormat::Qcow2 => ImageType::Qcow2,
        }),
        rest: Rest::new(),
    }
}

pub(super) fn vsock(v: VsockJson) -> Result<VsockConfig, ConfigError> {
    check_rest("vsock", &v.rest, VSOCK_FIELDS)?;
    if v.socket.as_os_str().is_empty() {
        return Err(ConfigError::Json("vsock.socket is empty".into()));
    }
    if let Some(id) = &v.id {
        check_id(id)?;
    }
    Ok(VsockConfig {
        cid: check_cid(v.cid)?,
        socket: v.socket,
        id: v.id,
    })
}

pub(super) fn vsock_json(v: &VsockConfig) -> VsockJson {
    VsockJson {
        cid: v.cid,
        socket: v.socket.clone(),
        id: v.id.clone(),
        rest: Rest::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::tests::{config, fake_bzimage};
    use crate::config::VmConfig;

    use super::*;

    /// A scratch file for `test` holding `len` zero bytes.
    fn image(test: &str, len: usize) -> PathBuf {
        let name = format!("vfio-vmm-json-disk-{}-{test}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        path
    }

    fn kernel_json(k: &Path, extra: &str) -> String {
        format!(
            r#"{{"payload": {{"kernel": {:?}}}{extra}}}"#,
            k.display().to_string()
        )
    }

    #[test]
    fn disks_and_vsock_round_trip() {
        let k = fake_bzimage("json-disks-round-trip");
        let (a, b, r) = (
            image("rt-a", 4096),
            image("rt-b", 4096),
            image("rt-r", 4096),
        );
        let mut c = config(k.clone());
        c.disks = vec![
            DiskConfig::new(&a),
            DiskConfig {
                readonly: true,
                direct: true,
                id: Some("data".into()),
                serial: Some("SN 1".into()),
                format: Some(ImageFormat::Qcow2),
                ..DiskConfig::new(&b)
            },
            DiskConfig {
                format: Some(ImageFormat::Raw),
                ..DiskConfig::new(&r)
            },
        ];
        c.vsock = Some(VsockConfig {
            cid: 42,
            socket: "/tmp/vfio-vmm-json-vsock.sock".into(),
            id: Some("vsock0".into()),
        });
        let text = c.to_json();
        assert!(text.contains(r#""readonly": true"#), "{text}");
        assert!(text.contains(r#""cid": 42"#), "{text}");
        assert!(text.contains(r#""image_type": "Qcow2""#), "{text}");
        assert!(text.contains(r#""image_type": "Raw""#), "{text}");
        assert_eq!(VmConfig::from_json(&text), Ok(c));
        for f in [k, a, b, r] {
            std::fs::remove_file(f).unwrap();
        }
    }

    #[test]
    fn cloud_hypervisors_defaults_for_disks_and_vsock_are_accepted() {
        let k = fake_bzimage("json-disks-defaults");
        let img = image("defaults", 4096);
        let extra = format!(
            r#", "disks": [{{"path": {:?}, "readonly": false, "direct": false, "iommu": false,
                "num_queues": 1, "queue_size": 128, "vhost_user": false, "vhost_socket": null,
                "id": "root", "pci_segment": 0, "backing_files": false, "sparse": true,
                "image_type": "Raw", "lock_granularity": "ByteRange", "queue_affinity": []}}],
              "vsock": {{"cid": 3, "socket": "/tmp/vfio-vmm-json-defaults.sock", "iommu": false,
                "pci_segment": 0, "id": "vsock0"}}"#,
            img.display().to_string()
        );
        let c = VmConfig::from_json(&kernel_json(&k, &extra)).unwrap();
        assert_eq!(
            c.disks,
            vec![DiskConfig {
                id: Some("root".into()),
                format: Some(ImageFormat::Raw),
                ..DiskConfig::new(&img)
            }]
        );
        assert_eq!(c.vsock.map(|v| v.cid), Some(3));
        std::fs::remove_file(k).unwrap();
        std::fs::remove_file(img).unwrap();
    }

    #[test]
    fn image_type_states_the_format_or_leaves_it_to_probing() {
        let k = fake_bzimage("json-disks-image-type");
        let img = image("image-type", 4096);
        let cases = [
            (r#", "image_type": "Raw""#, Some(ImageFormat::Raw)),
            (r#", "image_type": "Qcow2""#, Some(ImageFormat::Qcow2)),
            (r#", "image_type": "Unknown""#, None),
            ("", None),
        ];
        for (field, want) in cases {
            let extra = format!(
                r#", "disks": [{{"path": {:?}{field}}}]"#,
                img.display().to_string()
            );
            let c = VmConfig::from_json(&kernel_json(&k, &extra)).unwrap();
            assert_eq!(c.disks[0].format, want, "{field}");
        }
        for kind in ["FixedVhd", "Vhdx"] {
            let extra = format!(
                r#", "disks": [{{"path": {:?}, "image_type": "{kind}"}}]"#,
                img.display().to_string()
            );
            let err = VmConfig::from_json(&kernel_json(&k, &extra))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("disks[0].image_type {kind} is not supported")),
                "{err}"
            );
            assert!(err.contains("qemu-img convert -O raw"), "{err}");
        }
        std::fs::remove_file(k).unwrap();
        std::fs::remove_file(img).unwrap();
    }

    #[test]
    fn bad_disks_and_vsock_give_clear_errors() {
        let k = fake_bzimage("json-disks-errors");
        let img = image("errors", 4096);
        let i = img.display().to_string();
        let cases = [
            (format!(r#", "disks": [{{"path": {i:?}, "image_type": "Vhdx"}}]"#), "disks[0].image_type Vhdx is not supported yet"),
            (format!(r#", "disks": [{{"path": {i:?}, "queue_size": 64}}]"#), "disks[0].queue_size is not supported yet: remove it from the configuration (or set it to 128 or 256)"),
            (format!(r#", "disks": [{{"path": {i:?}, "serial": "012345678901234567890"}}]"#), "at most 20 printable ASCII"),
            (format!(r#", "disks": [{{"path": {i:?}}}, {{"path": {i:?}}}]"#), "is given twice"),
            (format!(r#", "disks": [{{"path": {i:?}, "id": "x"}}], "vsock": {{"cid": 3, "socket": "/tmp/s", "id": "x"}}"#), "device id \"x\": used twice"),
            (r#", "disks": [{"readonly": true}]"#.into(), "missing field `path`"),
            (r#", "disks": [{"path": ""}]"#.into(), "disks[0].path is empty"),
            (r#", "disks": [{"path": "/nonexistent.img"}]"#.into(), "disk image /nonexistent.img: no such file"),
            (r#", "vsock": {"cid": 3}"#.into(), "missing field `socket`"),
            (r#", "vsock": {"cid": -1, "socket": "/s"}"#.into(), "invalid value: integer `-1`"),
            (r#", "vsock": {"cid": 4294967295, "socket": "/s"}"#.into(), "vsock cid 4294967295"),
            (r#", "vsock": {"cid": 3, "socket": "/nonexistent/v.sock"}"#.into(), "create the directory"),
            (r#", "vsock": {"cid": 3, "socket": "/s", "iommu": true}"#.into(), "vsock.iommu is not supported yet"),
            (r#", "vsock": {"cid": 3, "socket": "/s", "port": 1}"#.into(), "unknown field vsock.port"),
        ];
        for (extra, want) in cases {
            let err = VmConfig::from_json(&kernel_json(&k, &extra))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{extra}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        std::fs::remove_file(k).unwrap();
        std::fs::remove_file(img).unwrap();
    }
}
