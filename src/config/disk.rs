//! A virtio-blk disk as asked for:
//! `--disk path=FILE[,readonly=on][,direct=on][,id=NAME][,serial=S][,format=raw|qcow2]`
//! (cloud-hypervisor's `disks[]`). Checked here, before anything is taken:
//! the syntax, the serial, and that the image is a regular file or a block
//! device this process may open as asked, given once. Opening, sizing,
//! format checks and the OFD lock are the device's (`devices::virtio::blk`),
//! which the builder runs before /dev/kvm is opened.
//!
//! The format, when given, is the user's word and is never probed: a raw
//! image whose guest wrote a qcow2 header into block 0 stays raw (QEMU's
//! probing hazard). Without it the device probes the image's first bytes.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{check_id, parse_on_off, ConfigError};

/// Longest serial a guest can read with GET_ID, in bytes.
pub const MAX_SERIAL_LEN: usize = 20;

/// The format of an image, as the user states it (`format=`, `image_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A raw file or block device: the guest sees its bytes as they are.
    Raw,
    /// qcow2 (without backing or data files).
    Qcow2,
}

impl ImageFormat {
    /// The name `format=` takes.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image: a raw file, a block device or a qcow2 file.
    pub path: PathBuf,
    /// Open read-only, lock shared, offer VIRTIO_BLK_F_RO and refuse writes.
    pub readonly: bool,
    /// Open with O_DIRECT (bypassing the host page cache).
    pub direct: bool,
    /// The device's name for the API; the path when absent.
    pub id: Option<String>,
    /// The serial the guest reads with GET_ID (at most 20 printable ASCII
    /// bytes); derived from the path when absent.
    pub serial: Option<String>,
    /// The image's format; `None` probes it from the image's first bytes.
    pub format: Option<ImageFormat>,
}

impl DiskConfig {
    /// Options for a writable, cached disk at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DiskConfig {
            path: path.into(),
            readonly: false,
            direct: false,
            id: None,
            serial: None,
            format: None,
        }
    }

    /// Parses `path=FILE[,readonly=on|off][,direct=on|off][,id=ID][,serial=S][,format=raw|qcow2]`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let syntax = |why: String| ConfigError::BadDisk {
            text: text.to_string(),
            why,
        };
        let mut disk = DiskConfig::new("");
        let mut seen: Vec<&str> = Vec::new();
        for item in text.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| syntax(format!("{item:?} is not key=value")))?;
            if seen.contains(&key) {
                return Err(syntax(format!("{key} given twice")));
            }
            seen.push(key);
            let on_off = |v: &str| {
                parse_on_off(v)
                    .ok_or_else(|| syntax(format!("{key}={v}: use {key}=on or {key}=off")))
            };
            match key {
                "path" if !value.is_empty() => disk.path = value.into(),
                "path" => return Err(syntax("path= is empty".into())),
                "readonly" => disk.readonly = on_off(value)?,
                "direct" => disk.direct = on_off(value)?,
                "id" => {
                    check_id(value)?;
                    disk.id = Some(value.to_string());
                }
                "serial" => {
                    check_serial(value)?;
                    disk.serial = Some(value.to_string());
                }
                "format" => disk.format = Some(parse_format(value).map_err(syntax)?),
                _ => return Err(syntax(format!("unknown key {key:?}"))),
            }
        }
        if disk.path.as_os_str().is_empty() {
            return Err(syntax("path=FILE is missing".into()));
        }
        Ok(disk)
    }

    /// Checks the image without locking it: it exists, is a regular file or
    /// a block device, and opens for reading (and writing unless `readonly`).
    /// Returns its canonical path, to find one image given twice.
    pub fn validate(&self) -> Result<PathBuf, ConfigError> {
        if let Some(serial) = &self.serial {
            check_serial(serial)?;
        }
        let path = &self.path;
        let bad = |why: &str| ConfigError::DiskImage {
            path: path.clone(),
            why: why.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(|e| open_error(path, self.readonly, e))?;
        if meta.is_dir() {
            return Err(bad(
                "is a directory; give a raw or qcow2 image file or a block device",
            ));
        }
        if !meta.is_file() && !meta.file_type().is_block_device() {
            return Err(bad(
                "is not a regular file or a block device; give a raw or qcow2 image file or a block device",
            ));
        }
        OpenOptions::new()
            .read(true)
            .write(!self.readonly)
            .open(path)
            .map_err(|e| open_error(path, self.readonly, e))?;
        path.canonicalize()
            .map_err(|e| open_error(path, self.readonly, e))
    }
}

/// The format named by `format=VALUE`.
fn parse_format(value: &str) -> Result<ImageFormat, String> {
    match value {
        "raw" => Ok(ImageFormat::Raw),
        "qcow2" => Ok(ImageFormat::Qcow2),
        _ => Err(format!(
            "format={value}: use format=raw or format=qcow2 \
             (convert other formats with `qemu-img convert -O raw`)"
        )),
    }
}

/// The error for an image that cannot be looked at or opened as asked.
fn open_error(path: &Path, readonly: bool, e: io::Error) -> ConfigError {
    let why = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => "no such file; check the path".to_string(),
        (io::ErrorKind::PermissionDenied, _) if readonly => {
            "permission denied opening it for reading; fix its permissions or ownership".into()
        }
        (io::ErrorKind::PermissionDenied, _) => "permission denied opening it for writing; \
            fix its permissions or ownership, or add readonly=on"
            .into(),
        (_, Some(libc::EROFS)) => "is on a read-only filesystem; add readonly=on".into(),
        _ => e.to_string(),
    };
    ConfigError::DiskImage {
        path: path.to_path_buf(),
        why,
    }
}

