//! The i8254 PIT's policy for ticks the guest missed: `--pit reinject=on|off`
//! (KVM_REINJECT_CONTROL). With reinjection on (KVM's default) KVM queues
//! every tick the guest did not acknowledge and delivers them later, so a
//! guest counting ticks keeps time; off, missed ticks are dropped.
//! cloud-hypervisor has no such field: the JSON spelling `"pit":
//! {"reinject": false}` is a vfio-vmm extension.

use super::{parse_on_off, ConfigError};

/// The PIT's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PitConfig {
    /// Whether KVM reinjects PIT ticks the guest missed.
    pub reinject: bool,
}

impl Default for PitConfig {
    fn default() -> Self {
        PitConfig { reinject: true }
    }
}

impl PitConfig {
    /// Parses `reinject=on|off`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadPit(text.to_string());
        let mut pit = PitConfig::default();
        for option in text.split(',') {
            match option.split_once('=') {
                Some(("reinject", v)) => pit.reinject = parse_on_off(v).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        }
        Ok(pit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinject_is_on_by_default_and_parses_on_and_off() {
        assert!(PitConfig::default().reinject);
        assert!(!PitConfig::parse("reinject=off").unwrap().reinject);
        assert!(PitConfig::parse("reinject=on").unwrap().reinject);
        for bad in [
            "",
            "reinject",
            "reinject=maybe",
            "speaker=on",
            "reinject=on,x=1",
        ] {
            let err = PitConfig::parse(bad).unwrap_err().to_string();
            assert!(err.contains("reinject=on|off"), "{bad}: {err}");
        }
    }
}
