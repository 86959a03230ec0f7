//! Whether this process may pin all guest RAM. VFIO type1 charges every
//! DMA-mapped page to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK,
//! and fails the mapping half way otherwise; checking first gives a clear
//! error before the guest starts.

use crate::process::memlock_limit;
use crate::size::format_size;

/// CAP_IPC_LOCK's bit in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// Guest RAM cannot be pinned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemlockError {
    /// The limit is below the RAM VFIO must pin.
    #[error(
        "VFIO must pin all {} of guest RAM but RLIMIT_MEMLOCK is {}: raise it to at least {} KiB \
         (`ulimit -l {}` in the shell that starts vfio-vmm, `memlock` in /etc/security/limits.conf, \
         or LimitMEMLOCK={} in a systemd unit), or run vfio-vmm as root (CAP_IPC_LOCK)",
        format_size(*needed), format_size(*limit), needed.div_ceil(1024), needed.div_ceil(1024), needed
    )]
    TooLow {
        /// Bytes that must be pinned.
        needed: u64,
        /// The soft limit in bytes.
        limit: u64,
    },
}

/// Decides from the facts: `limit` is the soft RLIMIT_MEMLOCK (`None`:
/// unlimited), `ipc_lock` whether the process has CAP_IPC_LOCK.
pub fn evaluate(needed: u64, limit: Option<u64>, ipc_lock: bool) -> Result<(), MemlockError> {
    match limit {
        Some(limit) if !ipc_lock && limit < needed => Err(MemlockError::TooLow { needed, limit }),
        _ => Ok(()),
    }
}

/// Whether the effective capability set in `/proc/self/status` text holds CAP_IPC_LOCK.
pub fn status_has_ipc_lock(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Checks that this process can pin `needed` bytes of guest RAM.
pub fn check(needed: u64) -> Result<(), MemlockError> {
    let ipc_lock =
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| status_has_ipc_lock(&s));
    evaluate(needed, memlock_limit(), ipc_lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_limit_says_how_much_and_how_to_raise_it() {
        let err = evaluate(1 << 30, Some(8 << 20), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 GiB of guest RAM"), "{err}");
        assert!(err.contains("RLIMIT_MEMLOCK is 8 MiB"), "{err}");
        assert!(err.contains("ulimit -l 1048576"), "{err}");
    }

    #[test]
    fn enough_limit_unlimited_or_cap_ipc_lock_pass() {
        assert!(evaluate(1 << 30, Some(1 << 30), false).is_ok());
        assert!(evaluate(1 << 30, None, false).is_ok());
        assert!(evaluate(1 << 30, Some(0), true).is_ok());
    }

    #[test]
    fn cap_ipc_lock_is_read_from_cap_eff() {
        assert!(status_has_ipc_lock("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(!status_has_ipc_lock("CapEff:\t0000000000000000\n"));
        assert!(!status_has_ipc_lock("CapPrm:\t0000000000004000\n"));
    }
}
