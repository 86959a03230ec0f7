//! What a VM is made of, as plain data: [`VmConfig`], the whole grammar of
//! `vfio-vmm run` (sizes, MAC addresses, device specs, the serial backend) and
//! its JSON form (cloud-hypervisor's `VmConfig`, in `json.rs`). The command
//! line and the JSON file both end in [`VmConfig::validate`], which checks
//! everything that can be checked before any resource is taken.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`VmConfig`], [`ConfigError`], vCPU counts, ids |
//! | `payload.rs` | kernel (bzImage header), initramfs, command line |
//! | `vmlinux.rs` | an ELF vmlinux: x86-64, with a PVH entry note |
//! | `rng.rs` | `--rng [src=PATH]` |
//! | `pit.rs` | `--pit reinject=on|off` |
//! | `memory.rs` | `--memory SIZE[,hugepages=on][,mergeable=on]` |
//! | `serial.rs` | `--serial stdio|null|off|file=PATH` |
//! | `device.rs` | `--device BDF[,rombar=off][,id=ID]` |
//! | `net.rs` | `--net tap=NAME[,mac=MAC][,id=ID]`, MAC addresses, tap names |
//! | `disk.rs` | `--disk path=FILE[,readonly=on][,direct=on][,id=ID][,serial=S][,format=raw|qcow2]` |
//! | `vsock.rs` | `--vsock cid=N,socket=PATH[,id=ID]` |
//! | `json.rs` | the JSON form, read and written (`json/disks.rs`: `disks[]` and `vsock`) |
//!
//! This module imports no device module: devices import it.

pub mod device;
pub mod disk;
pub mod json;
pub mod memory;
pub mod net;
pub mod payload;
pub mod pit;
pub mod rng;
pub mod serial;
pub mod vmlinux;
pub mod vsock;

#[cfg(test)]
mod fuzz_tests;

use std::path::PathBuf;

use iommu::size::SizeError;
use iommu::{Bdf, BdfError};

pub use device::DeviceConfig;
pub use disk::{DiskConfig, ImageFormat};
pub use memory::{MemoryConfig, MIN_MEMORY};
pub use net::{MacAddress, NetConfig};
pub use payload::{KernelKind, PayloadConfig};
pub use pit::PitConfig;
pub use rng::RngConfig;
pub use serial::SerialConfig;
pub use vsock::VsockConfig;

/// vCPU ids are xAPIC ids; 0xff is the broadcast id.
pub const MAX_CPUS: u8 = 254;

