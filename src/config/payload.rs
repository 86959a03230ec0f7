//! What the guest boots: the kernel, an initramfs and the command line,
//! checked before anything is built. Both files must be readable regular
//! files; the kernel must be a bzImage (x86 boot protocol 2.00 or later:
//! boot flag 0xAA55 at 0x1FE, "HdrS" at 0x202, loaded high) or an
//! uncompressed ELF vmlinux for x86-64 with a PVH entry note (booted by the
//! PVH protocol, see `vmlinux.rs`), and the command line printable ASCII no
//! longer than the kernel takes.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use super::vmlinux;
use super::ConfigError;

/// The command line of `vfio-vmm run` when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// Offsets into the bzImage setup header (Documentation/arch/x86/boot.rst).
const BOOT_FLAG_OFFSET: usize = 0x1fe;
const HEADER_MAGIC_OFFSET: usize = 0x202;
const VERSION_OFFSET: usize = 0x206;
const LOADFLAGS_OFFSET: usize = 0x211;
const CMDLINE_SIZE_OFFSET: usize = 0x238;
/// Bytes of the file the checks read.
const HEADER_END: usize = CMDLINE_SIZE_OFFSET + 4;
/// Protocol 2.06 added `cmdline_size`; older kernels take 255 bytes.
const CMDLINE_SIZE_VERSION: u16 = 0x206;
const OLD_CMDLINE_MAX: usize = 255;

/// Kernel, initramfs and command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadConfig {
    /// The bzImage or PVH vmlinux.
    pub kernel: PathBuf,
    /// An optional initramfs (cpio, possibly compressed).
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
}

/// How a kernel is booted, by its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// A bzImage, by the 64-bit Linux boot protocol.
    BzImage,
    /// An ELF vmlinux with a PVH note, by the PVH boot protocol.
    PvhElf,
}

impl PayloadConfig {
    /// Checks the files and the command line against the kernel's header.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (_, cmdline_max) = kernel_format(&self.kernel)?;
        if let Some(initramfs) = &self.initramfs {
            open_regular("initramfs", initramfs)?;
        }
        check_cmdline(&self.cmdline, cmdline_max)
    }

    /// The kernel's format, read from its header (the builder picks the
    /// boot protocol by it).
    pub fn kernel_kind(&self) -> Result<KernelKind, ConfigError> {
        kernel_format(&self.kernel).map(|(kind, _)| kind)
    }
}

/// The kernel's format and the longest command line it takes.
fn kernel_format(path: &Path) -> Result<(KernelKind, usize), ConfigError> {
    let mut file = open_regular("kernel", path)?;
    let mut magic = Vec::with_capacity(4);
    (&mut file)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|e| ConfigError::Unreadable {
            what: "kernel",
            path: path.into(),
            why: e.to_string(),
        })?;
    if magic == vmlinux::ELF_MAGIC {
        file.rewind().map_err(|e| ConfigError::Unreadable {
            what: "kernel",
            path: path.into(),
            why: e.to_string(),
        })?;
        vmlinux::check(path, &mut file)?;
        return Ok((KernelKind::PvhElf, vmlinux::CMDLINE_MAX));
    }
    Ok((KernelKind::BzImage, check_bzimage(path)?))
}

/// Opens `path` for reading, refusing what is not a regular file.
fn open_regular(what: &'static str, path: &Path) -> Result<File, ConfigError> {
    let unreadable = |why: String| ConfigError::Unreadable {
        what,
        path: path.into(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable(format!(
            "not a regular file: pass the {what} file itself"
        )));
    }
    File::open(path).map_err(|e| unreadable(e.to_string()))
}

