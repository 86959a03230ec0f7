//! What the user asked for: the VM configuration parsed from the command line
//! and checked before anything is built.

use std::path::PathBuf;

use iommu::size::{parse_size, SizeError};

/// The smallest guest we boot: a bzImage plus initramfs needs room to unpack.
pub const MIN_MEMORY: u64 = 64 << 20;
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
    #[error("--memory {0} MiB is too small: a Linux guest needs at least {min} MiB", min = MIN_MEMORY >> 20)]
    MemoryTooSmall(u64),
    /// Huge-page backed memory that is not a whole number of huge pages.
    #[error("--memory must be a multiple of 2 MiB with hugepages=on")]
    MemoryNotHugeAligned,
    /// A vCPU count out of range.
    #[error("--cpus {0} is out of range: use 1 to {MAX_CPUS}")]
    BadCpus(u32),
    /// A serial option that does not parse.
    #[error("bad --serial '{0}': use stdio or file=PATH")]
    BadSerial(String),
}

/// Guest RAM: how much and how it is backed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Bytes of guest RAM.
    pub size: u64,
    /// Back RAM with huge pages (memfd, MFD_HUGETLB).
    pub hugepages: bool,
    /// Mark RAM mergeable for KSM (MADV_MERGEABLE).
    pub mergeable: bool,
}

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    /// This process's stdin and stdout.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
}

/// Everything needed to build and boot a VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The bzImage.
    pub kernel: PathBuf,
    /// An optional initramfs (cpio, possibly compressed).
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub cpus: u8,
    /// Guest RAM.
    pub memory: MemoryConfig,
    /// Serial console backend.
    pub serial: SerialConfig,
    /// Emulated virtio-net NICs, each on a tap.
    pub net: Vec<crate::devices::virtio::NetConfig>,
    /// Host PCI devices passed through with VFIO.
    pub devices: Vec<crate::devices::vfio::VfioDeviceSpec>,
}

fn parse_on_off(opt: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(ConfigError::BadMemoryOption(opt.to_string())),
    }
}

impl MemoryConfig {
    /// Parses `SIZE[,hugepages=on][,mergeable=on]`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.split(',');
        let size = parse_size(parts.next().unwrap_or(""))?;
        let mut config = MemoryConfig {
            size,
            hugepages: false,
            mergeable: false,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("hugepages", v)) => config.hugepages = parse_on_off(opt, v)?,
                Some(("mergeable", v)) => config.mergeable = parse_on_off(opt, v)?,
                _ => return Err(ConfigError::BadMemoryOption(opt.to_string())),
            }
        }
        if config.size < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall(config.size >> 20));
        }
        if config.hugepages && !config.size.is_multiple_of(2 << 20) {
            return Err(ConfigError::MemoryNotHugeAligned);
        }
        Ok(config)
    }
}

impl SerialConfig {
    /// Parses `stdio` or `file=PATH`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.split_once('=') {
            None if s == "stdio" => Ok(SerialConfig::Stdio),
            Some(("file", path)) if !path.is_empty() => Ok(SerialConfig::File(path.into())),
            _ => Err(ConfigError::BadSerial(s.to_string())),
        }
    }
}

/// Checks a vCPU count given on the command line.
pub fn check_cpus(n: u32) -> Result<u8, ConfigError> {
    u8::try_from(n)
        .ok()
        .filter(|&c| (1..=MAX_CPUS).contains(&c))
        .ok_or(ConfigError::BadCpus(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_use_the_shared_grammar() {
        assert_eq!(MemoryConfig::parse("1T").map(|m| m.size), Ok(1 << 40));
        assert_eq!(MemoryConfig::parse("1GiB").map(|m| m.size), Ok(1 << 30));
        assert_eq!(MemoryConfig::parse("256").map(|m| m.size), Ok(256 << 20));
        let err = MemoryConfig::parse("12X").unwrap_err();
        assert_eq!(
            err,
            ConfigError::BadSize(SizeError::Malformed("12X".into()))
        );
        assert!(
            err.to_string().starts_with("--memory: invalid size '12X'"),
            "{err}"
        );
    }

    #[test]
    fn memory_options_parse() {
        let m = MemoryConfig::parse("256M,hugepages=on,mergeable=on").unwrap();
        assert_eq!(
            m,
            MemoryConfig {
                size: 256 << 20,
                hugepages: true,
                mergeable: true
            }
        );
        let m = MemoryConfig::parse("1G").unwrap();
        assert!(!m.hugepages && !m.mergeable);
    }

    #[test]
    fn memory_errors_name_the_problem() {
        assert_eq!(
            MemoryConfig::parse("16M"),
            Err(ConfigError::MemoryTooSmall(16))
        );
        assert_eq!(
            MemoryConfig::parse("256M,hugepage=on"),
            Err(ConfigError::BadMemoryOption("hugepage=on".into()))
        );
        assert_eq!(
            MemoryConfig::parse("65M,hugepages=on"),
            Err(ConfigError::MemoryNotHugeAligned)
        );
        let msg = MemoryConfig::parse("16M").unwrap_err().to_string();
        assert!(msg.contains("at least 64 MiB"), "{msg}");
    }

    #[test]
    fn cpus_are_bounded() {
        assert_eq!(check_cpus(2), Ok(2));
        assert_eq!(check_cpus(0), Err(ConfigError::BadCpus(0)));
        assert_eq!(check_cpus(255), Err(ConfigError::BadCpus(255)));
        assert_eq!(check_cpus(100_000), Err(ConfigError::BadCpus(100_000)));
    }

    #[test]
    fn serial_parses() {
        assert_eq!(SerialConfig::parse("stdio"), Ok(SerialConfig::Stdio));
        assert_eq!(
            SerialConfig::parse("file=/tmp/x"),
            Ok(SerialConfig::File("/tmp/x".into()))
        );
        assert!(SerialConfig::parse("pty").is_err());
        assert!(SerialConfig::parse("file=").is_err());
    }
}