/// A serial is at most [`MAX_SERIAL_LEN`] printable ASCII bytes (spaces allowed).
pub fn check_serial(serial: &str) -> Result<(), ConfigError> {
    let printable = serial.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if serial.len() > MAX_SERIAL_LEN || !printable {
        return Err(ConfigError::BadDiskSerial(serial.to_string()));
    }
    Ok(())
}

/// Checks every disk's image; no image is given twice, under any name.
pub fn validate_all(disks: &[DiskConfig]) -> Result<(), ConfigError> {
    let mut seen: Vec<PathBuf> = Vec::with_capacity(disks.len());
    for disk in disks {
        let canonical = disk.validate()?;
        if seen.contains(&canonical) {
            return Err(ConfigError::DuplicateDisk(disk.path.clone()));
        }
        seen.push(canonical);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch image of `len` bytes, named for `test`.
    fn image(test: &str, len: usize) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("vfio-vmm-disk-{}-{test}", std::process::id()));
        std::fs::write(&path, vec![0u8; len]).unwrap();
        path
    }

    #[test]
    fn disk_specs_parse_every_option() {
        let d = DiskConfig::parse("path=/img/root.raw").unwrap();
        assert_eq!(d, DiskConfig::new("/img/root.raw"));
        let d = DiskConfig::parse(
            "path=/r.img,readonly=on,direct=on,id=root,serial=SN 01,format=qcow2",
        )
        .unwrap();
        assert_eq!(
            d,
            DiskConfig {
                path: "/r.img".into(),
                readonly: true,
                direct: true,
                id: Some("root".into()),
                serial: Some("SN 01".into()),
                format: Some(ImageFormat::Qcow2),
            }
        );
        let d = DiskConfig::parse("format=raw,path=/r.img").unwrap();
        assert_eq!(d.format, Some(ImageFormat::Raw));
        let d = DiskConfig::parse("readonly=off,path=/r.img,direct=false").unwrap();
        assert!(!d.readonly && !d.direct);
    }

    #[test]
    fn bad_disk_specs_say_what_is_wrong() {
        let cases = [
            ("", "\"\" is not key=value"),
            ("readonly=on", "path=FILE is missing"),
            ("path=", "path= is empty"),
            ("path=/a,path=/b", "path given twice"),
            ("path=/a,readonly=maybe", "use readonly=on or readonly=off"),
            ("path=/a,direct=2", "use direct=on or direct=off"),
            ("path=/a,cache=none", "unknown key \"cache\""),
            ("path=/a,", "\"\" is not key=value"),
            (
                "path=/a,format=vmdk",
                "format=vmdk: use format=raw or format=qcow2",
            ),
            ("path=/a,format=", "format=: use format=raw or format=qcow2"),
            ("path=/a,format=raw,format=raw", "format given twice"),
        ];
        for (text, want) in cases {
            let err = DiskConfig::parse(text).unwrap_err();
            assert!(matches!(err, ConfigError::BadDisk { .. }), "{text}: {err}");
            let err = err.to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("expected path=FILE"), "{err}");
        }
        let err = DiskConfig::parse("path=/a,serial=123456789012345678901").unwrap_err();
        assert_eq!(
            err,
            ConfigError::BadDiskSerial("123456789012345678901".into())
        );
        assert!(
            err.to_string().contains("at most 20 printable ASCII"),
            "{err}"
        );
        assert!(DiskConfig::parse("path=/a,serial=é").is_err());
        assert!(DiskConfig::parse("path=/a,serial=12345678901234567890").is_ok());
        assert!(matches!(
            DiskConfig::parse("path=/a,id=a b"),
            Err(ConfigError::BadId(..))
        ));
    }

    #[test]
    fn images_are_checked_without_being_locked() {
        let img = image("checked", 4096);
        let disk = DiskConfig::new(&img);
        assert_eq!(disk.validate(), Ok(img.canonicalize().unwrap()));
        let missing = DiskConfig::new("/nonexistent/disk.img").validate();
        let err = missing.unwrap_err().to_string();
        assert_eq!(
            err,
            "disk image /nonexistent/disk.img: no such file; check the path"
        );
        let err = DiskConfig::new("/tmp").validate().unwrap_err().to_string();
        assert!(err.contains("/tmp: is a directory"), "{err}");
        let err = DiskConfig::new("/dev/null").validate().unwrap_err();
        assert!(err
            .to_string()
            .contains("not a regular file or a block device"));
        let mut bad_serial = disk.clone();
        bad_serial.serial = Some("x".repeat(21));
        assert!(matches!(
            bad_serial.validate(),
            Err(ConfigError::BadDiskSerial(_))
        ));
        std::fs::remove_file(img).unwrap();
    }

    #[test]
    fn one_image_is_not_given_twice_under_any_name() {
        let img = image("twice", 4096);
        let other = image("twice-other", 4096);
        let a = DiskConfig::new(&img);
        let b = DiskConfig::new(&other);
        assert_eq!(validate_all(&[a.clone(), b]), Ok(()));
        let dir = img.parent().unwrap();
        let alias = dir.join(".").join(img.file_name().unwrap());
        let err = validate_all(&[a, DiskConfig::new(&alias)]).unwrap_err();
        assert_eq!(err, ConfigError::DuplicateDisk(alias));
        assert!(err.to_string().contains("is given twice"), "{err}");
        std::fs::remove_file(img).unwrap();
        std::fs::remove_file(other).unwrap();
    }
}
