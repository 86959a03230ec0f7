//! Why the VM stops: the one place vCPUs, devices and signal handlers report
//! an exit, and the main thread waits for it.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

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
    /// The control API stopped the VM (`vm.shutdown`, `vmm.shutdown`, ...).
    Api,
}

impl ExitReason {
    /// The process exit status: 0 for what the guest or the user asked for.
    pub fn status(&self) -> i32 {
        match self {
            ExitReason::PowerOff | ExitReason::Reset | ExitReason::Signal(_) | ExitReason::Api => 0,
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
            ExitReason::Api => "stopped through the control API".into(),
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

/// The handler's signature is the one `register_signal_handler` takes.
extern "C" fn on_stop_signal(
    num: std::ffi::c_int,
    _: *mut libc::siginfo_t,
    _: *mut std::ffi::c_void,
) {
    LAST_SIGNAL.store(num, Ordering::SeqCst);
    let fd = SIGNAL_EVENTFD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the handler's duplicate of the exit eventfd, which
        // stays open for the life of the process (see `catch_stop_signals`).
        let evt = unsafe { BorrowedFd::borrow_raw(fd) };
        // write(2) is async-signal-safe; a full counter already wakes the waiter.
        let _ = nix::unistd::write(evt, &1u64.to_ne_bytes());
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
        let fd = self.evt.try_clone()?.into_raw_fd();
        let old = SIGNAL_EVENTFD.swap(fd, Ordering::SeqCst);
        if old >= 0 {
            // `old` is the duplicate a previous call made and only the handler
            // used; closing it can fail only if it was closed already.
            let _ = nix::unistd::close(old);
        }
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            register_signal_handler(sig as i32, on_stop_signal)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(())
    }

    /// Blocks until something requests an exit, and says why.
    pub fn wait(&self) -> ExitReason {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            let sig = LAST_SIGNAL.load(Ordering::SeqCst);
            if sig != 0 {
                return ExitReason::Signal(sig);
            }
            // SAFETY: `self.evt` owns the descriptor and outlives this borrow.
            let evt = unsafe { BorrowedFd::borrow_raw(self.evt.as_raw_fd()) };
            // A failed or timed-out poll only means looking at the latch again.
            let _ = nix::poll::poll(
                &mut [PollFd::new(evt, PollFlags::POLLIN)],
                PollTimeout::from(1000u16),
            );
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
