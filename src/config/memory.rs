//! Guest RAM as asked for: `--memory SIZE[,hugepages=on][,mergeable=on]`,
//! SIZE in the workspace's one size grammar (`iommu::size`: bare numbers are
//! MiB; K, M, G, T and KiB..TiB suffixes).

use iommu::size::parse_size;

use super::{parse_on_off, ConfigError};

/// The smallest guest we boot: a bzImage plus initramfs needs room to unpack.
pub const MIN_MEMORY: u64 = 64 << 20;
/// Guest RAM when none is given.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// The huge page size used with `hugepages=on`.
pub const HUGEPAGE_SIZE: u64 = 2 << 20;
/// Guest RAM is mapped in whole pages.
const PAGE_SIZE: u64 = 4 << 10;

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

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size: DEFAULT_MEMORY,
            hugepages: false,
            mergeable: false,
        }
    }
}

impl MemoryConfig {
    /// Parses and checks `SIZE[,hugepages=on][,mergeable=on]`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.split(',');
        let size = parse_size(parts.next().unwrap_or(""))?;
        let mut config = MemoryConfig {
            size,
            ..MemoryConfig::default()
        };
        for opt in parts {
            let bad = || ConfigError::BadMemoryOption(opt.to_string());
            let (key, value) = opt.split_once('=').ok_or_else(bad)?;
            let value = parse_on_off(value).ok_or_else(bad)?;
            match key {
                "hugepages" => config.hugepages = value,
                "mergeable" => config.mergeable = value,
                _ => return Err(bad()),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the size: enough for Linux, whole pages (huge pages with `hugepages`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.size < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall(self.size >> 20));
        }
        if self.hugepages && !self.size.is_multiple_of(HUGEPAGE_SIZE) {
            return Err(ConfigError::MemoryNotAligned(
                HUGEPAGE_SIZE >> 10,
                " with hugepages=on",
            ));
        }
        if !self.size.is_multiple_of(PAGE_SIZE) {
            return Err(ConfigError::MemoryNotAligned(PAGE_SIZE >> 10, ""));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu::size::SizeError;

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
        for bad in ["256M,hugepage=on", "256M,hugepages", "256M,hugepages=maybe"] {
            assert_eq!(
                MemoryConfig::parse(bad),
                Err(ConfigError::BadMemoryOption(bad[5..].into())),
                "{bad}"
            );
        }
        assert_eq!(
            MemoryConfig::parse("65M,hugepages=on"),
            Err(ConfigError::MemoryNotAligned(2048, " with hugepages=on"))
        );
        assert_eq!(
            MemoryConfig::parse("65537K"),
            Err(ConfigError::MemoryNotAligned(4, ""))
        );
        let msg = MemoryConfig::parse("16M").unwrap_err().to_string();
        assert!(msg.contains("at least 64 MiB"), "{msg}");
    }
}
