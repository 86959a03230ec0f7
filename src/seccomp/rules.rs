//! Building blocks of the allow-lists: a list of allowed system calls, some
//! of them only with given arguments (ioctl request numbers, socket
//! families), the calls every thread makes (memory, locks, logging, thread
//! exit, the SIGSYS report), and turning a list into a BPF program with
//! seccompiler.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The allowed calls of one thread kind: syscall number → conditions (no
/// conditions: any arguments).
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    calls: BTreeMap<i64, Vec<SeccompRule>>,
    /// Calls allowed only with some arguments (kept apart so that a plain
    /// allowance of the same call wins).
    limited: BTreeMap<i64, Vec<SeccompRule>>,
}

impl AllowList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows each call in `calls` with any arguments.
    pub fn calls(mut self, calls: &[i64]) -> Self {
        for &nr in calls {
            self.calls.insert(nr, Vec::new());
            self.limited.remove(&nr);
        }
        self
    }

    /// Allows `ioctl` with each of these request numbers.
    pub fn ioctls(self, requests: &[u64]) -> Self {
        let rules = requests.iter().map(|&r| arg_is(1, r)).collect();
        self.limited(libc::SYS_ioctl, rules)
    }

    /// Allows `ioctl` with any request of these types (the `_IOC_TYPE` byte:
    /// 0xAE for KVM, b';' for VFIO, b'T' for TUN and terminals, ...).
    pub fn ioctl_types(self, types: &[u8]) -> Self {
        let rules = types
            .iter()
            .map(|&t| masked(1, 0xff00, u64::from(t) << 8))
            .collect();
        self.limited(libc::SYS_ioctl, rules)
    }

    /// Allows `socket` for these address families only.
    pub fn socket_families(self, families: &[i32]) -> Self {
        let rules = families.iter().map(|&f| arg_is(0, f as u64)).collect();
        self.limited(libc::SYS_socket, rules)
    }

    /// Allows `call` when its argument `index` is `value`.
    pub fn call_with(self, call: i64, index: u8, values: &[u64]) -> Self {
        let rules = values.iter().map(|&v| arg_is(index, v)).collect();
        self.limited(call, rules)
    }

    /// Everything `other` allows, too.
    pub fn with(mut self, other: &AllowList) -> Self {
        for (&nr, rules) in &other.limited {
            self = self.limited(nr, rules.clone());
        }
        let plain: Vec<i64> = other.calls.keys().copied().collect();
        self.calls(&plain)
    }

    fn limited(mut self, call: i64, rules: Vec<SeccompRule>) -> Self {
        if !self.calls.contains_key(&call) {
            self.limited.entry(call).or_default().extend(rules);
        }
        self
    }

    /// How many system calls the list names.
    pub fn len(&self) -> usize {
        self.calls.len() + self.limited.len()
    }

    /// Whether the list names no call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `call` is allowed with some arguments.
    pub fn names(&self, call: i64) -> bool {
        self.calls.contains_key(&call) || self.limited.contains_key(&call)
    }

    /// The BPF program: allowed calls pass, anything else takes `denied`.
    pub fn compile(&self, denied: SeccompAction) -> Result<BpfProgram, seccompiler::BackendError> {
        let mut rules = self.calls.clone();
        rules.extend(self.limited.clone());
        let arch = std::env::consts::ARCH
            .try_into()
            .map_err(|_| seccompiler::BackendError::InvalidTargetArch(ARCH_MSG.into()))?;
        SeccompFilter::new(rules, denied, SeccompAction::Allow, arch)?.try_into()
    }
}

const ARCH_MSG: &str = "seccomp filters are built for x86_64 only";

/// A rule: argument `index` (32 bits) equals `value`.
fn arg_is(index: u8, value: u64) -> SeccompRule {
    masked(index, 0xffff_ffff, value)
}

/// A rule: argument `index`'s low 32 bits masked with `mask` equal `value`.
fn masked(index: u8, mask: u64, value: u64) -> SeccompRule {
    // Both only fail on an argument index above 5.
    let cond = SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
    .expect("argument index below 6");
    SeccompRule::new(vec![cond]).expect("one condition")
}

/// What every thread does: allocate and free memory, take locks, log to
/// stderr (or `--log-file`), sleep, read the clock, get random hash keys, end
/// itself, and report a denied call from the SIGSYS handler (write, exit_group).
pub fn base() -> AllowList {
    AllowList::new().calls(&[
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_getrandom,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ])
}

/// Waiting on eventfds and other descriptors with an epoll set.
pub fn epoll() -> AllowList {
    AllowList::new().calls(&[
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_read,
    ])
}

/// The `_IOC_TYPE` byte of an ioctl request number.
pub mod ioctl_type {
    /// KVM (`KVMIO`).
    pub const KVM: u8 = 0xae;
    /// VFIO (`VFIO_TYPE`, ';').
    pub const VFIO: u8 = b';';
    /// TUN/TAP and terminals (TUNSETIFF, TCGETS, FIONBIO: 'T').
    pub const TTY_TUN: u8 = b'T';
    /// Network interface ioctls (SIOCGIFFLAGS, ...: 0x89).
    pub const SOCKIOS: u8 = 0x89;
    /// Block devices (BLKGETSIZE64, BLKSSZGET, BLKDISCARD: 0x12).
    pub const BLOCK: u8 = 0x12;
}

/// `FIONBIO`: std's `set_nonblocking` on sockets.
pub const FIONBIO: u64 = libc::FIONBIO;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_allowance_wins_over_a_limited_one() {
        let list = AllowList::new()
            .ioctls(&[1])
            .calls(&[libc::SYS_ioctl])
            .ioctls(&[2]);
        assert_eq!(list.len(), 1);
        assert!(list.calls[&libc::SYS_ioctl].is_empty());
        assert!(list.limited.is_empty());
        let merged = base().with(&list);
        assert!(merged.names(libc::SYS_ioctl) && merged.names(libc::SYS_futex));
        assert!(merged.compile(SeccompAction::Trap).is_ok());
    }
}
