//! The memlock finding for the process that checks: VFIO pins all guest RAM
//! and charges it to RLIMIT_MEMLOCK. `host check` reports it for whoever runs
//! it, and `host check --user` for the user itself when that user runs it.

use super::finding::Finding;
use super::Host;
use crate::size::format_size;

/// VFIO pins all guest RAM and charges it to RLIMIT_MEMLOCK unless the process has
/// CAP_IPC_LOCK (root does).
pub(super) fn memlock(host: &Host, memory: Option<u64>) -> Finding {
    let subject = "memlock";
    if host.kernel.euid() == 0 {
        return Finding::ok(
            subject,
            "running as root: CAP_IPC_LOCK lifts RLIMIT_MEMLOCK for pinned guest RAM",
        );
    }
    let raise = "raise RLIMIT_MEMLOCK for the user running vfio-vmm (`memlock` in /etc/security/limits.conf, LimitMEMLOCK= in a systemd unit, `ulimit -l`), or run vfio-vmm as root";
    let Some(limit) = host.kernel.memlock_limit() else {
        return Finding::ok(subject, "RLIMIT_MEMLOCK is unlimited");
    };
    match memory {
        Some(memory) if limit >= memory => Finding::ok(
            subject,
            format!(
                "RLIMIT_MEMLOCK {} covers {} of guest RAM",
                format_size(limit),
                format_size(memory)
            ),
        ),
        Some(memory) => Finding::fail(
            subject,
            format!(
                "RLIMIT_MEMLOCK is {}, below the {} of guest RAM VFIO pins",
                format_size(limit),
                format_size(memory)
            ),
            raise,
        ),
        None if limit < 1 << 30 => Finding::warn(
            subject,
            format!(
                "RLIMIT_MEMLOCK is {}: VFIO pins all guest RAM, so larger guests fail",
                format_size(limit)
            ),
            format!("{raise}; pass --memory SIZE to check a given guest"),
        ),
        None => Finding::ok(
            subject,
            format!(
                "RLIMIT_MEMLOCK is {} (pass --memory SIZE to check a guest)",
                format_size(limit)
            ),
        ),
    }
}
