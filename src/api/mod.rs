//! The control API: cloud-hypervisor's REST API (`/api/v1/...`, HTTP/1.1 on
//! a UNIX socket, its names, JSON bodies and status codes), so that
//! orchestrators that drive cloud-hypervisor (Kata Containers, libvirt's ch
//! driver) can drive vfio-vmm, and the `vfio-vmm remote` client.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`serve`]: the process's main loop in API mode |
//! | `http.rs` | requests and responses on a stream, descriptors passed with SCM_RIGHTS |
//! | `server.rs` | the socket (mode 0600, stale/live), connection threads, limits |
//! | `routes.rs` | the endpoint table and status codes |
//! | `state.rs` | the VM's states, cold-plug, the [`state::Backend`] trait |
//! | `backend.rs` | the production backend: `builder::build`, `Machine::run` on a thread |
//! | `client.rs` | `vfio-vmm remote`: one request, the answer printed |

pub mod backend;
pub mod client;
pub mod http;
pub mod routes;
pub mod seccomp;
pub mod server;
pub mod state;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use crate::config::VmConfig;
use crate::exit::{ExitHandle, ExitReason};
use http::Limits;
use routes::Api;
use server::{Server, ServerError};
use state::{Backend, Controller, Event, StateError};

/// Why API mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be set up.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The VM given on the command line could not be created or booted.
    #[error("{0}")]
    Boot(#[from] StateError),
    /// The main thread's seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The signal handlers could not be installed.
    #[error("cannot catch SIGINT/SIGTERM: {0}")]
    Signals(std::io::Error),
}

/// Serves the API on `socket` until `vmm.shutdown`, a signal, or the VM's
/// end (a reboot boots it again); with `config`, that VM is created and
/// booted first. Tears the VM down and returns the process exit status.
pub fn serve(
    socket: &Path,
    config: Option<VmConfig>,
    backend: Box<dyn Backend>,
    limits: Limits,
) -> Result<i32, ApiError> {
    crate::seccomp::install(crate::seccomp::ThreadKind::Vmm)?;
    let (tx, rx) = mpsc::channel();
    watch_signals(tx.clone())?;
    let mut controller = Controller::new(backend, tx.clone());
    if let Some(config) = config {
        controller.create(&config.to_json())?;
        controller.boot()?;
    }
    let api = Arc::new(Api::new(controller, tx));
    let mut server = Server::start(socket, api.clone(), limits)?;
    let status = loop {
        // The sender lives in `api`, so this only fails if `api` is gone.
        let Ok(event) = rx.recv() else { break 1 };
        match event {
            Event::VmmShutdown => {
                log::info!("API: vmm.shutdown");
                break 0;
            }
            Event::Signal(sig) => {
                log::info!("stopping on signal {sig}");
                break 0;
            }
            Event::VmExited { generation, reason } => {
                if let Some(status) = api.controller().vm_exited(generation, &reason) {
                    log::info!("the VM ended ({}): exiting", reason.describe());
                    break status;
                }
            }
        }
    };
    server.stop();
    api.controller().teardown();
    Ok(status)
}

/// SIGINT and SIGTERM become [`Event::Signal`]. A running machine routes
/// them to its own latch (and ends); this watcher sees them either way.
fn watch_signals(tx: mpsc::Sender<Event>) -> Result<(), ApiError> {
    let latch = ExitHandle::new().map_err(ApiError::Signals)?;
    latch.catch_stop_signals().map_err(ApiError::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            crate::seccomp::enter(crate::seccomp::ThreadKind::Signals);
            if let ExitReason::Signal(sig) = latch.wait() {
                let _ = tx.send(Event::Signal(sig));
            }
        })
        .map_err(ApiError::Signals)?;
    Ok(())
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
