//! Seccomp filters, one per kind of thread (`--seccomp true|false|log`): the
//! mode, the SIGSYS handler that reports a denied call, installing a
//! thread's filter at its start, and the spawner thread that starts threads
//! for filtered threads (a filter is inherited by the threads its thread
//! starts, so a vCPU that activates a virtio device must not be the parent
//! of the device's worker). The allow-lists live next to the code that
//! makes the calls: `vstate/seccomp.rs` (vCPUs), `devices/virtio/seccomp.rs`
//! (device workers), `devices/serial.rs` (stdin reader), `api/seccomp.rs`
//! (API threads), `vmm_list.rs` (the main thread and the control plane).

mod rules;
pub(crate) mod sigsys;
mod spawn;
mod vmm_list;

pub use vmm_list::vmm as control_plane;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use seccompiler::SeccompAction;

pub use rules::{base, epoll, ioctl_type, AllowList, FIONBIO};
pub use sigsys::STATUS as DENIED_STATUS;
pub use spawn::spawn;

/// What a filter does with a call its list does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// SIGSYS: the call is reported and vfio-vmm ends (status 159).
    #[default]
    #[value(name = "true")]
    Trap,
    /// No filters (the spelling Kata passes).
    #[value(name = "false")]
    Off,
    /// The call is allowed and logged by the kernel (SECCOMP_RET_LOG: dmesg or the audit log).
    Log,
}

/// The kinds of thread, each with its own allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread once the VM is built, the VM thread of API mode, and
    /// the spawner: they build and tear down VMs and start threads.
    Vmm,
    /// A vCPU: KVM_RUN and the device emulation its exits reach.
    Vcpu,
    /// The virtio-net worker.
    VirtioNet,
    /// The virtio-blk worker.
    VirtioBlk,
    /// The virtio-vsock worker.
    VirtioVsock,
    /// The virtio-rng worker.
    VirtioRng,
    /// The serial console's stdin reader.
    SerialIn,
    /// The API's accept loop.
    ApiAccept,
    /// An API connection (which may build and boot the VM: `vm.boot`).
    ApiConn,
    /// API mode's SIGINT/SIGTERM watcher.
    Signals,
}

impl ThreadKind {
    /// Every kind, for tests and the README's counts.
    pub const ALL: [ThreadKind; 10] = [
        ThreadKind::Vmm,
        ThreadKind::Vcpu,
        ThreadKind::VirtioNet,
        ThreadKind::VirtioBlk,
        ThreadKind::VirtioVsock,
        ThreadKind::VirtioRng,
        ThreadKind::SerialIn,
        ThreadKind::ApiAccept,
        ThreadKind::ApiConn,
        ThreadKind::Signals,
    ];
}

/// Errors while setting filters up.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// An allow-list did not compile to BPF.
    #[error("cannot build the seccomp filter of {0:?} threads: {1}")]
    Build(ThreadKind, seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of {0:?} threads: {1} (run with --seccomp false on a kernel without seccomp)")]
    Install(ThreadKind, seccompiler::Error),
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
    /// A filter was asked for before [`init`] gave the lists (a bug).
    #[error("no seccomp allow-lists for {0:?} threads: seccomp::init was not called first")]
    NoLists(ThreadKind),
    /// The spawner thread could not start.
    #[error("cannot start the thread spawner: {0}")]
    Spawner(std::io::Error),
}

/// The mode, set once by [`init`]: `Mode as u8`; `Off` until then.
static MODE: AtomicU8 = AtomicU8::new(Mode::Off as u8);

/// The mode [`init`] set.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        m if m == Mode::Trap as u8 => Mode::Trap,
        m if m == Mode::Log as u8 => Mode::Log,
        _ => Mode::Off,
    }
}

/// Which allow-list each kind of thread gets: given to [`init`] by the
/// caller (`crate::thread_filters::allowed`), because the lists live next to
/// the code that makes the calls, in modules that themselves start threads
/// through this one.
pub type Lists = fn(ThreadKind) -> AllowList;

/// The lists [`init`] was given.
static LISTS: OnceLock<Lists> = OnceLock::new();

/// Sets the mode for the process and the allow-list of each thread kind;
/// with filters on, installs the SIGSYS handler and starts the spawner.
/// Call it once, before any other thread.
pub fn init(mode: Mode, lists: Lists) -> Result<(), SeccompError> {
    let _ = LISTS.set(lists);
    MODE.store(mode as u8, Ordering::Release);
    match mode {
        Mode::Off => {
            log::info!("--seccomp false: no seccomp filters");
            return Ok(());
        }
        Mode::Trap => log::info!("--seccomp true: a seccomp filter per thread"),
        Mode::Log => log::info!("--seccomp log: denied calls are allowed and logged by the kernel"),
    }
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, sigsys::on_sigsys)
        .map_err(|e| SeccompError::Handler(std::io::Error::from_raw_os_error(e.errno())))?;
    spawn::start().map_err(SeccompError::Spawner)
}

/// Installs the filter of `kind` on the calling thread (nothing with
/// `--seccomp false`). Filters stack: a thread started by a filtered one
/// keeps its parent's filter under its own.
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    let denied = match mode() {
        Mode::Off => return Ok(()),
        Mode::Trap => SeccompAction::Trap,
        Mode::Log => SeccompAction::Log,
    };
    let Some(lists) = LISTS.get() else {
        return Err(SeccompError::NoLists(kind));
    };
    let program = lists(kind)
        .compile(denied)
        .map_err(|e| SeccompError::Build(kind, e))?;
    sigsys::remember_thread_name(std::thread::current().name().unwrap_or("?"));
    seccompiler::apply_filter(&program).map_err(|e| SeccompError::Install(kind, e))?;
    log::debug!("seccomp: {kind:?} filter installed");
    Ok(())
}

/// [`install`] at the start of a thread that must not run unfiltered: if
/// the filter cannot be installed, says why and ends the process (the kernel
/// releases devices and memory as at any exit).
pub fn enter(kind: ThreadKind) {
    if let Err(e) = install(kind) {
        eprintln!("vfio-vmm: error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests;
