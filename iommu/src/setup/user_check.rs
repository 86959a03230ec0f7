//! `host check --user USER`: what that user lacks to run a guest without privileges: read
//! and write access to `/dev/vfio/vfio`, to each device's `/dev/vfio/N` and to
//! `/dev/kvm`, an RLIMIT_MEMLOCK that covers the guest's RAM (VFIO pins all of it), and
//! taps made for it (creating one needs CAP_NET_ADMIN). Each finding says how to fix it.
//!
//! Access for the user running the check comes from access(2), which honours ACLs; for
//! another user it is worked out from the owner, group and mode bits (ACLs not read).
//! Another user's memlock limit is not knowable from here: limits.conf applies at login,
//! systemd's LimitMEMLOCK= to a unit, prlimit to one process. So it is read from a process
//! of that user when `--pid` names one, else the finding says how to set and verify it.

use std::os::unix::fs::MetadataExt;

use nix::unistd::{access, AccessFlags, Group};

use crate::bdf::Bdf;
use crate::size::format_size;
use crate::sysfs::Sysfs;

use super::finding::Finding;
use super::owner::{group_node, Account};
use super::Host;

/// tun's `tun_flags` bit for a multi-queue tap (`IFF_MULTI_QUEUE`).
const IFF_MULTI_QUEUE: u32 = 0x100;
/// `flags` bit of an interface that is up (`IFF_UP`).
const IFF_UP: u32 = 0x1;

/// What `host check --user` is asked about the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserOptions {
    /// The user the guest will run as.
    pub account: Account,
    /// A process of that user whose RLIMIT_MEMLOCK stands for the user's (`--pid`).
    pub pid: Option<u32>,
    /// Taps the guest will use (`--tap`).
    pub taps: Vec<String>,
}

/// The findings for `user` running a guest of `memory` bytes with `devices`.
pub fn check_user(
    host: &Host,
    user: &UserOptions,
    memory: Option<u64>,
    devices: &[Bdf],
) -> Vec<Finding> {
    let account = &user.account;
    let groups: Vec<String> = account.groups.iter().map(u32::to_string).collect();
    let mut findings = vec![Finding::ok(
        "user",
        format!(
            "{}: uid {}, groups {}",
            account.name,
            account.uid,
            groups.join(",")
        ),
    )];
    let myself = host.kernel.euid() == account.uid;
    findings.push(node(host, "/dev/vfio/vfio", account, myself, None));
    for bdf in devices {
        findings.push(match group_node(host, *bdf) {
            Ok((group, _)) => node(
                host,
                &format!("/dev/vfio/{group}"),
                account,
                myself,
                Some(*bdf),
            ),
            Err(e) => Finding::fail(
                format!("{bdf} node"),
                e.to_string(),
                format!(
                    "bind it first: `vfio-vmm host bind --owner {} {bdf}`",
                    account.name
                ),
            ),
        });
    }
    findings.push(node(host, "/dev/kvm", account, myself, None));
    findings.push(memlock(host, user, memory, myself));
    if !user.taps.is_empty() {
        findings.push(node(host, "/dev/net/tun", account, myself, None));
    }
    findings.extend(taps(&host.sysfs, user));
    findings
}

/// Whether `account` may open `rel` (under the host's root) for reading and writing.
fn node(host: &Host, rel: &str, account: &Account, myself: bool, bdf: Option<Bdf>) -> Finding {
    let path = host.sysfs.path(rel);
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) => {
            return Finding::fail(
                rel,
                format!("cannot stat {}: {e}", path.display()),
                missing_fix(rel, bdf, account),
            )
        }
    };
    let who = account.describe();
    let granted = if myself {
        access(&path, AccessFlags::R_OK | AccessFlags::W_OK).is_ok()
    } else {
        may_read_write(meta.uid(), meta.gid(), meta.mode(), account)
    };
    let facts = format!(
        "owner uid {}, group {}, mode {:04o}",
        meta.uid(),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    );
    if granted {
        return Finding::ok(rel, format!("{who} may read and write it ({facts})"));
    }
    let how = if myself {
        ""
    } else {
        " (from the mode bits; ACLs are not read)"
    };
    Finding::fail(
        rel,
        format!("{who} cannot read and write it: {facts}{how}"),
        denied_fix(rel, bdf, account, meta.gid(), meta.mode()),
    )
}

/// Linux's permission rule without ACLs: root passes; else the owner bits if the user owns
/// the file, else the group bits if it is in the file's group, else the other bits.
pub fn may_read_write(owner: u32, group: u32, mode: u32, account: &Account) -> bool {
    let bits = if account.uid == 0 {
        return true;
    } else if owner == account.uid {
        (mode >> 6) & 0o6
    } else if account.groups.contains(&group) || account.gid == group {
        (mode >> 3) & 0o6
    } else {
        mode & 0o6
    };
    bits == 0o6
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(gid.into()) {
        Ok(Some(group)) => format!("{} ({gid})", group.name),
        _ => gid.to_string(),
    }
}

