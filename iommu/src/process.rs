//! Processes on the host, as the VFIO runtime and the admin tooling both need them: this
//! process's facts (effective user, soft RLIMIT_MEMLOCK) and the processes holding a
//! device's VFIO files open.
//!
//! In use: a running vfio-vmm holds `/dev/vfio/GROUP` (legacy group API) or
//! `/dev/vfio/devices/vfioN` (iommufd device API) open for as long as the guest runs.
//! [`holders`] finds such processes by reading the `ROOT/proc/PID/fd/*` links, which needs
//! no cooperation from the VMM and cannot go stale the way a lock file can.

use std::fs;
use std::path::Path;

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
use nix::unistd::geteuid;

use crate::bdf::Bdf;
use crate::sysfs::Sysfs;

/// Effective user ID of this process.
pub fn euid() -> u32 {
    geteuid().as_raw()
}

/// Soft RLIMIT_MEMLOCK of this process in bytes; `None` when unlimited.
pub fn memlock_limit() -> Option<u64> {
    // getrlimit cannot fail for a valid resource; treat a failure as "no limit known"
    // rather than inventing one.
    let (soft, _hard) = getrlimit(Resource::RLIMIT_MEMLOCK).ok()?;
    (soft != RLIM_INFINITY).then_some(soft)
}

/// A process holding a device's VFIO file open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process ID.
    pub pid: u32,
    /// Its command name (`comm`), or `?` if unreadable.
    pub command: String,
    /// The VFIO file it holds open.
    pub file: String,
}

/// The VFIO files of `bdf`: its group node (`/dev/vfio/GROUP`) and its VFIO device cdevs.
fn vfio_files(sysfs: &Sysfs, bdf: Bdf, group: Option<u32>) -> Vec<String> {
    let mut files: Vec<String> = group
        .map(|g| format!("/dev/vfio/{g}"))
        .into_iter()
        .collect();
    if let Ok(cdevs) = sysfs.list_dir(&sysfs.device_dir(bdf).join("vfio-dev")) {
        files.extend(cdevs.into_iter().map(|c| format!("/dev/vfio/devices/{c}")));
    }
    files
}

/// The first of `files` that process directory `pid_dir` (`ROOT/proc/PID`) has open.
fn open_file_of<'a>(pid_dir: &Path, files: &'a [String]) -> Option<&'a String> {
    let fds = fs::read_dir(pid_dir.join("fd")).ok()?;
    fds.flatten().find_map(|fd| {
        let target = fs::read_link(fd.path()).ok()?;
        let target = target.to_string_lossy();
        files.iter().find(|f| **f == target)
    })
}

/// Processes holding `bdf`'s VFIO group (`/dev/vfio/GROUP`) or VFIO device cdev open.
/// Processes whose descriptors cannot be read (exited, or another user's when not root)
/// are skipped.
pub fn holders(sysfs: &Sysfs, bdf: Bdf, group: Option<u32>) -> Vec<Holder> {
    let files = vfio_files(sysfs, bdf, group);
    if files.is_empty() {
        return Vec::new();
    }
    let proc_dir = sysfs.path("/proc");
    let pids: Vec<u32> = match sysfs.list_dir(&proc_dir) {
        Ok(names) => names.iter().filter_map(|n| n.parse().ok()).collect(),
        Err(_) => return Vec::new(),
    };
    let mut found = Vec::new();
    for pid in pids {
        let pid_dir = proc_dir.join(pid.to_string());
        if let Some(file) = open_file_of(&pid_dir, &files) {
            let command = fs::read_to_string(pid_dir.join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|_| "?".to_string());
            found.push(Holder {
                pid,
                command,
                file: file.clone(),
            });
        }
    }
    found
}
