//! The API threads' allow-lists. Connection threads, which may build and
//! boot the VM (`vm.boot`), carry the control plane's list (see
//! `seccomp::ThreadKind::ApiConn`); the accept loop and the signal watcher
//! have their own, small ones.

use crate::seccomp::{base, AllowList, FIONBIO};

/// The accept loop: accepts, asks the spawner for a connection thread, and
/// answers 503 itself when too many are open.
pub fn accept() -> AllowList {
    base()
        .calls(&[libc::SYS_accept4, libc::SYS_fcntl, libc::SYS_sendto])
        .ioctls(&[FIONBIO])
}

/// The SIGINT/SIGTERM watcher: polls an eventfd, sends on a channel.
pub fn signals() -> AllowList {
    base().calls(&[libc::SYS_poll, libc::SYS_ppoll, libc::SYS_read])
}
