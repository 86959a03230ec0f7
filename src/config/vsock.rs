//! The virtio-vsock device as asked for: `--vsock cid=N,socket=PATH[,id=ID]`
//! (cloud-hypervisor's `vsock`), at most one per VM. Checked here: the CID
//! is one a guest may have, and the host socket can be created where it is
//! asked for. Binding it is the device's (`devices::virtio::vsock`), which the
//! builder runs before /dev/kvm is opened.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::{check_id, ConfigError};

/// Lowest CID a guest may have (0, 1 and 2 are reserved, 2 is the host).
pub const MIN_CID: u64 = 3;
/// Highest CID a guest may have (Linux keeps CIDs in 32 bits; -1 is "any").
pub const MAX_CID: u64 = u32::MAX as u64 - 1;
/// Longest path a UNIX socket address holds (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The vsock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID.
    pub cid: u64,
    /// The UNIX socket hosts connect to (`CONNECT <port>`); guest connections
    /// to host port P go to `<socket>_P`.
    pub socket: PathBuf,
    /// A name for the device, unique in the VM.
    pub id: Option<String>,
}

impl VsockConfig {
    /// Parses `cid=N,socket=PATH[,id=ID]`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let syntax = |why: String| ConfigError::BadVsock {
            text: text.to_string(),
            why,
        };
        let (mut cid, mut socket, mut id) = (None, None, None);
        for item in text.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| syntax(format!("{item:?} is not key=value")))?;
            match key {
                "cid" if cid.is_none() => {
                    let n = value
                        .parse()
                        .map_err(|_| syntax(format!("cid={value} is not a number")))?;
                    cid = Some(check_cid(n)?);
                }
                "socket" if socket.is_none() && !value.is_empty() => socket = Some(value.into()),
                "socket" if value.is_empty() => return Err(syntax("socket= is empty".into())),
                "id" if id.is_none() => {
                    check_id(value)?;
                    id = Some(value.to_string());
                }
                "cid" | "socket" | "id" => return Err(syntax(format!("{key} given twice"))),
                _ => return Err(syntax(format!("unknown key {key:?}"))),
            }
        }
        Ok(VsockConfig {
            cid: cid.ok_or_else(|| syntax("cid=N is missing".into()))?,
            socket: socket.ok_or_else(|| syntax("socket=PATH is missing".into()))?,
            id,
        })
    }

    /// Checks the CID and that the socket can be created: its directory
    /// exists, the path fits a socket address, and nothing but a (stale)
    /// socket is in its place.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_cid(self.cid)?;
        let path = &self.socket;
        let why = |why: String| ConfigError::VsockSocket {
            path: path.clone(),
            why,
        };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(why(format!(
                "longer than the {MAX_SOCKET_PATH} bytes a UNIX socket address holds; choose a shorter path"
            )));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => {
                return Err(why(
                    "exists and is not a socket; remove it or choose another path".into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(why(e.to_string())),
        }
        super::check_parent_dir(path)
            .map_err(|e| why(format!("{e}; create the directory or choose another path")))
    }
}

/// A CID a guest may have: [`MIN_CID`] to [`MAX_CID`].
pub fn check_cid(cid: u64) -> Result<u64, ConfigError> {
    if (MIN_CID..=MAX_CID).contains(&cid) {
        Ok(cid)
    } else {
        Err(ConfigError::BadCid(cid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_specs_parse() {
        let v = VsockConfig::parse("cid=3,socket=/run/v.sock").unwrap();
        assert_eq!(
            v,
            VsockConfig {
                cid: 3,
                socket: "/run/v.sock".into(),
                id: None
            }
        );
        let v = VsockConfig::parse("socket=/tmp/x,id=vsock0,cid=4294967294").unwrap();
        assert_eq!((v.cid, v.id.as_deref()), (MAX_CID, Some("vsock0")));
    }

    #[test]
    fn bad_vsock_specs_say_what_is_wrong() {
        let cases = [
            ("", "is not key=value"),
            ("socket=/s", "cid=N is missing"),
            ("cid=3", "socket=PATH is missing"),
            ("cid=3,socket=", "socket= is empty"),
            ("cid=x,socket=/s", "cid=x is not a number"),
            ("cid=3,cid=4,socket=/s", "cid given twice"),
            ("cid=3,socket=/s,port=9", "unknown key \"port\""),
        ];
        for (text, want) in cases {
            let err = VsockConfig::parse(text).unwrap_err();
            assert!(matches!(err, ConfigError::BadVsock { .. }), "{text}: {err}");
            let err = err.to_string();
            assert!(
                err.contains(want) && err.contains("expected cid=N"),
                "{text}: {err}"
            );
        }
        for cid in ["0", "1", "2", "4294967295", "4294967296"] {
            let err = VsockConfig::parse(&format!("cid={cid},socket=/s")).unwrap_err();
            assert!(err.to_string().contains("3 to 4294967294"), "{cid}: {err}");
        }
    }

    #[test]
    fn the_socket_must_be_creatable() {
        let ok = |s: &str| VsockConfig {
            cid: 3,
            socket: s.into(),
            id: None,
        };
        assert_eq!(ok("/tmp/vfio-vmm-vsock-test.sock").validate(), Ok(()));
        assert_eq!(ok("relative.sock").validate(), Ok(()));
        let err = ok("/nonexistent/dir/v.sock").validate().unwrap_err();
        assert!(err.to_string().contains("create the directory"), "{err}");
        let err = ok("/tmp").validate().unwrap_err().to_string();
        assert!(err.contains("exists and is not a socket"), "{err}");
        let long = format!("/tmp/{}", "s".repeat(MAX_SOCKET_PATH));
        let err = ok(&long).validate().unwrap_err().to_string();
        assert!(err.contains("choose a shorter path"), "{err}");
        let mut bad = ok("/tmp/v.sock");
        bad.cid = 2;
        assert_eq!(bad.validate(), Err(ConfigError::BadCid(2)));
    }
}
