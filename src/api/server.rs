//! The listening socket and its connections: the socket is created mode
//! 0600 (a stale file from a dead process is replaced, a live listener is an
//! error), each connection is served on its own thread with the deadlines of
//! [`Limits`], and at most [`Server::MAX_CONNECTIONS`] at once; the VM never
//! waits for a client.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::http::{Conn, HttpError, Limits, Response};
use super::routes::{After, Api};

/// Why the API socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process listens on the socket.
    #[error(
        "{0} is in use by a running process (another VMM?): stop it or choose another --api-socket"
    )]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket: remove it or choose another --api-socket")]
    NotASocket(PathBuf),
    /// Creating, binding or securing the socket failed.
    #[error("cannot listen on {path}: {err}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
}

/// A listening API server; dropping it (or [`Server::stop`]) stops accepting.
pub struct Server {
    path: PathBuf,
    /// The listening socket, to wake the accept loop when stopping.
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Connections being served, shared by the accept loop and connection threads.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Server {
    /// Most connections served at once; more are answered 503 and closed.
    pub const MAX_CONNECTIONS: usize = 64;

    /// Listens on `path` and serves `api` from a thread.
    pub fn start(path: &Path, api: Arc<Api>, limits: Limits) -> Result<Self, ServerError> {
        let listener = bind(path)?;
        let listen_err = |err| ServerError::Listen {
            path: path.to_path_buf(),
            err,
        };
        let ours = listener.try_clone().map_err(listen_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                crate::seccomp::enter(crate::seccomp::ThreadKind::ApiAccept);
                accept_loop(listener, api, limits, &stop2)
            })
            .map_err(listen_err)?;
        log::info!("API: listening on {}", path.display());
        Ok(Server {
            path: path.to_path_buf(),
            listener: ours,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting, waits for the accept loop and removes the socket file.
    /// Connections being served finish on their own threads.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // Shutting the listening socket down wakes the accept loop (accept
        // fails), which then sees `stop` and returns.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `path` mode 0600, replacing a stale socket file.
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let listen_err = |err| ServerError::Listen {
        path: path.to_path_buf(),
        err,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket(path.to_path_buf()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_path_buf()));
        }
        log::info!("API: replacing the stale socket {}", path.display());
        std::fs::remove_file(path).map_err(listen_err)?;
    }
    // The socket is created with the umask's mode; a restrictive umask for
    // the bind closes the window before the chmod below.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(listener)
}

fn accept_loop(listener: UnixListener, api: Arc<Api>, limits: Limits, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("API: accept failed: {e}");
                // Out of descriptors, most likely: let connections end.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= Server::MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            refuse_busy(stream);
            continue;
        }
        let guard = Active(active.clone());
        let api = api.clone();
        let kind = crate::seccomp::ThreadKind::ApiConn;
        let spawned = crate::seccomp::spawn("api-conn".into(), kind, move || {
            let _guard = guard;
            serve(stream, &api, &limits);
        });
        if let Err(e) = spawned {
            log::warn!("API: cannot start a connection thread: {e}");
        }
    }
}

/// Answers 503 without reading, so a flood costs one write per connection.
fn refuse_busy(stream: UnixStream) {
    let _ = stream.set_nonblocking(true);
    let resp = Response::error(503, "too many API connections: retry later");
    let _ = std::io::Write::write_all(&mut &stream, &resp.to_bytes(true));
}

/// Serves the requests of one connection until it closes or misbehaves.
fn serve(stream: UnixStream, api: &Api, limits: &Limits) {
    let _ = stream.set_write_timeout(Some(limits.message));
    let mut conn = Conn::new(stream);
    loop {
        let req = match conn.read_request(limits) {
            Ok(req) => req,
            Err(HttpError::Closed) => return,
            Err(e) => {
                log::info!("API: dropping a connection: {e}");
                let status = match e {
                    HttpError::BodyTooLarge(..) | HttpError::HeadTooLarge(_) => 413,
                    HttpError::Timeout(_) => 408,
                    _ => 400,
                };
                let _ = conn.write_response(&Response::error(status, &e.to_string()), true);
                return;
            }
        };
        let close = req.close;
        log::debug!("API: {} {}", req.method, req.path);
        let (resp, after) = api.handle(req);
        if resp.status >= 400 {
            log::info!(
                "API: answered {}: {}",
                resp.status,
                resp.body.as_deref().unwrap_or("")
            );
        }
        let written = conn.write_response(&resp, close);
        if let After::Send(event) = after {
            api.notify(event);
        }
        if close || written.is_err() {
            return;
        }
    }
}
