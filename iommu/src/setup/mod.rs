//! Setting a host up for passthrough: the admin tooling behind `vfio-vmm host check`,
//! `host list`, `host bind [--owner]` and `host unbind`. This module owns where those commands look
//! ([`Host`]: the sysfs root, the state directory, the kernel interface); the VFIO runtime
//! ([`crate::vfio`]) never imports it.
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
pub mod finding;
pub mod kernel;
pub mod list;
mod memlock;
pub mod owner;
pub mod state;
pub mod user_check;

use std::path::PathBuf;

use crate::sysfs::Sysfs;
use kernel::{HostKernel, Kernel};

pub use crate::sysfs::SYSFS_ROOT_ENV;
/// Environment variable overriding the state directory.
pub const STATE_DIR_ENV: &str = "VFIO_VMM_STATE_DIR";

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
        let sysfs = Sysfs::from_env(sysfs_root);
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