/// Checks the bzImage setup header; returns the longest command line it takes.
fn check_bzimage(path: &Path) -> Result<usize, ConfigError> {
    let mut header = Vec::with_capacity(HEADER_END);
    open_regular("kernel", path)?
        .take(HEADER_END as u64)
        .read_to_end(&mut header)
        .map_err(|e| ConfigError::Unreadable {
            what: "kernel",
            path: path.into(),
            why: e.to_string(),
        })?;
    let not = |why: &str| ConfigError::NotBzImage {
        path: path.into(),
        why: why.into(),
    };
    if header.len() < HEADER_END {
        return Err(not("too short for a setup header"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]);
    if u16_at(BOOT_FLAG_OFFSET) != 0xaa55
        || &header[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4] != b"HdrS"
    {
        return Err(not("no \"HdrS\" setup header at 0x202"));
    }
    let version = u16_at(VERSION_OFFSET);
    if version < 0x200 || header[LOADFLAGS_OFFSET] & 1 == 0 {
        return Err(not("boot protocol older than 2.00 or not loaded high"));
    }
    if version < CMDLINE_SIZE_VERSION {
        return Ok(OLD_CMDLINE_MAX);
    }
    let o = CMDLINE_SIZE_OFFSET;
    let size = u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
    Ok(usize::try_from(size).unwrap_or(usize::MAX))
}

fn check_cmdline(cmdline: &str, max: usize) -> Result<(), ConfigError> {
    if let Some(c) = cmdline.chars().find(|c| !matches!(c, ' '..='~')) {
        return Err(ConfigError::BadCmdline(format!(
            "{c:?} is not printable ASCII"
        )));
    }
    // The loader needs room for the terminating NUL.
    if cmdline.len() >= max {
        return Err(ConfigError::BadCmdline(format!(
            "{} bytes is more than this kernel takes ({})",
            cmdline.len(),
            max.saturating_sub(1)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::fake_bzimage;
    use super::super::vmlinux::tests::elf;
    use super::*;

    fn payload(kernel: &Path) -> PayloadConfig {
        PayloadConfig {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: DEFAULT_CMDLINE.into(),
        }
    }

    #[test]
    fn a_bzimage_header_passes_and_anything_else_is_named() {
        let k = fake_bzimage("payload");
        assert_eq!(payload(&k).validate(), Ok(()));

        let zeros = k.with_extension("zeros");
        std::fs::write(&zeros, vec![0u8; 4096]).unwrap();
        let err = payload(&zeros).validate().unwrap_err().to_string();
        assert!(
            err.contains("is not a bzImage") && err.contains("vmlinuz"),
            "{err}"
        );
        std::fs::write(&zeros, b"short").unwrap();
        let err = payload(&zeros).validate().unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");

        let err = payload(Path::new("/nonexistent/k"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/k") && err.contains("No such file"),
            "{err}"
        );
        let err = payload(Path::new("/tmp"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");

        let mut p = payload(&k);
        p.initramfs = Some("/nonexistent/initrd".into());
        let err = p.validate().unwrap_err().to_string();
        assert!(
            err.contains("cannot read the initramfs /nonexistent/initrd"),
            "{err}"
        );
        std::fs::remove_file(k).unwrap();
        std::fs::remove_file(zeros).unwrap();
    }

    #[test]
    fn an_elf_kernel_is_told_apart_from_a_bzimage() {
        let k = fake_bzimage("kind");
        assert_eq!(payload(&k).kernel_kind(), Ok(KernelKind::BzImage));
        let pvh: (&[u8], u32, &[u8]) = (b"Xen\0", 18, &[0, 0, 0x10, 0]);
        std::fs::write(&k, elf(62, &[pvh], &[0xf4])).unwrap();
        assert_eq!(payload(&k).kernel_kind(), Ok(KernelKind::PvhElf));
        let mut p = payload(&k);
        assert_eq!(p.validate(), Ok(()));
        p.cmdline = "x".repeat(vmlinux::CMDLINE_MAX);
        assert!(matches!(p.validate(), Err(ConfigError::BadCmdline(_))));
        std::fs::write(&k, elf(62, &[], &[0xf4])).unwrap();
        let err = payload(&k).validate().unwrap_err().to_string();
        assert!(err.contains("is an ELF file but not a vmlinux"), "{err}");
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn the_command_line_fits_the_kernel_header() {
        assert!(check_cmdline("console=ttyS0 quiet", 2048).is_ok());
        assert!(check_cmdline(&"x".repeat(2047), 2048).is_ok());
        assert!(check_cmdline(&"x".repeat(2048), 2048).is_err());
        let err = check_cmdline("a\nb", 2048).unwrap_err().to_string();
        assert!(err.contains("not printable ASCII"), "{err}");
    }
}
