//! Where the guest's serial console (COM1) goes: `--serial stdio|null|off|file=PATH`
//! (cloud-hypervisor's modes Tty, Null, Off and File).

use std::path::PathBuf;

use super::ConfigError;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    /// This process's stdin and stdout.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// A serial port whose output is discarded.
    Null,
    /// No serial port in the guest.
    Off,
}

impl SerialConfig {
    /// Parses `stdio`, `null`, `off` or `file=PATH`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.split_once('=') {
            None if s == "stdio" => Ok(SerialConfig::Stdio),
            None if s == "null" => Ok(SerialConfig::Null),
            None if s == "off" => Ok(SerialConfig::Off),
            Some(("file", path)) if !path.is_empty() => Ok(SerialConfig::File(path.into())),
            _ => Err(ConfigError::BadSerial(s.to_string())),
        }
    }

    /// Checks that a serial output file can be created: its directory exists.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let SerialConfig::File(path) = self else {
            return Ok(());
        };
        let why = |why: String| ConfigError::SerialFile {
            path: path.clone(),
            why,
        };
        if path.is_dir() {
            return Err(why("is a directory".into()));
        }
        super::check_parent_dir(path).map_err(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_parses() {
        assert_eq!(SerialConfig::parse("stdio"), Ok(SerialConfig::Stdio));
        assert_eq!(SerialConfig::parse("null"), Ok(SerialConfig::Null));
        assert_eq!(SerialConfig::parse("off"), Ok(SerialConfig::Off));
        assert_eq!(
            SerialConfig::parse("file=/tmp/x"),
            Ok(SerialConfig::File("/tmp/x".into()))
        );
        assert!(SerialConfig::parse("pty").is_err());
        assert!(SerialConfig::parse("file=").is_err());
    }

    #[test]
    fn a_serial_file_needs_an_existing_directory() {
        assert!(SerialConfig::File("/tmp/x.log".into()).validate().is_ok());
        assert!(SerialConfig::File("x.log".into()).validate().is_ok());
        let err = SerialConfig::File("/nonexistent/dir/x.log".into())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/dir") && err.contains("create the directory"),
            "{err}"
        );
        assert!(SerialConfig::File("/tmp".into()).validate().is_err());
    }
}
