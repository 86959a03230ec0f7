//! The SIGSYS handler of `--seccomp true`: a denied call is reported on
//! stderr with the thread's name, the call's name (or its number) and, for
//! ioctl, the request number, then the process ends with status 159
//! (128 + SIGSYS, what a shell shows for a process killed by SIGSYS).
//!
//! Only async-signal-safe work happens here: formatting into a stack buffer,
//! write(2) and _exit(2). The handler does not try to wake the main thread for
//! an orderly teardown: the thread that made the call is stopped in the middle
//! of its work (perhaps holding a lock the teardown needs), and the teardown
//! itself makes calls a filter may deny. Ending the process lets the kernel
//! release everything as at any exit: closing the VFIO descriptors disables
//! the device's interrupts, resets it and unpins guest RAM, the tap and the
//! images are closed, locks die with the process. Left behind: the API and
//! vsock socket files, which the next start replaces as stale.

use std::cell::Cell;
use std::fmt::Write;

/// The exit status after a denied call.
pub const STATUS: i32 = 128 + libc::SIGSYS;

thread_local! {
    /// This thread's name, copied at filter install so the handler reads it
    /// without allocating (a const-initialized thread local has no destructor).
    static NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

/// Remembers the calling thread's name for the handler.
pub(crate) fn remember_thread_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    NAME.with(|c| c.set(buf));
}

/// Names of the calls any allow-list names and of calls a stray code path
/// would likely make, written by hand from `libc::SYS_*` (seccompiler keeps
/// its table private); other calls are reported by number.
macro_rules! names {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name, stringify!($name)),)*]
    };
}
static NAMES: &[(i64, &str)] = names![
    SYS_read,
    SYS_write,
    SYS_open,
    SYS_openat,
    SYS_close,
    SYS_stat,
    SYS_fstat,
    SYS_lstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_poll,
    SYS_ppoll,
    SYS_lseek,
    SYS_mmap,
    SYS_mprotect,
    SYS_munmap,
    SYS_brk,
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_ioctl,
    SYS_pread64,
    SYS_pwrite64,
    SYS_readv,
    SYS_writev,
    SYS_preadv,
    SYS_pwritev,
    SYS_preadv2,
    SYS_pwritev2,
    SYS_access,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_pipe2,
    SYS_sched_yield,
    SYS_mremap,
    SYS_madvise,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_nanosleep,
    SYS_clock_nanosleep,
    SYS_getpid,
    SYS_gettid,
    SYS_socket,
    SYS_socketpair,
    SYS_connect,
    SYS_accept,
    SYS_accept4,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_shutdown,
    SYS_bind,
    SYS_listen,
    SYS_getsockname,
    SYS_getpeername,
    SYS_setsockopt,
    SYS_getsockopt,
    SYS_clone,
    SYS_clone3,
    SYS_fork,
    SYS_vfork,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_wait4,
    SYS_kill,
    SYS_tgkill,
    SYS_uname,
    SYS_fcntl,
    SYS_flock,
    SYS_fsync,
    SYS_fdatasync,
    SYS_ftruncate,
    SYS_fallocate,
    SYS_getdents64,
    SYS_getcwd,
    SYS_rename,
    SYS_renameat2,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_unlink,
    SYS_unlinkat,
    SYS_readlink,
    SYS_readlinkat,
    SYS_chmod,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_umask,
    SYS_getrlimit,
    SYS_setrlimit,
    SYS_prlimit64,
    SYS_getuid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getegid,
    SYS_sysinfo,
    SYS_prctl,
    SYS_arch_prctl,
    SYS_futex,
    SYS_sched_getaffinity,
    SYS_sched_setaffinity,
    SYS_set_robust_list,
    SYS_rseq,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_wait,
    SYS_epoll_pwait,
    SYS_eventfd2,
    SYS_timerfd_create,
    SYS_timerfd_settime,
    SYS_signalfd4,
    SYS_memfd_create,
    SYS_mlock,
    SYS_munlock,
    SYS_mlockall,
    SYS_mbind,
    SYS_getrandom,
    SYS_clock_gettime,
    SYS_sigaltstack,
    SYS_restart_syscall,
    SYS_ptrace,
    SYS_mount,
    SYS_io_uring_setup,
    SYS_seccomp,
    SYS_bpf,
    SYS_process_vm_readv,
    SYS_sendfile,
    SYS_splice,
    SYS_copy_file_range,
    SYS_pidfd_open,
    SYS_close_range,
    SYS_sched_getparam,
];

/// The name of call `nr`, if the table has it.
pub fn name(nr: i64) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(n, _)| *n == nr)
        .map(|(_, s)| s.trim_start_matches("SYS_"))
}

/// A fixed buffer `core::fmt` writes into without allocating.
struct Buf {
    bytes: [u8; 256],
    len: usize,
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The report line for call `nr` (with `arg1`, an ioctl's request) on `thread`.
fn report(thread: &[u8], nr: i64, arg1: u64, out: &mut Buf) {
    let thread = std::str::from_utf8(thread)
        .unwrap_or("?")
        .trim_end_matches('\0');
    let _ = write!(
        out,
        "vfio-vmm: error: seccomp: thread '{thread}' made a forbidden system call: "
    );
    let _ = match name(nr) {
        Some(name) => write!(out, "{name} ({nr})"),
        None => write!(out, "number {nr}"),
    };
    if nr == libc::SYS_ioctl {
        let _ = write!(out, " request {arg1:#x}");
    }
    let _ = writeln!(
        out,
        "; stopping the VM (run with --seccomp log to find every such call, and report it)"
    );
}

/// The SIGSYS layout of `siginfo_t` (`_sigsys` in the kernel's union).
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// Reports the denied call and ends the process (see the module doc).
pub(crate) extern "C" fn on_sigsys(
    _: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS, whose union
    // holds `_sigsys` (see `SigsysInfo`).
    let nr = i64::from(unsafe { (*(info as *const SigsysInfo)).syscall });
    let arg1 = if ctx.is_null() {
        0
    } else {
        // SAFETY: with SA_SIGINFO the third argument is the thread's ucontext_t.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        uc.uc_mcontext.gregs[libc::REG_RSI as usize] as u64
    };
    let mut out = Buf {
        bytes: [0; 256],
        len: 0,
    };
    report(&NAME.with(Cell::get), nr, arg1, &mut out);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is ours.
    unsafe {
        libc::write(libc::STDERR_FILENO, out.bytes.as_ptr().cast(), out.len);
        libc::_exit(STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_thread_the_call_and_an_ioctl_request() {
        let mut out = Buf {
            bytes: [0; 256],
            len: 0,
        };
        let mut thread = [0u8; 16];
        thread[..4].copy_from_slice(b"vcpu");
        report(&thread, libc::SYS_ioctl, 0xae80, &mut out);
        let line = std::str::from_utf8(&out.bytes[..out.len]).unwrap();
        assert!(line.contains("thread 'vcpu'"), "{line}");
        assert!(line.contains("ioctl (16) request 0xae80"), "{line}");
        out.len = 0;
        report(&thread, 999, 0, &mut out);
        let line = std::str::from_utf8(&out.bytes[..out.len]).unwrap();
        assert!(line.contains("number 999"), "{line}");
    }
}
