//! Host preparation for passthrough: `host check`, `host list`, `host bind` and
//! `host unbind`. This module owns where they look ([`Host`]: the sysfs root, the state
//! directory, the kernel interface) and the memory sizes they read and print.
//!
//! Configuration, in order of precedence:
//! - sysfs root: `--sysfs-root DIR`, else `$VFIO_VMM_SYSFS_ROOT`, else `/`. Every read of
//!   `/sys`, `/proc`, `/dev/kvm` and `/lib/modules` happens under it, so a fake tree can
//!   stand in for the host.
//! - state directory (previous drivers remembered by `host bind`):
//!   `$VFIO_VMM_STATE_DIR`, else `ROOT/run/vfio-vmm`.
//! - pci.ids database: `$VFIO_VMM_PCI_IDS`, else the system copy (see [`crate::pciids`]).

pub mod bind;
pub mod check;
pub mod device_check;
pub mod kernel;
pub mod list;
pub mod state;

use std::path::PathBuf;

use crate::sysfs::Sysfs;
use kernel::{HostKernel, Kernel};

/// Environment variable overriding the sysfs root.
pub const SYSFS_ROOT_ENV: &str = "VFIO_VMM_SYSFS_ROOT";
/// Environment variable overriding the state directory.
pub const STATE_DIR_ENV: &str = "VFIO_VMM_STATE_DIR";

/// Why a memory size given by the user could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text is not a number with an optional K/M/G/T suffix.
    #[error("invalid memory size '{0}': use a number of MiB or a size with a suffix, like 4096, 512M, 8G")]
    Malformed(String),
    /// The size does not fit in 64 bits.
    #[error("memory size '{0}' is too large")]
    TooLarge(String),
}

/// Where the host tooling reads and writes, and the kernel it talks to.
pub struct Host {
    /// The sysfs/procfs tree.
    pub sysfs: Sysfs,
    /// Directory of the state files `host bind` leaves for `host unbind`.
    pub state_dir: PathBuf,
    /// Writes, module loading and process facts.
    pub kernel: Box<dyn Kernel>,
}

impl Host {
    /// The host as configured by `--sysfs-root` (if given) and the environment.
    pub fn from_env(sysfs_root: Option<PathBuf>) -> Self {
        let root = sysfs_root
            .or_else(|| {
                std::env::var_os(SYSFS_ROOT_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        let sysfs = Sysfs::new(root);
        let state_dir = std::env::var_os(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| sysfs.path("/run/vfio-vmm"));
        Host {
            sysfs,
            state_dir,
            kernel: Box::new(HostKernel),
        }
    }

    /// A host with explicit parts (tests use a fake kernel).
    pub fn new(sysfs: Sysfs, state_dir: PathBuf, kernel: Box<dyn Kernel>) -> Self {
        Host {
            sysfs,
            state_dir,
            kernel,
        }
    }
}

const UNITS: [(&str, u64); 4] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

/// Parses a memory size: a bare number is MiB; suffixes K, M, G, T (optionally followed
/// by `iB` or `B`) are binary multiples, so `8G` = `8192` = 8 GiB.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| SizeError::Malformed(text.to_string()))?;
    let unit: u64 = match suffix.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => 1 << 20,
        "K" | "KB" | "KIB" => 1 << 10,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(SizeError::Malformed(text.to_string())),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

/// Prints a byte count with the largest binary unit that divides it exactly, else one
/// decimal (`16 GiB`, `1.5 GiB`, `128 B`).
pub fn format_size(bytes: u64) -> String {
    for (name, unit) in UNITS {
        if bytes >= unit {
            if bytes.is_multiple_of(unit) {
                return format!("{} {name}", bytes / unit);
            }
            return format!("{:.1} {name}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_mib_by_default_and_with_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4 << 30);
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(matches!(parse_size("lots"), Err(SizeError::Malformed(_))));
        assert!(matches!(parse_size("8X"), Err(SizeError::Malformed(_))));
        assert!(matches!(
            parse_size("99999999999T"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(format_size(16 << 30), "16 GiB");
        assert_eq!(format_size(256 << 20), "256 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(128), "128 B");
    }
}
