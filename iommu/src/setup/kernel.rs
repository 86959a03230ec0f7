//! Everything the host tooling asks of the running kernel and process beyond reading files:
//! sysfs writes (which make the kernel bind, unbind and probe), loading modules, the
//! effective user and the memlock limit. [`Kernel`] is a trait so tests can stand in a fake
//! kernel that reacts to writes in a fake tree the way the real one does.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;

use crate::process;
use crate::sysfs::Sysfs;

/// Why loading a kernel module failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The sysfs root is a fake tree, so there is no kernel to load a module into.
    #[error(
        "module {module} is not loaded in the tree at {root} (no sys/module/{module} there), \
         and modprobe only runs against the real root /"
    )]
    NotRealRoot {
        /// The module wanted.
        module: String,
        /// The sysfs root in use.
        root: PathBuf,
    },
    /// modprobe could not be started.
    #[error("cannot run modprobe {module}: {source}; install kmod or load the module by hand")]
    Spawn {
        /// The module wanted.
        module: String,
        /// The error from the operating system.
        source: io::Error,
    },
    /// modprobe ran and failed.
    #[error("modprobe {module} failed: {stderr}; check that the kernel has the module (`modinfo {module}`)")]
    Modprobe {
        /// The module wanted.
        module: String,
        /// What modprobe printed.
        stderr: String,
    },
}

/// What the host tooling needs from the kernel and the current process.
pub trait Kernel {
    /// Writes `value` to the sysfs attribute at `path` (already under the sysfs root).
    fn write_attr(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Loads a kernel module by name (`vfio-pci`).
    fn load_module(&self, sysfs: &Sysfs, module: &str) -> Result<(), KernelError>;
    /// Effective user ID of this process.
    fn euid(&self) -> u32;
    /// Soft RLIMIT_MEMLOCK of this process in bytes; `None` when unlimited.
    fn memlock_limit(&self) -> Option<u64>;
}

/// The running kernel and this process (its facts come from [`crate::process`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostKernel;

impl Kernel for HostKernel {
    fn write_attr(&self, path: &Path, value: &str) -> io::Result<()> {
        // sysfs attributes take one write(2) each. Open like `echo VALUE > FILE` does
        // (O_TRUNC is a no-op on sysfs, and keeps plain files in a fake tree clean), but
        // never create a file that does not exist.
        let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
        file.write_all(value.as_bytes())
    }

    fn load_module(&self, sysfs: &Sysfs, module: &str) -> Result<(), KernelError> {
        if !sysfs.is_real() {
            return Err(KernelError::NotRealRoot {
                module: module.to_string(),
                root: sysfs.root().to_path_buf(),
            });
        }
        let output = Command::new("modprobe")
            .arg(module)
            .output()
            .map_err(|source| KernelError::Spawn {
                module: module.to_string(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        Err(KernelError::Modprobe {
            module: module.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }

    fn euid(&self) -> u32 {
        process::euid()
    }

    fn memlock_limit(&self) -> Option<u64> {
        process::memlock_limit()
    }
}

/// A sysfs write the kernel (or the filesystem) refused, with the errno spelled out.
#[derive(Debug)]
pub struct WriteFailure {
    /// The attribute written.
    pub path: PathBuf,
    /// The value written.
    pub value: String,
    /// The error returned.
    pub source: io::Error,
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut reason = self.source.to_string();
        let errno = match self.source.raw_os_error() {
            Some(n) => {
                // io::Error appends " (os error N)"; the errno is spelled out below instead.
                if let Some(stripped) = reason.strip_suffix(&format!(" (os error {n})")) {
                    reason = stripped.to_string();
                }
                match errno_name(n) {
                    Some(name) => format!("{name}, errno {n}"),
                    None => format!("errno {n}"),
                }
            }
            None => "no errno".to_string(),
        };
        write!(
            f,
            "writing {:?} to {} failed: {} ({errno}); `dmesg | tail` shows the kernel's reason",
            self.value.trim_end(),
            self.path.display(),
            reason
        )
    }
}

impl std::error::Error for WriteFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Writes through `kernel`, wrapping a failure with the path, value and errno.
pub fn write(kernel: &dyn Kernel, path: &Path, value: &str) -> Result<(), WriteFailure> {
    kernel
        .write_attr(path, value)
        .map_err(|source| WriteFailure {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// Symbolic name of the errnos sysfs writes return.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    let name = match Errno::from_raw(errno) {
        Errno::EPERM => "EPERM",
        Errno::ENOENT => "ENOENT",
        Errno::EIO => "EIO",
        Errno::ENXIO => "ENXIO",
        Errno::EAGAIN => "EAGAIN",
        Errno::ENOMEM => "ENOMEM",
        Errno::EACCES => "EACCES",
        Errno::EFAULT => "EFAULT",
        Errno::EBUSY => "EBUSY",
        Errno::EEXIST => "EEXIST",
        Errno::ENODEV => "ENODEV",
        Errno::EINVAL => "EINVAL",
        Errno::ENOSPC => "ENOSPC",
        Errno::EROFS => "EROFS",
        Errno::ENOSYS => "ENOSYS",
        Errno::EOPNOTSUPP => "EOPNOTSUPP",
        Errno::ETIMEDOUT => "ETIMEDOUT",
        _ => return None,
    };
    Some(name)
}
