//! The device workers' allow-lists (each worker installs its own at start,
//! see `thread.rs`): every worker waits on an epoll set of eventfds, reads
//! guest buffers from mapped memory and signals interrupts by eventfd writes;
//! beyond that, each touches only its backend.

use crate::seccomp::{base, epoll, ioctl_type, AllowList, ThreadKind, FIONBIO};

/// The kind of thread of a device's worker, by the name [`super::thread`] gets.
pub fn kind_of(device: &str) -> ThreadKind {
    match device {
        "virtio-net" => ThreadKind::VirtioNet,
        "virtio-blk" => ThreadKind::VirtioBlk,
        "virtio-vsock" => ThreadKind::VirtioVsock,
        // A worker of a device without its own list gets the tightest one.
        _ => ThreadKind::VirtioRng,
    }
}

/// virtio-net: frames to and from the tap.
pub fn net() -> AllowList {
    base()
        .with(&epoll())
        .calls(&[libc::SYS_read, libc::SYS_readv, libc::SYS_writev])
}

/// virtio-blk: reads, writes, flushes, holes and zeroes on the image (a file
/// or a block device; qcow2 images grow).
pub fn blk() -> AllowList {
    base()
        .with(&epoll())
        .calls(&[
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_preadv2,
            libc::SYS_pwritev2,
            libc::SYS_lseek,
            libc::SYS_fdatasync,
            libc::SYS_fsync,
            libc::SYS_fallocate,
            libc::SYS_ftruncate,
            libc::SYS_fstat,
            libc::SYS_statx,
            libc::SYS_newfstatat,
            // The batch's I/O threads (blk/batch.rs: scoped threads started
            // per batch, which keep this filter): thread creation and what
            // glibc does in a new thread.
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_sched_getaffinity,
            libc::SYS_gettid,
        ])
        .call_with(libc::SYS_prctl, 0, &[libc::PR_SET_NAME as u64])
        .ioctl_types(&[ioctl_type::BLOCK])
}

/// virtio-vsock: the host's UNIX sockets (accepting on the listener,
/// connecting to `PATH_P`, streaming both ways, polling one for a hang-up).
pub fn vsock() -> AllowList {
    base()
        .with(&epoll())
        .calls(&[
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_shutdown,
            libc::SYS_getsockopt,
            libc::SYS_fcntl,
            libc::SYS_poll,
            libc::SYS_ppoll,
        ])
        .socket_families(&[libc::AF_UNIX])
        .ioctls(&[FIONBIO])
}

/// virtio-rng: reads from the entropy source.
pub fn rng() -> AllowList {
    base()
        .with(&epoll())
        .calls(&[libc::SYS_read, libc::SYS_pread64])
}
