//! Vendor, device and class names from the pci.ids database, via the `pciid-parser` crate.
//!
//! The database is `$VFIO_VMM_PCI_IDS` when set, else the first of
//! `/usr/share/hwdata/pci.ids` and `/usr/share/misc/pci.ids` that exists. Names are a
//! convenience: without a database everything still works, with IDs only.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use pciid_parser::Database;

/// Environment variable naming the pci.ids file to use.
pub const PCI_IDS_ENV: &str = "VFIO_VMM_PCI_IDS";

/// Where distributions install pci.ids (hwdata on Fedora/Arch, pci.ids/pciutils on Debian).
pub const SYSTEM_PCI_IDS: &[&str] = &["/usr/share/hwdata/pci.ids", "/usr/share/misc/pci.ids"];

/// Why the pci.ids database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PciIdsError {
    /// The file could not be read.
    #[error("cannot read the pci.ids database {path}: {source}; fix the path in ${PCI_IDS_ENV} or unset it")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not in pci.ids format.
    #[error("{path} is not a valid pci.ids database ({reason}); point ${PCI_IDS_ENV} at a pci.ids file or unset it")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },
}

/// Looks up names; empty (every lookup `None`) when no database is available.
#[derive(Debug, Default)]
pub struct PciNames {
    db: Option<Database>,
    source: Option<PathBuf>,
}

impl PciNames {
    /// No database: every lookup returns `None`.
    pub fn empty() -> Self {
        PciNames::default()
    }

    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self, PciIdsError> {
        let mut text = fs::read_to_string(path).map_err(|source| PciIdsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // The parser drops the last byte of every line assuming it is '\n'; make sure the
        // final line has one so it never cuts a name (or a multi-byte character) short.
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let db = Database::parse_db(Cursor::new(text)).map_err(|e| PciIdsError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(PciNames {
            db: Some(db),
            source: Some(path.to_path_buf()),
        })
    }

    /// Loads `explicit` if given, else `$VFIO_VMM_PCI_IDS`, else the system database.
    /// An explicitly named file that fails is an error; a missing system database is not.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, PciIdsError> {
        let from_env = std::env::var_os(PCI_IDS_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(path) = explicit.map(Path::to_path_buf).or(from_env) {
            return Self::load(&path);
        }
        match SYSTEM_PCI_IDS.iter().map(Path::new).find(|p| p.exists()) {
            Some(path) => Self::load(path),
            None => Ok(Self::empty()),
        }
    }

    /// The file the names come from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Vendor name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.db
            .as_ref()?
            .vendors
            .get(&vendor)
            .map(|v| v.name.as_str())
    }

    /// Device name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        let vendor = self.db.as_ref()?.vendors.get(&vendor)?;
        vendor.devices.get(&device).map(|d| d.name.as_str())
    }

    /// Name of a 24-bit class code: the subclass name when known, else the class name.
    pub fn class(&self, class: u32) -> Option<&str> {
        let base = self.db.as_ref()?.classes.get(&((class >> 16) as u8))?;
        let sub = base
            .subclasses
            .get(&((class >> 8) as u8))
            .map(|s| s.name.as_str());
        Some(sub.unwrap_or(base.name.as_str()))
    }
}
