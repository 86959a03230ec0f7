//! The control plane's allow-list: the main thread once the VM is built, the
//! VM thread and API connections of API mode (which build, boot, reboot and
//! tear down VMs, so they open /dev/kvm, VFIO groups, taps, images and
//! sockets), and the spawner (whose filter every thread it starts inherits,
//! so this list holds every other list). Ioctls are allowed by type: KVM,
//! VFIO, TUN and terminals, network interfaces, block devices.

use super::rules::{base, epoll, ioctl_type, AllowList};

/// Building a VM, serving the API, starting threads, tearing down.
pub fn vmm() -> AllowList {
    let files = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_preadv2,
        libc::SYS_pwritev2,
        libc::SYS_lseek,
        libc::SYS_openat,
        libc::SYS_statx,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_readlink,
        libc::SYS_readlinkat,
        libc::SYS_getdents64,
        libc::SYS_access,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_fcntl,
        libc::SYS_flock,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_pipe2,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        libc::SYS_fchmod,
        libc::SYS_chmod,
        libc::SYS_fchmodat,
        libc::SYS_umask,
        libc::SYS_fallocate,
        libc::SYS_fdatasync,
        libc::SYS_fsync,
        libc::SYS_ftruncate,
        libc::SYS_getcwd,
        libc::SYS_eventfd2,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_memfd_create,
    ];
    let sockets = [
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_shutdown,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
    ];
    let process = [
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_getaffinity,
        libc::SYS_rt_sigaction,
        libc::SYS_tgkill,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_prlimit64,
        libc::SYS_getrlimit,
        libc::SYS_mlock,
        libc::SYS_munlock,
        libc::SYS_uname,
        libc::SYS_sysinfo,
    ];
    base()
        .with(&epoll())
        .calls(&files)
        .calls(&sockets)
        .calls(&process)
        .socket_families(&[libc::AF_UNIX, libc::AF_INET])
        // A thread started from here names itself and installs its own filter.
        .call_with(
            libc::SYS_prctl,
            0,
            &[
                libc::PR_SET_NAME,
                libc::PR_GET_NAME,
                libc::PR_SET_NO_NEW_PRIVS,
            ]
            .map(|o| o as u64),
        )
        .call_with(
            libc::SYS_seccomp,
            0,
            &[u64::from(libc::SECCOMP_SET_MODE_FILTER)],
        )
        .ioctl_types(&[
            ioctl_type::KVM,
            ioctl_type::VFIO,
            ioctl_type::TTY_TUN,
            ioctl_type::SOCKIOS,
            ioctl_type::BLOCK,
        ])
}
