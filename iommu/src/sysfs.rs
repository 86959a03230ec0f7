//! Read-only access to the kernel's sysfs/procfs view of PCI devices, through one root
//! directory so tests (and `--sysfs-root`) can point every read at a fake tree.
//!
//! Layout relied on (all relative to the root, which is `/` on a real host):
//! `sys/bus/pci/devices/BDF/` with `vendor`, `device`, `subsystem_vendor`,
//! `subsystem_device`, `class` (hex), `driver` (symlink to `.../bus/pci/drivers/NAME`),
//! `iommu_group` (symlink to `.../kernel/iommu_groups/N`), `driver_override`,
//! `resource` (one `0xstart 0xend 0xflags` line per resource), `reset_method`
//! (kernel >= 5.15) or `reset`, and `config` (PCI config space).
//! Writes never go through this module: see [`crate::setup::kernel::Kernel`] (the admin tooling).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::bdf::Bdf;

/// Why a sysfs read failed.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// A file or directory that should be readable could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// The PCI device does not exist in sysfs.
    #[error("no PCI device {bdf} on this host ({path} does not exist); `vfio-vmm host list` shows the devices present")]
    NoDevice {
        /// The address asked for.
        bdf: Bdf,
        /// The sysfs directory that was looked for.
        path: PathBuf,
    },
    /// A sysfs attribute holds something other than what the kernel writes there.
    #[error("unexpected contents {value:?} in {path}: expected {expected}")]
    BadValue {
        /// The file read.
        path: PathBuf,
        /// What it held.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// IORESOURCE_IO: the resource is an I/O port range.
const IORESOURCE_IO: u64 = 0x100;
/// IORESOURCE_PREFETCH: the memory BAR is prefetchable.
const IORESOURCE_PREFETCH: u64 = 0x2000;
/// IORESOURCE_MEM_64: the memory BAR is 64-bit.
const IORESOURCE_MEM_64: u64 = 0x0010_0000;
/// Number of standard BARs; the `resource` file lists the ROM and SR-IOV BARs after them.
const STANDARD_BARS: usize = 6;

/// One implemented Base Address Register of a device, from the `resource` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// BAR index, 0..=5.
    pub index: usize,
    /// Size in bytes.
    pub size: u64,
    /// I/O port BAR rather than memory.
    pub io: bool,
    /// 64-bit memory BAR.
    pub mem64: bool,
    /// Prefetchable memory BAR.
    pub prefetchable: bool,
}

/// What sysfs says about one PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor ID (0 when the file is missing).
    pub subsystem_vendor: u16,
    /// Subsystem device ID (0 when the file is missing).
    pub subsystem_device: u16,
    /// Class code, 24 bits: class, subclass, programming interface.
    pub class: u32,
    /// Name of the bound driver, if any.
    pub driver: Option<String>,
    /// IOMMU group number, if the device has one.
    pub iommu_group: Option<u32>,
    /// Contents of `driver_override`, `None` when unset (`(null)`) or absent.
    pub driver_override: Option<String>,
    /// Header type from config space (0 = endpoint, 1 = PCI bridge, 2 = CardBus), if readable.
    pub header_type: Option<u8>,
}

impl PciDevice {
    /// True for PCI-to-PCI and CardBus bridges (root ports, switch ports). The kernel lets
    /// bridges stay on their host driver in a group handed to VFIO; it decides by header
    /// type, which is used when config space is readable, else the class code.
    pub fn is_bridge(&self) -> bool {
        match self.header_type {
            Some(header) => header != 0,
            None => matches!(self.class >> 8, 0x0604 | 0x0607 | 0x0609),
        }
    }
}

/// Environment variable naming the sysfs root when `--sysfs-root` is not given.
pub const SYSFS_ROOT_ENV: &str = "VFIO_VMM_SYSFS_ROOT";

