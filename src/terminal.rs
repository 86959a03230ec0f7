//! Puts an interactive stdin into character mode for the guest console, and
//! restores it on exit. Ctrl-C still reaches vfio-vmm as SIGINT.

/// Restores the saved terminal settings when dropped.
pub struct RawStdin {
    saved: libc::termios,
}

impl RawStdin {
    /// Switches stdin to non-canonical, no-echo mode if it is a terminal.
    pub fn enter() -> Option<Self> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; zeroed is a valid value to be overwritten.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios for tcgetattr to fill.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_iflag &= !(libc::ICRNL | libc::IXON);
        // SAFETY: `raw` is a valid termios derived from the current one.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
        Some(RawStdin { saved })
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}