fn missing_fix(rel: &str, bdf: Option<Bdf>, account: &Account) -> String {
    match (rel, bdf) {
        ("/dev/kvm", _) => {
            "enable VT-x/AMD-V (SVM) in the firmware setup and load kvm_intel or kvm_amd"
                .to_string()
        }
        ("/dev/net/tun", _) => "load the tun module (`modprobe tun`)".to_string(),
        (_, Some(bdf)) => format!(
            "bind the device: `vfio-vmm host bind --owner {} {bdf}` (as root)",
            account.name
        ),
        _ => "load vfio-pci (`modprobe vfio-pci`); `vfio-vmm host bind` does it".to_string(),
    }
}

fn denied_fix(rel: &str, bdf: Option<Bdf>, account: &Account, gid: u32, mode: u32) -> String {
    let name = &account.name;
    match (rel, bdf) {
        ("/dev/kvm", _) if gid != 0 && mode & 0o060 == 0o060 => format!(
            "add {name} to group {} (`usermod -aG {} {name}`, then log in again), or `setfacl -m u:{name}:rw /dev/kvm`",
            group_name(gid),
            Group::from_gid(gid.into()).ok().flatten().map_or_else(|| gid.to_string(), |g| g.name)
        ),
        ("/dev/kvm", _) => format!(
            "give /dev/kvm to a kvm group as udev's default rules do (`groupadd -r kvm; chgrp kvm /dev/kvm; chmod 0660 /dev/kvm`, \
             for good `KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\"` in /etc/udev/rules.d) and `usermod -aG kvm {name}`; or `setfacl -m u:{name}:rw /dev/kvm`"
        ),
        (_, Some(bdf)) => format!(
            "`vfio-vmm host bind --owner {name} {bdf}` (as root; chowns {rel} to {name}, mode 0600)"
        ),
        _ => format!("`chmod 0666 {rel}` (the kernel's default mode; a udev rule changed it)"),
    }
}

/// RLIMIT_MEMLOCK against the guest's RAM: this process's limit when the user is the one
/// running the check, a named process's limit with `--pid`, else how to set it.
fn memlock(host: &Host, user: &UserOptions, memory: Option<u64>, myself: bool) -> Finding {
    let account = &user.account;
    if account.uid == 0 {
        return Finding::ok(
            "memlock",
            "root has CAP_IPC_LOCK: RLIMIT_MEMLOCK does not limit pinned guest RAM",
        );
    }
    if let Some(pid) = user.pid {
        return memlock_of_pid(&host.sysfs, pid, account, memory);
    }
    if myself {
        return super::memlock::memlock(host, memory);
    }
    let kib = memory.map_or_else(|| "N".to_string(), |m| m.div_ceil(1024).to_string());
    let name = &account.name;
    Finding::warn(
        "memlock",
        format!(
            "{}'s RLIMIT_MEMLOCK is not knowable from here (it is set per session or service), and VFIO pins all {} of guest RAM against it",
            name,
            memory.map_or_else(|| "the".to_string(), format_size)
        ),
        format!(
            "give {name} at least {kib} KiB: `{name} - memlock {kib}` in /etc/security/limits.conf (next login), LimitMEMLOCK={kib}K in its systemd unit, \
             or `ulimit -l {kib}` / `prlimit --memlock={kib}K --pid PID` as root before dropping privileges; verify with \
             `vfio-vmm host check --user {name} --memory SIZE` run as {name}, or --pid PID of one of {name}'s processes"
        ),
    )
}

