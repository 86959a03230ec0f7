//! Tests of the format an image opens as: a stated format is never probed
//! (a raw image whose first bytes look like qcow2 stays raw), `qcow2` refuses
//! a file that is not, and a probed raw image refuses guest writes that would
//! make it look like qcow2 at the next start.

use std::io;

use super::format::{write_makes_qcow2, QCOW2_MAGIC};
use super::image::{DiskImage, Format, FormatError, ImageError};
use super::image_tests::{make_qcow2, pattern, TempDir};
use super::{Block, DiskOptions};

/// `len` bytes of a raw disk whose block 0 starts like a qcow2 header
/// (magic, version 3, a backing file name offset): what a guest could write.
fn qcow2_lookalike(len: usize) -> Vec<u8> {
    let mut bytes = pattern(len);
    bytes[..4].copy_from_slice(&QCOW2_MAGIC);
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    bytes[8..16].copy_from_slice(&0x200u64.to_be_bytes());
    bytes
}

#[test]
fn a_stated_raw_format_is_not_probed() {
    let dir = TempDir::new("fmt-raw");
    let bytes = qcow2_lookalike(8192);
    let path = dir.file("disk.raw", &bytes);
    // Probed, the file passes for qcow2 (and is refused as a corrupt one).
    let err = DiskImage::open(&path, true, false).unwrap_err();
    assert!(matches!(err, ImageError::Qcow2 { .. }), "{err}");
    // Stated raw, it is the guest's 8 KiB as they are.
    let img = DiskImage::open_as(&path, false, false, Some(Format::Raw)).unwrap();
    assert_eq!((img.format(), img.size()), (Format::Raw, 8192));
    let mut back = vec![0u8; 8192];
    img.read_at(0, &mut back).unwrap();
    assert_eq!(back, bytes);
    // The guest may rewrite its block 0 with a qcow2 header: it stays raw.
    img.write_at(0, &bytes[..512]).unwrap();
    drop(img);
    let img = DiskImage::open_as(&path, true, false, Some(Format::Raw)).unwrap();
    assert_eq!((img.format(), img.size()), (Format::Raw, 8192));
}

#[test]
fn a_stated_qcow2_format_refuses_a_file_that_is_not() {
    let dir = TempDir::new("fmt-qcow2");
    let raw = dir.file("disk.raw", &pattern(8192));
    let err = DiskImage::open_as(&raw, true, false, Some(Format::Qcow2)).unwrap_err();
    assert!(
        matches!(err, ImageError::Format(FormatError::NotQcow2(_))),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("is not a qcow2 image") && text.contains("format=raw"),
        "{text}"
    );
    let empty = dir.file("empty.img", &[]);
    let err = DiskImage::open_as(&empty, true, false, Some(Format::Qcow2)).unwrap_err();
    assert!(
        matches!(err, ImageError::Format(FormatError::NotQcow2(_))),
        "{err}"
    );
    let path = dir.0.join("disk.qcow2");
    make_qcow2(&path, 1 << 20, None);
    let img = DiskImage::open_as(&path, true, false, Some(Format::Qcow2)).unwrap();
    assert_eq!((img.format(), img.size()), (Format::Qcow2, 1 << 20));
    // A real qcow2 file opened as raw is its bytes, header and all.
    let img = DiskImage::open_as(&path, true, false, Some(Format::Raw)).unwrap();
    assert_eq!(img.format(), Format::Raw);
    assert_eq!(img.size(), std::fs::metadata(&path).unwrap().len());
}

#[test]
fn a_probed_raw_image_refuses_writes_that_would_make_it_qcow2() {
    let dir = TempDir::new("fmt-guard");
    let bytes = pattern(8192);
    let path = dir.file("disk.raw", &bytes);
    let img = DiskImage::open(&path, false, false).unwrap();
    assert_eq!(img.format(), Format::Raw);
    let header = qcow2_lookalike(512);
    let err = img.write_at(0, &header).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("format=raw"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing written");
    // Other writes to block 0, and the magic elsewhere, are fine.
    img.write_at(0, &pattern(512)[..]).unwrap();
    img.write_at(512, &header).unwrap();
    drop(img);
    let img = DiskImage::open(&path, true, false).unwrap();
    assert_eq!(img.format(), Format::Raw, "still probed raw");
}

#[test]
fn the_guard_sees_the_magic_however_the_write_is_cut() {
    let dir = TempDir::new("fmt-cut");
    let path = dir.file("disk.raw", b"QFxx and more");
    let file = std::fs::File::open(&path).unwrap();
    assert!(write_makes_qcow2(&file, 2, &[b'I', 0xfb]).unwrap());
    assert!(write_makes_qcow2(&file, 2, &[b'I', 0xfb, 0, 0]).unwrap());
    assert!(!write_makes_qcow2(&file, 2, b"I").unwrap());
    assert!(!write_makes_qcow2(&file, 4, &QCOW2_MAGIC).unwrap());
    assert!(!write_makes_qcow2(&file, 0, &[]).unwrap());
    assert!(write_makes_qcow2(&file, 0, &QCOW2_MAGIC).unwrap());
    let short = dir.file("short.raw", b"Q");
    let file = std::fs::File::open(short).unwrap();
    assert!(
        !write_makes_qcow2(&file, 1, b"FI").unwrap(),
        "the fourth byte stays 0"
    );
}

#[test]
fn the_disk_options_format_reaches_the_image() {
    let dir = TempDir::new("fmt-block");
    let path = dir.file("disk.raw", &qcow2_lookalike(8192));
    let probed = Block::new(&DiskOptions::new(&path));
    assert!(probed.is_err(), "probed as a corrupt qcow2");
    let stated = DiskOptions {
        format: Some(Format::Raw),
        ..DiskOptions::new(&path)
    };
    let block = Block::new(&stated).unwrap();
    drop(block);
    let qcow2 = DiskOptions {
        format: Some(Format::Qcow2),
        ..DiskOptions::new(dir.file("plain.raw", &pattern(4096)))
    };
    let err = Block::new(&qcow2).unwrap_err().to_string();
    assert!(err.contains("is not a qcow2 image"), "{err}");
}
