//! Puts an interactive stdin into character mode for the guest console, and
//! restores it on exit. Ctrl-C still reaches vfio-vmm as SIGINT.

use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, LocalFlags, SetArg, Termios};

/// Restores the saved terminal settings when dropped.
pub struct RawStdin {
    saved: Termios,
}

impl RawStdin {
    /// Switches stdin to non-canonical, no-echo mode if it is a terminal.
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !nix::unistd::isatty(&stdin).unwrap_or(false) {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.local_flags &= !(LocalFlags::ICANON | LocalFlags::ECHO);
        raw.input_flags &= !(InputFlags::ICRNL | InputFlags::IXON);
        // As before, a terminal that refuses the change stays as it was.
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        Some(RawStdin { saved })
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        // Nothing is left to do on a terminal that refuses its own settings back.
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
