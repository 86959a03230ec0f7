//! A host PCI device to pass through: `--device BDF[,rombar=off][,id=ID]`,
//! where BDF is `0000:01:00.0`, `01:00.0` or `/sys/bus/pci/devices/0000:01:00.0`.
//! Only the syntax is checked here; whether the device can be assigned is
//! the VFIO preflight's business (it reads sysfs).

use std::path::Path;

use iommu::Bdf;

use super::{check_id, parse_on_off, ConfigError};

/// Where sysfs lists PCI devices; the JSON form names devices by this path.
pub const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// One passed-through device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Host address.
    pub bdf: Bdf,
    /// Show the device's expansion ROM to the guest (`rombar=off` hides it).
    pub rombar: bool,
    /// A name for the device, unique in the VM.
    pub id: Option<String>,
}

impl DeviceConfig {
    /// A device with default options.
    pub fn new(bdf: Bdf) -> Self {
        DeviceConfig {
            bdf,
            rombar: true,
            id: None,
        }
    }

    /// Parses `BDF[,rombar=on|off][,id=ID]`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut parts = text.split(',');
        let mut device = DeviceConfig::new(parse_bdf(parts.next().unwrap_or_default())?);
        let bad = |why: String| ConfigError::BadDevice {
            text: text.to_string(),
            why,
        };
        for opt in parts {
            match opt.trim().split_once('=') {
                Some(("rombar", v)) => {
                    device.rombar = parse_on_off(v)
                        .ok_or_else(|| bad(format!("rombar={v}: use rombar=on or rombar=off")))?;
                }
                Some(("id", id)) => {
                    check_id(id)?;
                    device.id = Some(id.to_string());
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option '{opt}' (known: rombar=on|off, id=ID)"
                    )))
                }
            }
        }
        Ok(device)
    }

    /// The device's sysfs path, as the JSON form names it.
    pub fn sysfs_path(&self) -> String {
        format!("{SYSFS_PCI_DEVICES}/{}", self.bdf)
    }
}

/// A BDF, or a sysfs device directory ending in one.
pub fn parse_bdf(text: &str) -> Result<Bdf, ConfigError> {
    let text = text.trim();
    let name = if text.starts_with('/') {
        Path::new(text.trim_end_matches('/'))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        text.to_string()
    };
    Ok(name.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_accept_bdfs_sysfs_paths_rombar_and_ids() {
        let s = DeviceConfig::parse("0000:01:00.0").unwrap();
        assert_eq!(s.bdf.to_string(), "0000:01:00.0");
        assert!(s.rombar);
        assert_eq!(s.id, None);
        let s =
            DeviceConfig::parse("/sys/bus/pci/devices/0000:02:00.1/,rombar=off,id=nic").unwrap();
        assert_eq!(s.bdf.to_string(), "0000:02:00.1");
        assert!(!s.rombar);
        assert_eq!(s.id.as_deref(), Some("nic"));
        assert_eq!(s.sysfs_path(), "/sys/bus/pci/devices/0000:02:00.1");
        assert_eq!(
            DeviceConfig::parse("3:00.0").unwrap().bdf.to_string(),
            "0000:03:00.0"
        );
    }

    #[test]
    fn bad_device_specs_say_what_is_wrong() {
        let err = DeviceConfig::parse("01:00.0,x=1").unwrap_err().to_string();
        assert!(err.contains("unknown option 'x=1'"), "{err}");
        let err = DeviceConfig::parse("01:00.0,rombar=maybe")
            .unwrap_err()
            .to_string();
        assert!(err.contains("use rombar=on or rombar=off"), "{err}");
        assert!(DeviceConfig::parse("/sys/bus/pci/devices/").is_err());
        let err = DeviceConfig::parse("zz:00").unwrap_err().to_string();
        assert!(
            err.starts_with("--device: malformed PCI address 'zz:00'"),
            "{err}"
        );
        assert!(DeviceConfig::parse("01:00.0,id=").is_err());
    }
}