/// The soft RLIMIT_MEMLOCK of process `pid` (`ROOT/proc/PID/limits`), which must run as
/// `account`.
fn memlock_of_pid(sysfs: &Sysfs, pid: u32, account: &Account, memory: Option<u64>) -> Finding {
    let dir = sysfs.path(&format!("/proc/{pid}"));
    let read = |file: &str| std::fs::read_to_string(dir.join(file));
    let (limits, status) = match (read("limits"), read("status")) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(e), _) | (_, Err(e)) => {
            return Finding::fail(
                "memlock",
                format!("cannot read {}: {e}", dir.display()),
                "give the pid of a running process of that user (`pgrep -u USER`)",
            )
        }
    };
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid != Some(account.uid) {
        return Finding::fail(
            "memlock",
            format!("pid {pid} does not run as {}", account.describe()),
            format!(
                "give the pid of one of {}'s processes (`pgrep -u {}`)",
                account.name, account.name
            ),
        );
    }
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max locked memory"))
        .and_then(|v| v.split_whitespace().next());
    let limit = match soft {
        Some("unlimited") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                return Finding::fail(
                    "memlock",
                    format!("unexpected 'Max locked memory' in {}/limits", dir.display()),
                    "report this",
                )
            }
        },
        None => {
            return Finding::fail(
                "memlock",
                format!("no 'Max locked memory' line in {}/limits", dir.display()),
                "report this",
            )
        }
    };
    let whose = format!("pid {pid} ({})", account.name);
    match (limit, memory) {
        (None, _) => Finding::ok("memlock", format!("{whose}: RLIMIT_MEMLOCK is unlimited")),
        (Some(limit), Some(memory)) if limit < memory => Finding::fail(
            "memlock",
            format!("{whose}: RLIMIT_MEMLOCK is {}, below the {} of guest RAM VFIO pins", format_size(limit), format_size(memory)),
            format!("raise it to at least {} KiB (`prlimit --memlock={}K --pid {pid}`; limits.conf or LimitMEMLOCK= for good)", memory.div_ceil(1024), memory.div_ceil(1024)),
        ),
        (Some(limit), Some(memory)) => Finding::ok("memlock", format!("{whose}: RLIMIT_MEMLOCK {} covers {} of guest RAM", format_size(limit), format_size(memory))),
        (Some(limit), None) => Finding::ok("memlock", format!("{whose}: RLIMIT_MEMLOCK is {} (pass --memory SIZE to check a guest)", format_size(limit))),
    }
}

/// Taps: without CAP_NET_ADMIN the user cannot create one, only attach to one made for it
/// (`ip tuntap add ... user USER`), which must be up and single-queue.
fn taps(sysfs: &Sysfs, user: &UserOptions) -> Vec<Finding> {
    let name = &user.account.name;
    if user.taps.is_empty() {
        let message = if user.account.uid == 0 {
            "root may create taps (CAP_NET_ADMIN)".to_string()
        } else {
            format!("{name} cannot create taps (no CAP_NET_ADMIN): each `--net tap=NAME` must exist and belong to {name} (`ip tuntap add dev NAME mode tap user {name}`); pass --tap NAME to check one")
        };
        return vec![Finding::ok("tap", message)];
    }
    user.taps
        .iter()
        .map(|tap| one_tap(sysfs, tap, &user.account))
        .collect()
}

fn one_tap(sysfs: &Sysfs, tap: &str, account: &Account) -> Finding {
    let subject = format!("tap {tap}");
    let name = &account.name;
    let create =
        format!("as root: `ip tuntap add dev {tap} mode tap user {name} && ip link set {tap} up`");
    let dir = sysfs.path("/sys/class/net").join(tap);
    let attr = |file: &str| -> Option<i64> {
        let text = sysfs.read_optional(&dir.join(file)).ok().flatten()?;
        match text.strip_prefix("0x") {
            Some(hex) => i64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    };
    if !dir.exists() {
        if account.uid == 0 {
            return Finding::ok(
                subject,
                "does not exist; vfio-vmm creates it (root has CAP_NET_ADMIN)",
            );
        }
        return Finding::fail(
            subject,
            format!("does not exist, and {name} cannot create it without CAP_NET_ADMIN"),
            create,
        );
    }
    let Some(tun_flags) = attr("tun_flags") else {
        return Finding::fail(
            subject,
            "exists but is not a tun/tap interface (no tun_flags)",
            format!("pick another name, or delete it and {create}"),
        );
    };
    if tun_flags as u32 & IFF_MULTI_QUEUE != 0 {
        return Finding::fail(
            subject,
            "is a multi-queue tap; vfio-vmm attaches one queue, which the kernel refuses",
            format!("`ip tuntap del dev {tap} mode tap multi_queue`, then {create}"),
        );
    }
    let owner = attr("owner").unwrap_or(-1);
    let group = attr("group").unwrap_or(-1);
    let allowed = account.uid == 0
        || owner == i64::from(account.uid)
        || (group >= 0 && account.groups.iter().any(|g| i64::from(*g) == group));
    if !allowed {
        let whose = match (owner, group) {
            (-1, -1) => "has no owner or group, so only CAP_NET_ADMIN may attach to it".to_string(),
            _ => format!(
                "belongs to uid {owner}, group {group}, not to {}",
                account.describe()
            ),
        };
        return Finding::fail(
            subject,
            whose,
            format!("`ip tuntap del dev {tap} mode tap`, then {create}"),
        );
    }
    if attr("flags").is_some_and(|f| f as u32 & IFF_UP == 0) {
        return Finding::warn(
            subject,
            format!("usable by {name} but down; vfio-vmm cannot bring it up without CAP_NET_ADMIN"),
            format!("as root: `ip link set {tap} up`"),
        );
    }
    Finding::ok(
        subject,
        format!("usable by {name} (owner {owner}, group {group}) and up"),
    )
}
