//! The vCPUs' run gate: `vm.pause` parks every vCPU thread outside KVM_RUN
//! (kicked out of it with the kick signal) until `vm.resume`; [`RunGate::stop`]
//! releases parked threads for good, so a VM torn down while paused does
//! not hang. Written here: no rust-vmm crate parks vCPU threads (each VMM
//! keeps its own pause logic).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a vCPU that has not parked yet is kicked again (a kick that
/// lands just before it enters KVM_RUN is lost).
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// Why a pause or resume was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The VM is being torn down.
    #[error("the vCPUs are stopping: the VM is being torn down")]
    Stopped,
    /// `vm.pause` twice.
    #[error("the VM is already paused")]
    AlreadyPaused,
    /// `vm.resume` without a pause.
    #[error("the VM is not paused")]
    NotPaused,
    /// Some vCPUs did not leave KVM_RUN in time; the pause was undone.
    #[error("{0} vCPU(s) did not leave KVM_RUN within {1:?}: the VM keeps running")]
    Timeout(usize, Duration),
}

/// A vCPU thread inside its run loop.
struct Member {
    thread: libc::pthread_t,
    parked: bool,
}

#[derive(Default)]
struct GateState {
    paused: bool,
    stopped: bool,
    /// By vCPU id.
    members: BTreeMap<u8, Member>,
}

/// Shared by the vCPU threads and whoever pauses, resumes or stops them.
#[derive(Default)]
pub struct RunGate {
    /// Paused or stopped: the run loop's lock-free check.
    attention: AtomicBool,
    state: Mutex<GateState>,
    changed: Condvar,
}

/// A vCPU's membership, from its run loop's start to its end.
pub struct Membership<'a> {
    gate: &'a RunGate,
    id: u8,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.gate.lock().members.remove(&self.id);
        self.gate.changed.notify_all();
    }
}

impl RunGate {
    /// An open gate.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, GateState>, t: Duration) -> MutexGuard<'a, GateState> {
        match self.changed.wait_timeout(g, t) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// Called by vCPU `id`'s thread as its run loop starts; the thread
    /// stays kickable until the returned membership drops.
    pub fn enter(&self, id: u8) -> Membership<'_> {
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        let member = Member {
            thread,
            parked: false,
        };
        self.lock().members.insert(id, member);
        Membership { gate: self, id }
    }

    /// Called by vCPU `id` before each KVM_RUN: parks while paused; false
    /// once the gate is stopped (the run loop ends).
    pub fn checkpoint(&self, id: u8) -> bool {
        if !self.attention.load(Ordering::Acquire) {
            return true;
        }
        let mut g = self.lock();
        loop {
            if g.stopped {
                return false;
            }
            let paused = g.paused;
            if let Some(m) = g.members.get_mut(&id) {
                m.parked = paused;
            }
            if !paused {
                return true;
            }
            self.changed.notify_all();
            g = self.wait(g, Duration::from_secs(1));
        }
    }

    /// Parks every vCPU: kicks each one out of KVM_RUN with `signal` (whose
    /// handler must be installed) until all are parked; gives up, undoing
    /// the pause, after `timeout`.
    pub fn pause(&self, signal: libc::c_int, timeout: Duration) -> Result<(), GateError> {
        let mut g = self.lock();
        if g.stopped {
            return Err(GateError::Stopped);
        }
        if g.paused {
            return Err(GateError::AlreadyPaused);
        }
        g.paused = true;
        self.attention.store(true, Ordering::Release);
        let start = Instant::now();
        loop {
            let running: Vec<_> = g.members.values().filter(|m| !m.parked).collect();
            if running.is_empty() {
                return Ok(());
            }
            if g.stopped {
                return Err(GateError::Stopped);
            }
            if start.elapsed() > timeout {
                let n = running.len();
                g.paused = false;
                self.attention.store(g.stopped, Ordering::Release);
                self.changed.notify_all();
                return Err(GateError::Timeout(n, timeout));
            }
            for m in running {
                // SAFETY: a member's thread is alive: it removes itself from
                // `members` under this lock (held here) before it ends. The
                // signal's handler only interrupts KVM_RUN.
                unsafe { libc::pthread_kill(m.thread, signal) };
            }
            g = self.wait(g, KICK_INTERVAL);
        }
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) -> Result<(), GateError> {
        let mut g = self.lock();
        if !g.paused {
            return Err(GateError::NotPaused);
        }
        g.paused = false;
        self.attention.store(g.stopped, Ordering::Release);
        self.changed.notify_all();
        Ok(())
    }

    /// Whether a pause is in force.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Ends every run loop at its next checkpoint, parked ones at once
    /// (threads still in KVM_RUN need their kick as well).
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.attention.store(true, Ordering::Release);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

    extern "C" fn nothing(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

    /// `n` threads that count while the gate lets them through.
    fn counters(gate: &Arc<RunGate>, n: u8) -> (Arc<AtomicU64>, Vec<std::thread::JoinHandle<()>>) {
        register_signal_handler(SIGRTMIN(), nothing).unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|id| {
                let (gate, count) = (gate.clone(), count.clone());
                std::thread::spawn(move || {
                    let _member = gate.enter(id);
                    while gate.checkpoint(id) {
                        count.fetch_add(1, Ordering::Relaxed);
                        // Stands for KVM_RUN: a sleep the kick interrupts.
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        (count, threads)
    }

    #[test]
    fn a_paused_gate_stops_progress_until_resume() {
        let gate = Arc::new(RunGate::new());
        let (count, threads) = counters(&gate, 3);
        while count.load(Ordering::Relaxed) < 30 {
            std::thread::yield_now();
        }
        gate.pause(SIGRTMIN(), Duration::from_secs(10)).unwrap();
        assert!(gate.is_paused());
        let frozen = count.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.load(Ordering::Relaxed), frozen);
        assert_eq!(
            gate.pause(SIGRTMIN(), Duration::from_secs(1)),
            Err(GateError::AlreadyPaused)
        );
        gate.resume().unwrap();
        assert_eq!(gate.resume(), Err(GateError::NotPaused));
        while count.load(Ordering::Relaxed) <= frozen {
            std::thread::yield_now();
        }
        gate.stop();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn stop_releases_parked_threads() {
        let gate = Arc::new(RunGate::new());
        let (_count, threads) = counters(&gate, 2);
        gate.pause(SIGRTMIN(), Duration::from_secs(10)).unwrap();
        gate.stop();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(
            gate.pause(SIGRTMIN(), Duration::from_secs(1)),
            Err(GateError::Stopped)
        );
    }
}
