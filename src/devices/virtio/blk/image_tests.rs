//! Tests of opening disk images: the host mistakes users make (missing
//! file, a directory, a size that is not whole sectors, a FIFO, an image in
//! use), OFD locking between open file descriptions, block-device sizing
//! paths, and qcow2 through imago.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};

use super::image::{open_error, AlignedBuf, DiskImage, Format, ImageError, DIRECT_ALIGN};
use super::{serial_from_path, BlkError, Block, DiskOptions};
use crate::devices::virtio::VirtioDevice;

/// A directory for one test's images, removed when dropped. It lives under
/// the build's target directory, on a disk filesystem (O_DIRECT works there;
/// tmpfs would refuse it).
pub(super) struct TempDir(pub PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("blk-tests")
            .join(format!("{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes a file `name` with `bytes`; returns its path.
    pub(super) fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` bytes of a pattern that differs from sector to sector.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 512) as u8).collect()
}

/// Creates a qcow2 image of `size` bytes with imago, optionally on a backing file.
pub(super) fn make_qcow2(path: &Path, size: u64, backing: Option<&str>) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let opts = StorageOpenOptions::new().write(true).filename(path);
    let storage = imago::file::File::from_open_file(file, opts).unwrap();
    let mut builder = Qcow2::<imago::file::File>::create_builder(storage).size(size);
    if let Some(backing) = backing {
        builder = builder.backing(backing.to_string(), "raw".to_string());
    }
    builder.create().unwrap();
}

#[test]
fn raw_image_opens_with_its_size() {
    let dir = TempDir::new("raw");
    let path = dir.file("disk.img", &pattern(8192));
    let img = DiskImage::open(&path, false, false).unwrap();
    assert_eq!(
        (img.size(), img.format(), img.readonly(), img.direct()),
        (8192, Format::Raw, false, false)
    );
    assert!(!img.is_block_device());
}

#[test]
fn missing_file_directory_and_fifo_are_refused_with_what_to_do() {
    let dir = TempDir::new("bad");
    let missing = dir.0.join("nope.img");
    let err = DiskImage::open(&missing, false, false).unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("nope.img") && err.to_string().contains("check the path"));

    for readonly in [false, true] {
        let err = DiskImage::open(&dir.0, readonly, false).unwrap_err();
        assert!(matches!(err, ImageError::IsDirectory(_)), "{err}");
        assert!(err.to_string().contains("is a directory"));
    }

    let fifo = dir.0.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let err = DiskImage::open(&fifo, true, false).unwrap_err();
    assert!(matches!(err, ImageError::NotADisk(_)), "{err}");
}

#[test]
fn permission_and_read_only_filesystem_errors_say_what_to_do() {
    // Root ignores file modes, so the mapping from open(2) errors is tested directly.
    let path = Path::new("/images/a.img");
    let denied = open_error(path, true, io::Error::from(io::ErrorKind::PermissionDenied));
    assert!(matches!(denied, ImageError::Permission { write: true, .. }));
    let text = denied.to_string();
    assert!(
        text.contains("/images/a.img") && text.contains("readonly=on"),
        "{text}"
    );
    let denied = open_error(
        path,
        false,
        io::Error::from(io::ErrorKind::PermissionDenied),
    );
    assert!(!denied.to_string().contains("readonly=on"));
    let rofs = open_error(path, true, io::Error::from_raw_os_error(libc::EROFS));
    assert!(matches!(rofs, ImageError::ReadOnlyFs(_)));
    assert!(rofs.to_string().contains("readonly=on"));
}

#[test]
fn size_not_a_multiple_of_512_is_refused_with_the_reason() {
    let dir = TempDir::new("odd");
    let path = dir.file("odd.img", &[0; 1000]);
    let err = DiskImage::open(&path, true, false).unwrap_err();
    assert!(
        matches!(err, ImageError::NotSectorMultiple { size: 1000, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("1000 bytes") && text.contains("not a multiple of 512"),
        "{text}"
    );
}

#[test]
fn a_writable_image_is_locked_exclusively() {
    let dir = TempDir::new("lock");
    let path = dir.file("disk.img", &[0; 4096]);
    let first = DiskImage::open(&path, false, false).unwrap();
    // A second open file description in the same process conflicts (OFD locks).
    for readonly in [false, true] {
        let err = DiskImage::open(&path, readonly, false).unwrap_err();
        assert!(matches!(err, ImageError::Locked { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("in use"),
            "{text}"
        );
    }
    // The lock goes with the last descriptor of its open file description.
    drop(first);
    DiskImage::open(&path, false, false).unwrap();
}

#[test]
fn read_only_images_share_their_lock_but_keep_writers_out() {
    let dir = TempDir::new("shared");
    let path = dir.file("disk.img", &[0; 4096]);
    let a = DiskImage::open(&path, true, false).unwrap();
    let b = DiskImage::open(&path, true, false).unwrap();
    let err = DiskImage::open(&path, false, false).unwrap_err();
    assert!(
        matches!(err, ImageError::Locked { write: true, .. }),
        "{err}"
    );
    drop((a, b));
    DiskImage::open(&path, false, false).unwrap();
}

#[test]
fn direct_opens_o_direct_and_advertises_4k_blocks() {
    let dir = TempDir::new("direct");
    let path = dir.file("disk.img", &pattern(16384));
    let img = DiskImage::open(&path, false, true)
        .unwrap_or_else(|e| panic!("{e} (the target directory must be on a disk filesystem)"));
    assert!(img.direct());
    let mut buf = AlignedBuf::new(DIRECT_ALIGN);
    img.read_at(4096, buf.as_mut_slice()).unwrap();
    assert_eq!(buf.as_mut_slice(), &pattern(16384)[4096..8192]);
    let block = Block::new(&DiskOptions {
        direct: true,
        ..DiskOptions::new(dir.file("b.img", &[0; 8192]))
    })
    .unwrap();
    let mut blk_size = [0u8; 4];
    block.read_config(20, &mut blk_size);
    assert_eq!(u32::from_le_bytes(blk_size), 4096);
}

#[test]
fn aligned_buffers_are_aligned() {
    for len in [0, 1, 512, 4096, 1 << 20] {
        let mut buf = AlignedBuf::new(len);
        assert_eq!(buf.len(), len);
        assert_eq!(buf.as_mut_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
        assert_eq!(buf.get_mut(len + 10).len(), len, "clamped to the buffer");
    }
}

#[test]
fn qcow2_is_served_by_imago() {
    let dir = TempDir::new("qcow2");
    let path = dir.0.join("disk.qcow2");
    make_qcow2(&path, 1 << 20, None);
    let data = pattern(4096);
    {
        let mut img = DiskImage::open(&path, false, false).unwrap();
        assert_eq!((img.format(), img.size()), (Format::Qcow2, 1 << 20));
        img.write_at(65536, &data).unwrap();
        img.flush().unwrap();
        img.write_zeroes(65536, 512, false, &mut [0; 512]).unwrap();
    }
    let img = DiskImage::open(&path, true, false).unwrap();
    let mut back = vec![0u8; 4096];
    img.read_at(65536, &mut back).unwrap();
    assert_eq!(&back[..512], &[0; 512]);
    assert_eq!(&back[512..], &data[512..]);
    assert!(
        std::fs::metadata(&path).unwrap().len() < 1 << 20,
        "a qcow2 file, not a raw one"
    );
}

#[test]
fn qcow2_with_a_backing_file_is_refused_naming_qemu_img_convert() {
    let dir = TempDir::new("backing");
    dir.file("base.raw", &[0; 65536]);
    let path = dir.0.join("top.qcow2");
    make_qcow2(&path, 65536, Some("base.raw"));
    let err = DiskImage::open(&path, true, false).unwrap_err();
    assert!(matches!(err, ImageError::Qcow2 { .. }), "{err}");
    assert!(err.to_string().contains("qemu-img convert -O raw"), "{err}");
}

#[test]
fn qcow2_images_are_locked_too() {
    let dir = TempDir::new("qlock");
    let path = dir.0.join("disk.qcow2");
    make_qcow2(&path, 1 << 20, None);
    let _first = DiskImage::open(&path, false, false).unwrap();
    let err = DiskImage::open(&path, true, false).unwrap_err();
    assert!(matches!(err, ImageError::Locked { .. }), "{err}");
}

#[test]
fn serials_come_from_the_options_or_the_file_name() {
    assert_eq!(
        serial_from_path(Path::new("/var/lib/vm/root.img")),
        "root.img"
    );
    assert_eq!(
        serial_from_path(Path::new("/x/a-very-long-image-name-vm17.raw")),
        "-image-name-vm17.raw"
    );
    assert_eq!(
        serial_from_path(Path::new("/x/sp ace\u{e9}.img")),
        "sp_ace__.img"
    );
    let dir = TempDir::new("serial");
    let path = dir.file("disk.img", &[0; 512]);
    let block = Block::new(&DiskOptions::new(&path)).unwrap();
    assert_eq!((block.size(), block.readonly()), (512, false));
    assert_eq!(
        (block.serial(), block.id()),
        ("disk.img", path.to_str().unwrap())
    );
    drop(block);
    let named = DiskOptions {
        serial: Some("SER-1".into()),
        id: Some("root".into()),
        readonly: true,
        ..DiskOptions::new(&path)
    };
    let block = Block::new(&named).unwrap();
    assert_eq!((block.size(), block.readonly()), (512, true));
    assert_eq!((block.serial(), block.id()), ("SER-1", "root"));
    drop(block);
    for bad in ["012345678901234567890", "tab\there"] {
        let opts = DiskOptions {
            serial: Some(bad.into()),
            ..DiskOptions::new(&path)
        };
        assert!(
            matches!(Block::new(&opts), Err(BlkError::BadSerial { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn qcow2_serves_direct_io() {
    let dir = TempDir::new("qdirect");
    let path = dir.0.join("disk.qcow2");
    make_qcow2(&path, 1 << 20, None);
    let mut img = DiskImage::open(&path, false, true)
        .unwrap_or_else(|e| panic!("{e} (the target directory must be on a disk filesystem)"));
    let mut buf = AlignedBuf::new(DIRECT_ALIGN);
    buf.as_mut_slice().copy_from_slice(&pattern(DIRECT_ALIGN));
    img.write_at(8192, buf.as_mut_slice()).unwrap();
    img.flush().unwrap();
    buf.as_mut_slice().fill(0);
    img.read_at(8192, buf.as_mut_slice()).unwrap();
    assert_eq!(buf.as_mut_slice(), &pattern(DIRECT_ALIGN)[..]);
}

/// A loop device over a file, detached when dropped.
struct Loop(PathBuf);

impl Loop {
    /// Attaches `file`; fails the test, saying why, without root.
    fn attach(file: &Path) -> Self {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run losetup: {e}; this test needs root and util-linux")
            });
        assert!(
            out.status.success(),
            "losetup failed: {}; this test needs root and /dev/loop-control",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.0)
            .status();
    }
}

#[test]
#[ignore = "needs root and /dev/loop-control for a loop device (scripts/test.sh runs it)"]
fn block_devices_are_sized_with_blkgetsize64_and_locked() {
    let dir = TempDir::new("loop");
    let file = dir.file("backing.img", &pattern(3 << 20));
    let dev = Loop::attach(&file);
    let mut img = DiskImage::open(&dev.0, false, false).unwrap();
    assert!(img.is_block_device());
    assert_eq!((img.size(), img.format()), (3 << 20, Format::Raw));
    let mut back = vec![0u8; 4096];
    img.read_at(1 << 20, &mut back).unwrap();
    assert_eq!(back, pattern(3 << 20)[1 << 20..(1 << 20) + 4096]);
    img.write_zeroes(0, 4096, true, &mut [0; 4096]).unwrap();
    img.discard(8192, 4096).unwrap();
    img.flush().unwrap();
    img.read_at(0, &mut back).unwrap();
    assert_eq!(back, vec![0; 4096]);
    let err = DiskImage::open(&dev.0, true, false).unwrap_err();
    assert!(matches!(err, ImageError::Locked { .. }), "{err}");
}
