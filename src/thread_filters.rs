//! Which seccomp allow-list each kind of thread gets. The lists are written
//! next to the code that makes the calls (`vstate::seccomp`,
//! `devices::virtio::seccomp`, `devices::serial`, `api::seccomp`, and the
//! control plane's in `seccomp`); this module, above all of them, hands the
//! table to `seccomp::init`, so that the seccomp module, which those modules
//! use to start their threads, imports none of them.

use crate::devices::virtio::seccomp as virtio;
use crate::seccomp::{control_plane, AllowList, ThreadKind};

/// The calls a thread of `kind` may make.
pub fn allowed(kind: ThreadKind) -> AllowList {
    match kind {
        ThreadKind::Vmm | ThreadKind::ApiConn => control_plane(),
        ThreadKind::Vcpu => crate::vstate::seccomp::vcpu(),
        ThreadKind::VirtioNet => virtio::net(),
        ThreadKind::VirtioBlk => virtio::blk(),
        ThreadKind::VirtioVsock => virtio::vsock(),
        ThreadKind::VirtioRng => virtio::rng(),
        ThreadKind::SerialIn => crate::devices::serial::stdin_reader_syscalls(),
        ThreadKind::ApiAccept => crate::api::seccomp::accept(),
        ThreadKind::Signals => crate::api::seccomp::signals(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::sigsys;
    use seccompiler::SeccompAction;

    #[test]
    fn every_kinds_list_compiles_and_the_control_plane_holds_every_other_list() {
        let vmm = allowed(ThreadKind::Vmm);
        for kind in ThreadKind::ALL {
            let list = allowed(kind);
            assert!(list.compile(SeccompAction::Trap).is_ok(), "{kind:?}");
            // The spawner (Vmm) is the parent of workers and connections, and
            // the main thread of vCPUs: its filter stays on them.
            for nr in 0..450 {
                if list.names(nr) {
                    assert!(
                        vmm.names(nr),
                        "{kind:?} allows {nr}, the control plane does not"
                    );
                }
            }
        }
    }

    #[test]
    fn every_call_a_list_allows_has_a_name_for_the_report() {
        for kind in ThreadKind::ALL {
            let list = allowed(kind);
            for nr in 0..450 {
                if list.names(nr) {
                    assert!(
                        sigsys::name(nr).is_some(),
                        "{kind:?}: call {nr} has no name"
                    );
                }
            }
        }
    }

    /// A forked child installs the stdin reader's filter and the SIGSYS handler,
    /// then calls socket(2), which that list denies: it must end with status
    /// 159 and say which thread made which call.
    #[test]
    fn a_denied_call_ends_the_process_with_the_thread_and_the_call() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        use std::io::Read;
        use std::os::fd::AsRawFd;

        // Built before fork: the child only makes async-signal-safe calls.
        let program = allowed(ThreadKind::SerialIn)
            .compile(SeccompAction::Trap)
            .unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes raw system calls, then _exit()s.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // SAFETY: dup2, sigaction, prctl, seccomp, socket and _exit on
                // descriptors and memory this process owns.
                unsafe {
                    libc::dup2(write_end.as_raw_fd(), libc::STDERR_FILENO);
                    let mut act: libc::sigaction = std::mem::zeroed();
                    act.sa_sigaction = sigsys::on_sigsys as *const () as usize;
                    act.sa_flags = libc::SA_SIGINFO;
                    libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut());
                    sigsys::remember_thread_name("serial-in");
                    if seccompiler::apply_filter(&program).is_err() {
                        libc::_exit(2);
                    }
                    libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                    libc::_exit(0);
                }
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                let mut out = String::new();
                std::fs::File::from(read_end)
                    .read_to_string(&mut out)
                    .unwrap();
                let status = waitpid(child, None).unwrap();
                assert_eq!(status, WaitStatus::Exited(child, sigsys::STATUS), "{out}");
                assert!(
                    out.contains("thread 'serial-in' made a forbidden system call: socket (41)"),
                    "{out}"
                );
            }
        }
    }
}