/// Root of the sysfs/procfs tree all host tooling reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// A view of the tree under `root` (`/` for the running kernel).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    /// The tree `vfio-vmm run` and `vfio-vmm host` read: `--sysfs-root DIR` if
    /// given, else `$VFIO_VMM_SYSFS_ROOT`, else `/`.
    pub fn from_env(sysfs_root: Option<PathBuf>) -> Self {
        let root = sysfs_root
            .or_else(|| {
                std::env::var_os(SYSFS_ROOT_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        Sysfs::new(root)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the root is the real `/`, so writes reach the running kernel.
    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `rel` (an absolute-looking path such as `/sys/class/iommu`) under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// `sys/bus/pci/devices/BDF` under the root.
    pub fn device_dir(&self, bdf: Bdf) -> PathBuf {
        self.path("/sys/bus/pci/devices").join(bdf.to_string())
    }

    /// `sys/bus/pci/drivers/NAME` under the root.
    pub fn driver_dir(&self, name: &str) -> PathBuf {
        self.path("/sys/bus/pci/drivers").join(name)
    }

    /// `sys/kernel/iommu_groups/N` under the root.
    pub fn group_dir(&self, group: u32) -> PathBuf {
        self.path("/sys/kernel/iommu_groups")
            .join(group.to_string())
    }

    /// True if the device exists.
    pub fn device_exists(&self, bdf: Bdf) -> bool {
        self.device_dir(bdf).exists()
    }

    /// Entry names of a directory, sorted; a missing directory reads as empty.
    pub fn list_dir(&self, dir: &Path) -> Result<Vec<String>, SysfsError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SysfsError::Read {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SysfsError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The file's contents with surrounding whitespace trimmed; `None` if it does not exist.
    pub fn read_optional(&self, path: &Path) -> Result<Option<String>, SysfsError> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SysfsError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Last path component of a symlink's target (a driver or group name); `None` if absent.
    pub fn link_name(&self, path: &Path) -> Result<Option<String>, SysfsError> {
        match fs::read_link(path) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SysfsError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The entries of a directory that parse as `T` (device addresses, group numbers),
    /// sorted; others are skipped. A missing directory reads as empty.
    pub fn list_parsed<T: FromStr + Ord>(&self, dir: &Path) -> Result<Vec<T>, SysfsError> {
        let mut all: Vec<T> = self
            .list_dir(dir)?
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        all.sort();
        Ok(all)
    }

    /// Every PCI device on the host, sorted by address. Entries that are not PCI addresses
    /// are skipped.
    pub fn pci_devices(&self) -> Result<Vec<Bdf>, SysfsError> {
        self.list_parsed(&self.path("/sys/bus/pci/devices"))
    }

    /// Name of the driver the device is bound to, if any.
    pub fn driver_of(&self, bdf: Bdf) -> Result<Option<String>, SysfsError> {
        self.link_name(&self.device_dir(bdf).join("driver"))
    }

    /// IOMMU group of the device, if it has one.
    pub fn group_of(&self, bdf: Bdf) -> Result<Option<u32>, SysfsError> {
        let path = self.device_dir(bdf).join("iommu_group");
        match self.link_name(&path)? {
            None => Ok(None),
            Some(name) => name.parse().map(Some).map_err(|_| SysfsError::BadValue {
                path,
                value: name,
                expected: "a link to an IOMMU group number",
            }),
        }
    }

    fn hex_attr(&self, dir: &Path, name: &str, required: bool) -> Result<u32, SysfsError> {
        let path = dir.join(name);
        let value = match self.read_optional(&path)? {
            Some(value) => value,
            None if !required => return Ok(0),
            None => {
                return Err(SysfsError::Read {
                    path,
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            }
        };
        let digits = value.strip_prefix("0x").unwrap_or(&value);
        u32::from_str_radix(digits, 16).map_err(|_| SysfsError::BadValue {
            path,
            value,
            expected: "a hexadecimal number such as 0x10de",
        })
    }

    /// Reads the device's identity, driver and group.
    pub fn device(&self, bdf: Bdf) -> Result<PciDevice, SysfsError> {
        let dir = self.device_dir(bdf);
        if !dir.exists() {
            return Err(SysfsError::NoDevice { bdf, path: dir });
        }
        let id16 = |name: &str, required: bool| -> Result<u16, SysfsError> {
            let value = self.hex_attr(&dir, name, required)?;
            u16::try_from(value).map_err(|_| SysfsError::BadValue {
                path: dir.join(name),
                value: format!("{value:#x}"),
                expected: "a 16-bit ID",
            })
        };
        let header_type = match fs::read(dir.join("config")) {
            Ok(config) if config.len() > 0x0e => Some(config[0x0e] & 0x7f),
            _ => None,
        };
        let driver_override = self
            .read_optional(&dir.join("driver_override"))?
            .filter(|v| !v.is_empty() && v != "(null)");
        Ok(PciDevice {
            bdf,
            vendor: id16("vendor", true)?,
            device: id16("device", true)?,
            subsystem_vendor: id16("subsystem_vendor", false)?,
            subsystem_device: id16("subsystem_device", false)?,
            class: self.hex_attr(&dir, "class", true)?,
            driver: self.driver_of(bdf)?,
            iommu_group: self.group_of(bdf)?,
            driver_override,
            header_type,
        })
    }

    /// The device's implemented standard BARs (index 0..=5), from its `resource` file.
    pub fn bars(&self, bdf: Bdf) -> Result<Vec<Bar>, SysfsError> {
        let path = self.device_dir(bdf).join("resource");
        let Some(text) = self.read_optional(&path)? else {
            return Ok(Vec::new());
        };
        let bad = |line: &str| SysfsError::BadValue {
            path: path.clone(),
            value: line.to_string(),
            expected: "lines of '0xstart 0xend 0xflags'",
        };
        let mut bars = Vec::new();
        for (index, line) in text.lines().take(STANDARD_BARS).enumerate() {
            let fields: Vec<u64> = line
                .split_whitespace()
                .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16))
                .collect::<Result<_, _>>()
                .map_err(|_| bad(line))?;
            let [start, end, flags] = fields[..] else {
                return Err(bad(line));
            };
            if end == 0 || end < start {
                continue;
            }
            bars.push(Bar {
                index,
                size: end - start + 1,
                io: flags & IORESOURCE_IO != 0,
                mem64: flags & IORESOURCE_MEM_64 != 0,
                prefetchable: flags & IORESOURCE_PREFETCH != 0,
            });
        }
        Ok(bars)
    }

    /// Reset methods the kernel reports in `reset_method` (kernel >= 5.15), in its order.
    /// `Ok(None)` when the file is absent (older kernel, or no reset at all).
    pub fn reset_methods(&self, bdf: Bdf) -> Result<Option<Vec<String>>, SysfsError> {
        let path = self.device_dir(bdf).join("reset_method");
        Ok(self
            .read_optional(&path)?
            .map(|v| v.split_whitespace().map(str::to_string).collect()))
    }

    /// True if the device has a `reset` file, which older kernels create when any reset works.
    pub fn has_reset_file(&self, bdf: Bdf) -> bool {
        self.device_dir(bdf).join("reset").exists()
    }
}