/// Errors in the configuration, each saying what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A memory size that does not parse.
    #[error("--memory: {0}")]
    BadSize(#[from] SizeError),
    /// An unknown memory option.
    #[error(
        "unknown memory option '{0}': valid options are hugepages=on|off and mergeable=on|off"
    )]
    BadMemoryOption(String),
    /// Too little memory for a Linux guest.
    #[error("guest memory (--memory, memory.size) of {0} MiB is too small: a Linux guest needs at least {min} MiB", min = MIN_MEMORY >> 20)]
    MemoryTooSmall(u64),
    /// Memory that is not a whole number of pages.
    #[error("guest memory (--memory, memory.size) must be a multiple of {0} KiB{1}")]
    MemoryNotAligned(u64, &'static str),
    /// A vCPU count out of range.
    #[error("{0} vCPUs (--cpus, cpus.boot_vcpus) is out of range: use 1 to {MAX_CPUS}")]
    BadCpus(u64),
    /// Fewer vCPUs at most than at boot.
    #[error("cpus.max_vcpus {max} is below cpus.boot_vcpus {boot}: CPU hotplug is not supported yet, set max_vcpus to boot_vcpus")]
    CpuHotplug {
        /// vCPUs at boot.
        boot: u64,
        /// vCPUs at most.
        max: u64,
    },
    /// A serial option that does not parse.
    #[error("bad --serial '{0}': use stdio, null, off or file=PATH")]
    BadSerial(String),
    /// The serial output file cannot be created where it is asked for.
    #[error("serial output file {path}: {why}: create the directory or choose another path")]
    SerialFile {
        /// The file asked for.
        path: PathBuf,
        /// What is wrong with its directory.
        why: String,
    },
    /// A kernel or initramfs that cannot be read.
    #[error("cannot read the {what} {path}: {why}")]
    Unreadable {
        /// "kernel" or "initramfs".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The kernel is not of a format we boot.
    #[error(
        "{path} is not a bzImage kernel ({why}): pass the kernel's bzImage, e.g. /boot/vmlinuz-*, or an uncompressed ELF vmlinux with a PVH note"
    )]
    NotBzImage {
        /// The file.
        path: PathBuf,
        /// What the header check found.
        why: String,
    },
    /// An ELF kernel that is not an x86-64 vmlinux with a PVH entry.
    #[error("{path} is an ELF file but not a vmlinux vfio-vmm can boot ({why}): pass an x86-64 vmlinux built with CONFIG_PVH=y, or the kernel's bzImage")]
    BadVmlinux {
        /// The file.
        path: PathBuf,
        /// What the ELF check found.
        why: String,
    },
    /// A command line the kernel cannot take.
    #[error("bad kernel command line (--cmdline, payload.cmdline): {0}")]
    BadCmdline(String),
    /// A `--device` value with a bad option.
    #[error("--device {text}: {why}")]
    BadDevice {
        /// The value given.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// A malformed PCI address.
    #[error("--device: {0}")]
    Bdf(#[from] BdfError),
    /// A device given twice.
    #[error("device {0} is given twice: pass each device once")]
    DuplicateDevice(Bdf),
    /// A `--net` value that does not parse.
    #[error("--net {text:?}: {why} (expected tap=NAME[,mac=MAC][,id=ID])")]
    BadNet {
        /// The value given.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// The MAC address is malformed or not a unicast address.
    #[error("invalid MAC address {0:?}: expected six hex bytes like 02:00:00:00:00:01, unicast, not all zero")]
    BadMac(String),
    /// A tap name Linux does not accept.
    #[error("invalid tap name {0:?}: use 1 to 15 characters, no '/', ':', ',', whitespace or NUL")]
    BadTapName(String),
    /// Two NICs on one tap or with one MAC.
    #[error("{what} {value} is used by two NICs: give each NIC its own")]
    DuplicateNet {
        /// "tap" or "MAC address".
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A `--disk` value that does not parse.
    #[error(
        "--disk {text:?}: {why} (expected path=FILE[,readonly=on][,direct=on][,id=ID][,serial=S][,format=raw|qcow2])"
    )]
    BadDisk {
        /// The value given.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// A disk image that cannot be used as asked.
    #[error("disk image {path}: {why}")]
    DiskImage {
        /// The image.
        path: PathBuf,
        /// What is wrong, and what to do.
        why: String,
    },
    /// One image behind two disks.
    #[error("disk image {0} is given twice: each disk needs its own image")]
    DuplicateDisk(PathBuf),
    /// A disk serial the guest cannot read back.
    #[error(
        "disk serial {0:?} (serial=, disks[].serial): use at most 20 printable ASCII characters"
    )]
    BadDiskSerial(String),
    /// A `--vsock` value that does not parse.
    #[error("--vsock {text:?}: {why} (expected cid=N,socket=PATH[,id=ID])")]
    BadVsock {
        /// The value given.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// `--vsock` given more than once.
    #[error("--vsock is given {0} times: a VM has at most one vsock device")]
    TooManyVsocks(usize),
    /// A CID no guest may have.
    #[error("vsock cid {0}: use 3 to 4294967294 (0 to 2 are reserved)")]
    BadCid(u64),
    /// The vsock socket cannot be created where it is asked for.
    #[error("vsock socket {path}: {why}")]
    VsockSocket {
        /// The socket path.
        path: PathBuf,
        /// What is wrong, and what to do.
        why: String,
    },
    /// A `--rng` value that does not parse.
    #[error("--rng {0:?}: expected src=PATH (or nothing for /dev/urandom)")]
    BadRng(String),
    /// The entropy source cannot be used.
    #[error("entropy source {path} (--rng src=, rng.src): {why}: pass a readable character device such as /dev/urandom, or a file")]
    RngSource {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A `--pit` value that does not parse.
    #[error("--pit {0:?}: expected reinject=on|off")]
    BadPit(String),
    /// A device id that is empty, malformed or used twice.
    #[error("device id {0:?}: {1}")]
    BadId(String, &'static str),
    /// The JSON configuration cannot be read or parsed.
    #[error("JSON configuration: {0}")]
    Json(String),
    /// Another error whose message held control characters from the JSON
    /// text, with them escaped so that the message stays one line.
    #[error("{0}")]
    Escaped(String),
    /// A cloud-hypervisor field vfio-vmm does not implement, with a value that matters.
    #[error("{0} is not supported yet: remove it from the configuration{1}")]
    Unsupported(String, String),
    /// A field cloud-hypervisor does not define.
    #[error("unknown field {0}: vfio-vmm reads cloud-hypervisor's VmConfig (payload, cpus, memory, serial, devices, net, disks, vsock, rng) and its own pit")]
    UnknownField(String),
}

impl ConfigError {
    /// The error itself, or [`ConfigError::Escaped`] if its message holds
    /// control characters (from a client's key or path): messages are one line.
    pub fn one_line(self) -> Self {
        let message = self.to_string();
        match message.contains(char::is_control) {
            true => ConfigError::Escaped(message.escape_debug().to_string()),
            false => self,
        }
    }
}

/// Everything needed to build and boot a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel, initramfs and command line.
    pub payload: PayloadConfig,
    /// Number of vCPUs.
    pub cpus: u8,
    /// Guest RAM.
    pub memory: MemoryConfig,
    /// Serial console backend.
    pub serial: SerialConfig,
    /// Host PCI devices passed through with VFIO.
    pub devices: Vec<DeviceConfig>,
    /// Emulated virtio-net NICs, each on a tap.
    pub net: Vec<NetConfig>,
    /// virtio-blk disks, in the order the guest finds them.
    pub disks: Vec<DiskConfig>,
    /// The virtio-vsock device, if any.
    pub vsock: Option<VsockConfig>,
    /// A virtio-rng entropy device, if any.
    pub rng: Option<RngConfig>,
    /// The PIT's tick reinjection policy.
    pub pit: PitConfig,
}

impl VmConfig {
    /// Checks everything that needs no resource: counts, sizes, ids and
    /// duplicates first, then the files (serial directory, disk images, vsock
    /// socket, entropy source, kernel, initramfs).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_cpus(u64::from(self.cpus))?;
        self.memory.validate()?;
        self.check_ids()?;
        for (i, d) in self.devices.iter().enumerate() {
            if self.devices[..i].iter().any(|o| o.bdf == d.bdf) {
                return Err(ConfigError::DuplicateDevice(d.bdf));
            }
        }
        net::check_distinct(&self.net)?;
        self.serial.validate()?;
        disk::validate_all(&self.disks)?;
        if let Some(vsock) = &self.vsock {
            vsock.validate()?;
        }
        if let Some(rng) = &self.rng {
            rng.validate()?;
        }
        self.payload.validate()
    }

    /// Ids must be unique across devices, NICs, disks and the vsock.
    fn check_ids(&self) -> Result<(), ConfigError> {
        let ids: Vec<&str> = self
            .devices
            .iter()
            .filter_map(|d| d.id.as_deref())
            .chain(self.net.iter().filter_map(|n| n.id.as_deref()))
            .chain(self.disks.iter().filter_map(|d| d.id.as_deref()))
            .chain(self.vsock.iter().filter_map(|v| v.id.as_deref()))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            check_id(id)?;
            if ids[..i].contains(id) {
                return Err(ConfigError::BadId(id.to_string(), "used twice"));
            }
        }
        Ok(())
    }
}

