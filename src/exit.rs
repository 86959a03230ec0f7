//! Why the VM stops: the one place vCPUs, devices and signal handlers report
//! an exit, and the main thread waits for it.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::register_signal_handler;

/// Why the guest stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest rebooted (ACPI reset register or i8042 reset line).
    Reset,
    /// A vCPU triple-faulted.
    TripleFault(u8),
    /// The guest kernel printed a panic.
    GuestPanic,
    /// A vCPU failed in a way the VMM cannot continue from.
    VcpuError(u8, String),
    /// SIGINT or SIGTERM asked us to stop.
    Signal(i32),
}

impl ExitReason {
    /// The process exit status: 0 for what the guest or the user asked for.
    pub fn status(&self) -> i32 {
        match self {
            ExitReason::PowerOff | ExitReason::Reset | ExitReason::Signal(_) => 0,
            _ => 1,
        }
    }

    /// A one-line description for the user.
    pub fn describe(&self) -> String {
        match self {
            ExitReason::PowerOff => "guest powered off".into(),
            ExitReason::Reset => "guest rebooted".into(),
            ExitReason::TripleFault(cpu) => format!("guest triple-faulted on vCPU {cpu} (the guest kernel crashed before it could report why)"),
            ExitReason::GuestPanic => "guest kernel panicked (see its console output above)".into(),
            ExitReason::VcpuError(cpu, e) => format!("vCPU {cpu} stopped: {e}"),
            ExitReason::Signal(sig) => format!("stopped by signal {sig}"),
        }
    }
}

/// The shared exit latch: the first reason wins.
pub struct ExitHandle {
    evt: EventFd,
    reason: Mutex<Option<ExitReason>>,
}

/// Eventfd the signal handler writes to (-1 until installed).
static SIGNAL_EVENTFD: AtomicI32 = AtomicI32::new(-1);
/// The last SIGINT/SIGTERM received.
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(num: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    LAST_SIGNAL.store(num, Ordering::SeqCst);
    let fd = SIGNAL_EVENTFD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; `one` is 8 valid bytes and
        // `fd` is the exit eventfd, which lives as long as the process.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

impl ExitHandle {
    /// A new, unset latch.
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitHandle {
            evt: EventFd::new(EFD_NONBLOCK)?,
            reason: Mutex::new(None),
        })
    }

    /// Records `reason` unless one is recorded already, and wakes the waiter.
    pub fn request(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        // A full eventfd counter already wakes the waiter, so an error here changes nothing.
        let _ = self.evt.write(1);
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Routes SIGINT and SIGTERM to this latch. The handler writes to its own
    /// duplicate of the eventfd, kept open for the life of the process, so a
    /// signal arriving after this handle is gone writes to nothing that was reused.
    pub fn catch_stop_signals(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: dup only reads the descriptor, which `self.evt` keeps open.
        let fd = unsafe { libc::dup(self.evt.as_raw_fd()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let old = SIGNAL_EVENTFD.swap(fd, Ordering::SeqCst);
        if old >= 0 {
            // SAFETY: `old` is the duplicate a previous call made; only the handler used it.
            unsafe { libc::close(old) };
        }
        for sig in [libc::SIGINT, libc::SIGTERM] {
            register_signal_handler(sig, on_stop_signal)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(())
    }

    /// Blocks until something requests an exit, and says why.
    pub fn wait(&self) -> ExitReason {
        use std::os::fd::AsRawFd;
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            let sig = LAST_SIGNAL.load(Ordering::SeqCst);
            if sig != 0 {
                return ExitReason::Signal(sig);
            }
            let mut pfd = libc::pollfd {
                fd: self.evt.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, 1000) };
            let _ = self.evt.read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_sets_the_status() {
        let h = ExitHandle::new().unwrap();
        h.request(ExitReason::GuestPanic);
        h.request(ExitReason::PowerOff);
        assert_eq!(h.wait(), ExitReason::GuestPanic);
        assert_eq!(ExitReason::GuestPanic.status(), 1);
        assert_eq!(ExitReason::PowerOff.status(), 0);
        assert!(ExitReason::TripleFault(1).describe().contains("vCPU 1"));
    }

    #[test]
    fn a_request_from_another_thread_wakes_the_waiter() {
        let h = std::sync::Arc::new(ExitHandle::new().unwrap());
        let h2 = h.clone();
        let t = std::thread::spawn(move || h2.request(ExitReason::Reset));
        assert_eq!(h.wait(), ExitReason::Reset);
        t.join().unwrap();
    }
}
