//! What `host bind` remembers for `host unbind`, and the lock that keeps two such
//! commands apart.
//!
//! Lock: `STATE_DIR/lock`, held with `flock` for the whole of one `host bind` or
//! `host unbind`, so two such commands never interleave their sysfs writes.
//!
//! State: one file per device, `STATE_DIR/DOMAIN:BUS:DEV.FN.driver`, holding
//! `driver=NAME` (or `driver=` when the device had no driver). It is written before the
//! device is touched and removed by `host unbind` or when a bind rolls back.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::bdf::Bdf;

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory or file could not be written.
    #[error("cannot write state file {path}: {source}; make sure the state directory is writable (set $VFIO_VMM_STATE_DIR to move it)")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The state file exists but could not be read or removed.
    #[error("cannot access state file {path}: {source}")]
    Access {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another `host bind` or `host unbind` held the lock for the whole wait.
    #[error("another `vfio-vmm host bind` or `host unbind` is running (it holds {path}); let it finish, then try again")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The state file does not hold a `driver=` line.
    #[error("state file {path} is damaged (no driver= line); delete it and bind the device's driver by hand")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
}

/// Creates the state directory if it does not exist yet.
fn create_state_dir(state_dir: &Path) -> Result<(), StateError> {
    fs::create_dir_all(state_dir).map_err(|source| StateError::Write {
        path: state_dir.to_path_buf(),
        source,
    })
}

/// Exclusive hold on the state directory; released when dropped (the file unlocks and
/// closes).
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<fs::File>,
}

/// Takes the state directory's lock, waiting up to `wait` for another command to
/// release it.
pub fn lock(state_dir: &Path, wait: Duration) -> Result<StateLock, StateError> {
    create_state_dir(state_dir)?;
    let path = state_dir.join("lock");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StateError::Write {
            path: path.clone(),
            source,
        })?;
    let deadline = Instant::now() + wait;
    loop {
        file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(StateLock { _lock: lock }),
            Err((file, Errno::EWOULDBLOCK)) => file,
            Err((_, errno)) => {
                return Err(StateError::Access {
                    path,
                    source: errno.into(),
                })
            }
        };
        if Instant::now() >= deadline {
            return Err(StateError::Busy { path });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Path of the state file for `bdf`.
pub fn state_path(state_dir: &Path, bdf: Bdf) -> PathBuf {
    state_dir.join(format!("{bdf}.driver"))
}

/// Records the driver `bdf` had before `host bind` (`None`: no driver).
pub fn remember(state_dir: &Path, bdf: Bdf, previous: Option<&str>) -> Result<(), StateError> {
    create_state_dir(state_dir)?;
    let path = state_path(state_dir, bdf);
    let tmp = path.with_extension("tmp");
    let text = format!(
        "# written by `vfio-vmm host bind`; read by `vfio-vmm host unbind`\ndriver={}\n",
        previous.unwrap_or("")
    );
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|source| StateError::Write { path, source })
}

/// The driver remembered for `bdf`: `Ok(None)` without a state file, `Ok(Some(None))` when
/// the device had no driver.
pub fn recall(state_dir: &Path, bdf: Bdf) -> Result<Option<Option<String>>, StateError> {
    let path = state_path(state_dir, bdf);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Access { path, source }),
    };
    let driver = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("driver="))
        .ok_or(StateError::Corrupt { path })?;
    Ok(Some(
        Some(driver.trim().to_string()).filter(|d| !d.is_empty()),
    ))
}

/// Removes the state file for `bdf`, if any.
pub fn forget(state_dir: &Path, bdf: Bdf) -> Result<(), StateError> {
    let path = state_path(state_dir, bdf);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Access { path, source }),
    }
}
