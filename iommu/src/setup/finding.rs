//! What every `host check` produces: a [`Finding`] per line of output, with its
//! [`Level`], gathered in a [`Report`] that decides the exit status. Shared by the host-wide
//! checks ([`super::check`]) and the per-device ones ([`super::device_check`]).

use std::fmt;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Works, but worth knowing or improving.
    Warn,
    /// Passthrough will not work until this is fixed.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        // Pad so messages line up: `{:<4}` on the caller's side applies to this.
        f.pad(word)
    }
}

/// One line of `host check` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// What it is about: `iommu`, `memlock`, `0000:01:00.0`, ...
    pub subject: String,
    /// What was found.
    pub message: String,
    /// What to do about it (for `warn` and `fail`).
    pub fix: Option<String>,
}

impl Finding {
    fn new(level: Level, subject: String, message: String, fix: Option<String>) -> Self {
        Finding {
            level,
            subject,
            message,
            fix,
        }
    }

    /// A finding without a fix.
    pub fn ok(subject: impl Into<String>, message: impl Into<String>) -> Self {
        Finding::new(Level::Ok, subject.into(), message.into(), None)
    }

    /// A warning and what to do about it.
    pub fn warn(
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding::new(
            Level::Warn,
            subject.into(),
            message.into(),
            Some(fix.into()),
        )
    }

    /// A failure and its fix.
    pub fn fail(
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding::new(
            Level::Fail,
            subject.into(),
            message.into(),
            Some(fix.into()),
        )
    }

    /// A file that could not be read, as a failure.
    pub fn unreadable(subject: impl Into<String>, err: &impl fmt::Display) -> Self {
        Finding::fail(
            subject,
            err.to_string(),
            "run as root, or check the --sysfs-root path",
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4} {}: {}", self.level, self.subject, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// Everything `host check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Findings in output order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when nothing failed: the host (and the devices asked about) can do passthrough.
    pub fn ready(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Fail)
    }

    /// Process exit status: 0 when ready, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.ready() {
            0
        } else {
            1
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}
