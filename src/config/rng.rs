//! The entropy device: `--rng [src=PATH]` (cloud-hypervisor's `rng: {src}`),
//! a virtio-rng whose bytes come from PATH, `/dev/urandom` by default. The
//! source must be a character device or a regular file this process can read;
//! that is checked before anything is built.

use std::path::PathBuf;

use super::ConfigError;

/// Where the guest's entropy comes from when no `src=` is given.
pub const DEFAULT_RNG_SOURCE: &str = "/dev/urandom";

/// A virtio-rng device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RngConfig {
    /// The file the device reads.
    pub src: PathBuf,
}

impl Default for RngConfig {
    fn default() -> Self {
        RngConfig {
            src: DEFAULT_RNG_SOURCE.into(),
        }
    }
}

impl RngConfig {
    /// Parses `` (empty: the default source) or `src=PATH`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        match text.split_once('=') {
            None if text.is_empty() => Ok(RngConfig::default()),
            Some(("src", path)) if !path.is_empty() => Ok(RngConfig { src: path.into() }),
            _ => Err(ConfigError::BadRng(text.to_string())),
        }
    }

    /// Checks that the source is a readable character device or regular file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::FileTypeExt;
        let bad = |why: String| ConfigError::RngSource {
            path: self.src.clone(),
            why,
        };
        let meta = std::fs::metadata(&self.src).map_err(|e| bad(e.to_string()))?;
        let kind = meta.file_type();
        if !kind.is_char_device() && !kind.is_file() {
            return Err(bad("not a character device or regular file".into()));
        }
        std::fs::File::open(&self.src)
            .map(drop)
            .map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_defaults_to_urandom_and_must_be_readable() {
        assert_eq!(
            RngConfig::parse("").unwrap().src,
            PathBuf::from("/dev/urandom")
        );
        assert_eq!(
            RngConfig::parse("src=/dev/random").unwrap().src,
            PathBuf::from("/dev/random")
        );
        for bad in ["src=", "file=/dev/random", "/dev/random"] {
            let err = RngConfig::parse(bad).unwrap_err().to_string();
            assert!(err.contains("expected src=PATH"), "{bad}: {err}");
        }
        assert_eq!(RngConfig::default().validate(), Ok(()));
        let file = std::env::temp_dir().join(format!("vfio-vmm-rng-{}", std::process::id()));
        std::fs::write(&file, b"seed").unwrap();
        assert_eq!(RngConfig { src: file.clone() }.validate(), Ok(()));
        std::fs::remove_file(file).unwrap();
        for (src, want) in [
            ("/nonexistent/rng", "No such file"),
            ("/tmp", "not a character device or regular file"),
        ] {
            let err = RngConfig { src: src.into() }
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(src) && err.contains(want), "{err}");
            assert!(err.contains("--rng src="), "{err}");
        }
    }
}
