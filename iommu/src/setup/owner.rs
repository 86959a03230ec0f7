//! Unprivileged use of assigned devices: the [`Account`] a guest will run as (from a
//! name or a uid, with its groups) and `host bind --owner USER`, which hands each bound
//! device's group node `/dev/vfio/N` to that account, owner read/write only (mode 0600),
//! as libvirt does for the qemu user. The ownership lasts until the node is made again
//! (the device leaves vfio-pci, or a reboot); a udev rule makes it permanent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::{chown, getgrouplist, Gid, Uid, User};

use crate::bdf::Bdf;
use crate::sysfs::SysfsError;

use super::Host;

/// How long `--owner` waits for devtmpfs/udev to create `/dev/vfio/N` after a bind.
const NODE_WAIT: Duration = Duration::from_secs(5);

/// Why an account could not be resolved or a node not handed over.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// No such user in the password database.
    #[error("unknown user {0:?}: give an existing user name or numeric uid (`getent passwd NAME` lists it; create it with `useradd`)")]
    UnknownUser(String),
    /// The password database could not be read.
    #[error("cannot look up user {name:?}: {source}")]
    Lookup {
        /// What was looked up.
        name: String,
        /// The error from the C library.
        source: nix::Error,
    },
    /// `host bind --owner` as a user other than root.
    #[error("`vfio-vmm host bind --owner` changes the owner of /dev/vfio nodes and must run as root (effective uid is {0}); re-run it with sudo")]
    NotRoot(u32),
    /// The device's group could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The device has no IOMMU group, hence no node.
    #[error("{0} has no IOMMU group, so there is no /dev/vfio node to hand over; `vfio-vmm host check` says why")]
    NoGroup(Bdf),
    /// The node did not appear after the bind.
    #[error("{} did not appear within {}s of binding {bdf}; check that udev is running and `dmesg | tail` for vfio errors", .path.display(), NODE_WAIT.as_secs())]
    NoNode {
        /// The device.
        bdf: Bdf,
        /// The node waited for.
        path: PathBuf,
    },
    /// chown or chmod failed.
    #[error("cannot give {} to {user}: {source}", .path.display())]
    Chown {
        /// The node.
        path: PathBuf,
        /// `NAME (uid N)`.
        user: String,
        /// The error from the kernel.
        source: std::io::Error,
    },
}

/// A user a guest runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Every group the user is in (primary and supplementary), as at login.
    pub groups: Vec<u32>,
}

impl Account {
    /// Resolves `user`, a name or a numeric uid, through the password and group databases.
    pub fn resolve(user: &str) -> Result<Account, OwnerError> {
        let lookup = |source| OwnerError::Lookup {
            name: user.to_string(),
            source,
        };
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(lookup)?,
            Err(_) => User::from_name(user).map_err(lookup)?,
        };
        let found = found.ok_or_else(|| OwnerError::UnknownUser(user.to_string()))?;
        let name = std::ffi::CString::new(found.name.clone())
            .map_err(|_| OwnerError::UnknownUser(user.to_string()))?;
        let groups = getgrouplist(&name, found.gid)
            .map_err(lookup)?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(Account {
            name: found.name,
            uid: found.uid.as_raw(),
            gid: found.gid.as_raw(),
            groups,
        })
    }

    /// `NAME (uid N)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} (uid {})", self.name, self.uid)
    }
}

/// The group node of `bdf` under the host's root: `/dev/vfio/N`.
pub fn group_node(host: &Host, bdf: Bdf) -> Result<(u32, PathBuf), OwnerError> {
    let group = host.sysfs.group_of(bdf)?.ok_or(OwnerError::NoGroup(bdf))?;
    Ok((group, host.sysfs.path(&format!("/dev/vfio/{group}"))))
}

/// Gives the group node of each of `bdfs` (already on vfio-pci) to `account`: owner
/// `account`, group unchanged, mode 0600. Returns the nodes changed, once each.
pub fn give_nodes(
    host: &Host,
    bdfs: &[Bdf],
    account: &Account,
) -> Result<Vec<PathBuf>, OwnerError> {
    let euid = host.kernel.euid();
    if euid != 0 {
        return Err(OwnerError::NotRoot(euid));
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for &bdf in bdfs {
        let (_, path) = group_node(host, bdf)?;
        if done.contains(&path) {
            continue;
        }
        wait_for(&path, bdf)?;
        give(&path, account)?;
        done.push(path);
    }
    Ok(done)
}

/// Waits until `path` exists: devtmpfs makes the node as vfio-pci registers the group,
/// but udev may recreate it a moment later.
fn wait_for(path: &Path, bdf: Bdf) -> Result<(), OwnerError> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > NODE_WAIT {
            return Err(OwnerError::NoNode {
                bdf,
                path: path.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// chown `account` (group kept) and chmod 0600.
pub fn give(path: &Path, account: &Account) -> Result<(), OwnerError> {
    let fail = |source: std::io::Error| OwnerError::Chown {
        path: path.to_path_buf(),
        user: account.describe(),
        source,
    };
    chown(path, Some(Uid::from_raw(account.uid)), None).map_err(|e| fail(e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)
}