/// Checks that the directory a file is to be created in exists (the current
/// directory for a bare name); the error says what is wrong with it.
pub(crate) fn check_parent_dir(path: &std::path::Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", dir.display())),
        Err(e) => Err(format!("directory {}: {e}", dir.display())),
    }
}

/// Checks a vCPU count and narrows it.
pub fn check_cpus(n: u64) -> Result<u8, ConfigError> {
    u8::try_from(n)
        .ok()
        .filter(|&c| (1..=MAX_CPUS).contains(&c))
        .ok_or(ConfigError::BadCpus(n))
}

/// An id names a device in logs and, later, in API calls: printable, no commas.
pub fn check_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > 64 {
        return Err(ConfigError::BadId(id.into(), "use 1 to 64 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_graphic() && c != ',' && c != '=')
    {
        return Err(ConfigError::BadId(
            id.into(),
            "use printable characters without spaces, ',' or '='",
        ));
    }
    Ok(())
}

/// `on|off` (also true/false, yes/no, 1/0) for option `opt`.
pub(crate) fn parse_on_off(value: &str) -> Option<bool> {
    match value {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A file with a bzImage setup header (and nothing bootable after it).
    pub(crate) fn fake_bzimage(name: &str) -> PathBuf {
        let mut image = vec![0u8; 4096];
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x211] = 1;
        image[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        let path =
            std::env::temp_dir().join(format!("vfio-vmm-config-{}-{name}", std::process::id()));
        std::fs::write(&path, image).unwrap();
        path
    }

    pub(crate) fn config(kernel: PathBuf) -> VmConfig {
        VmConfig {
            payload: PayloadConfig {
                kernel,
                initramfs: None,
                cmdline: "console=ttyS0".into(),
            },
            cpus: 2,
            memory: MemoryConfig::parse("256M").unwrap(),
            serial: SerialConfig::Stdio,
            devices: vec![DeviceConfig::parse("01:00.0,id=gpu").unwrap()],
            net: vec![NetConfig::parse("tap=t0,id=nic0").unwrap()],
            disks: Vec::new(),
            vsock: None,
            rng: Some(RngConfig::default()),
            pit: PitConfig::default(),
        }
    }

    #[test]
    fn cpus_are_bounded() {
        assert_eq!(check_cpus(2), Ok(2));
        assert_eq!(check_cpus(0), Err(ConfigError::BadCpus(0)));
        assert_eq!(check_cpus(255), Err(ConfigError::BadCpus(255)));
        assert_eq!(check_cpus(100_000), Err(ConfigError::BadCpus(100_000)));
    }

    #[test]
    fn a_valid_config_validates_and_each_fault_is_named() {
        let k = fake_bzimage("valid");
        let good = config(k.clone());
        assert_eq!(good.validate(), Ok(()));

        let mut c = good.clone();
        c.devices.push(DeviceConfig::parse("0000:01:00.0").unwrap());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("0000:01:00.0 is given twice"), "{err}");

        let mut c = good.clone();
        c.net.push(NetConfig::parse("tap=t0").unwrap());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tap t0 is used by two NICs"), "{err}");

        let mut c = good.clone();
        c.net[0].id = Some("gpu".into());
        assert_eq!(
            c.validate(),
            Err(ConfigError::BadId("gpu".into(), "used twice"))
        );

        let mut c = good.clone();
        c.cpus = 0;
        assert_eq!(c.validate(), Err(ConfigError::BadCpus(0)));

        let mut c = good;
        c.payload.kernel = "/nonexistent/bzImage".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cannot read the kernel /nonexistent/bzImage"));
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn ids_are_printable_without_separators() {
        assert!(check_id("nic0").is_ok());
        for bad in ["", "a b", "a,b", "a=b", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    /// Found by fuzz_config_json: a JSON key or path holding a newline made a
    /// two-line error (an unknown field "a\nb", an rng source "\n").
    #[test]
    fn json_errors_with_control_characters_stay_one_line() {
        let k = fake_bzimage("one-line");
        let kernel = format!("{:?}", k.display().to_string());
        for extra in [r#""a\nb": 1"#, r#""rng": {"src": "\n"}"#] {
            let text = format!(r#"{{"payload": {{"kernel": {kernel}}}, {extra}}}"#);
            let err = VmConfig::from_json(&text).unwrap_err().to_string();
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(r"\n"), "escaped: {err}");
        }
        std::fs::remove_file(k).unwrap();
    }
}
