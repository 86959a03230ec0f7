//! Tests of the sysfs-side and pure parts of VFIO handling: reserved
//! regions and IOMMU info parsing, layout planning and the preflight
//! checks against a fake sysfs tree. Opening real VFIO files needs an IOMMU
//! and is exercised in the nested rig.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::bdf::Bdf;
use crate::sysfs::Sysfs;
use crate::vfio::iova::{
    parse_iommu_info, parse_reserved_regions, reserved_regions, IovaConstraints, IovaRange,
};
use crate::vfio::layout::{plan, LayoutError, LayoutRequest};
use crate::vfio::preflight::{preflight, PreflightError};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn request(ram: u64) -> LayoutRequest {
    LayoutRequest {
        ram_size: ram,
        low_ram_limit: 0xc000_0000,
        high_ram_start: 4 * GIB,
        fixed: vec![
            ("32-bit PCI window".into(), 0xc000_0000, 0x2000_0000),
            ("ECAM".into(), 0xe000_0000, MIB),
        ],
        mmio64_size: 64 * GIB,
        mmio64_align: GIB,
        granule: 2 * MIB,
        min_low_ram: 64 * MIB,
    }
}

#[test]
fn reserved_regions_parse_and_bad_lines_are_named() {
    let text = "0x00000000fee00000 0x00000000feefffff msi\n0x00000000000e8000 0x00000000000e8fff direct-relaxable\n";
    let r = parse_reserved_regions(text, 7, "x").unwrap();
    assert_eq!(
        r[0].range,
        IovaRange {
            start: 0xfee0_0000,
            end: 0xfeef_ffff
        }
    );
    assert_eq!(
        (r[0].kind.as_str(), r[0].group, r[0].blocks()),
        ("msi", 7, true)
    );
    assert!(!r[1].blocks());
    let err = parse_reserved_regions("0x10 zz msi", 7, "/sys/x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/sys/x") && err.contains("0x10 zz msi"),
        "{err}"
    );
}

/// A VFIO_IOMMU_GET_INFO reply with an IOVA-range capability after a dummy one.
fn info_reply(ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut b = vec![0u8; 24];
    b[4..8].copy_from_slice(&3u32.to_ne_bytes()); // PGSIZES | CAPS
    b[16..20].copy_from_slice(&24u32.to_ne_bytes());
    // Capability 2 (migration) at 24, pointing to 40.
    b.extend_from_slice(&2u16.to_ne_bytes());
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&40u32.to_ne_bytes());
    b.extend_from_slice(&[0; 8]);
    // IOVA range capability at 40.
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&(ranges.len() as u32).to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    for (s, e) in ranges {
        b.extend_from_slice(&s.to_ne_bytes());
        b.extend_from_slice(&e.to_ne_bytes());
    }
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b
}

#[test]
fn iommu_info_yields_the_iova_ranges() {
    let reply = info_reply(&[(0xfef0_0000, (1 << 39) - 1), (0, 0xfedf_ffff)]);
    let ranges = parse_iommu_info(&reply).unwrap().unwrap();
    assert_eq!(
        ranges,
        vec![
            IovaRange {
                start: 0,
                end: 0xfedf_ffff
            },
            IovaRange {
                start: 0xfef0_0000,
                end: (1 << 39) - 1
            }
        ]
    );
    let mut no_caps = reply.clone();
    no_caps[4..8].copy_from_slice(&1u32.to_ne_bytes());
    assert_eq!(parse_iommu_info(&no_caps).unwrap(), None);
    let truncated = &reply[..reply.len() - 4];
    assert!(parse_iommu_info(truncated).is_err());
}

#[test]
fn without_constraints_the_layout_is_the_usual_one() {
    let c = IovaConstraints::default();
    let small = plan(&c, &request(512 * MIB)).unwrap();
    assert_eq!(small.ram, vec![(0, 512 * MIB)]);
    assert_eq!(small.mmio64_base, 4 * GIB);
    let big = plan(&c, &request(5 * GIB)).unwrap();
    assert_eq!(big.ram, vec![(0, 3 * GIB), (4 * GIB, 2 * GIB)]);
    assert_eq!(big.mmio64_base, 6 * GIB);
}

#[test]
fn ram_skips_a_reserved_range_and_the_window_moves_up() {
    // An AMD-style HyperTransport hole at 1012 GiB..1 TiB and a 40-bit aperture.
    let c = IovaConstraints {
        valid: Some(vec![
            IovaRange {
                start: 0,
                end: 0xfc_ffff_ffff,
            },
            IovaRange {
                start: 0x100_0000_0000,
                end: (1 << 41) - 1,
            },
        ]),
        reserved: parse_reserved_regions(
            "0x0000000040000000 0x00000000401fffff reserved\n",
            3,
            "x",
        )
        .unwrap(),
    };
    let layout = plan(&c, &request(2 * GIB)).unwrap();
    assert_eq!(layout.ram, vec![(0, GIB), (GIB + 2 * MIB, GIB)]);
    let layout = plan(&c, &request(3 * GIB)).unwrap();
    assert_eq!(
        layout.ram,
        vec![
            (0, GIB),
            (GIB + 2 * MIB, 2 * GIB - 2 * MIB),
            (4 * GIB, 2 * MIB)
        ]
    );
    // 1000 GiB of RAM: the window cannot sit in the hole, so it goes above 1 TiB.
    let layout = plan(&c, &request(1000 * GIB)).unwrap();
    assert!(
        layout.mmio64_base >= 0x100_0000_0000,
        "{:#x}",
        layout.mmio64_base
    );
}

#[test]
fn impossible_layouts_say_why() {
    let narrow = IovaConstraints {
        valid: Some(vec![IovaRange {
            start: 0,
            end: (1 << 33) - 1,
        }]),
        reserved: vec![],
    };
    let err = plan(&narrow, &request(16 * GIB)).unwrap_err();
    assert!(matches!(err, LayoutError::NoRoom { .. }), "{err}");
    assert!(err.to_string().contains("smaller --memory"), "{err}");
    let err = plan(&narrow, &request(2 * GIB)).unwrap_err();
    assert!(matches!(err, LayoutError::NoMmio64 { .. }), "{err}");
    let ecam = IovaConstraints {
        valid: None,
        reserved: parse_reserved_regions("0xe0000000 0xe00fffff reserved", 2, "x").unwrap(),
    };
    let err = plan(&ecam, &request(GIB)).unwrap_err().to_string();
    assert!(
        err.contains("ECAM") && err.contains("IOMMU group 2"),
        "{err}"
    );
    let low = IovaConstraints {
        valid: None,
        reserved: parse_reserved_regions("0x100000 0x1fffff direct", 2, "x").unwrap(),
    };
    let err = plan(&low, &request(GIB)).unwrap_err();
    assert!(matches!(err, LayoutError::LowRam { .. }), "{err}");
}

/// A fake sysfs tree under a fresh temporary directory.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("vfio-vmm-preflight-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Tree(root)
    }

    fn device(&self, bdf: &str, group: u32, driver: Option<&str>) -> &Self {
        let dir = self.0.join("sys/bus/pci/devices").join(bdf);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), "0x1234\n").unwrap();
        fs::write(dir.join("device"), "0x11e8\n").unwrap();
        fs::write(dir.join("class"), "0x00ff00\n").unwrap();
        let gdir = self
            .0
            .join("sys/kernel/iommu_groups")
            .join(group.to_string());
        fs::create_dir_all(gdir.join("devices")).unwrap();
        symlink(&dir, gdir.join("devices").join(bdf)).unwrap();
        symlink(&gdir, dir.join("iommu_group")).unwrap();
        if let Some(d) = driver {
            let ddir = self.0.join("sys/bus/pci/drivers").join(d);
            fs::create_dir_all(&ddir).unwrap();
            symlink(&ddir, dir.join("driver")).unwrap();
        }
        fs::create_dir_all(self.0.join("dev/vfio")).unwrap();
        fs::write(self.0.join("dev/vfio").join(group.to_string()), "").unwrap();
        self
    }

    fn sysfs(&self) -> Sysfs {
        Sysfs::new(&self.0)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

#[test]
fn a_ready_device_passes_with_its_group() {
    let t = Tree::new("ready");
    t.device("0000:01:00.0", 5, Some("vfio-pci"));
    fs::write(
        t.path().join("sys/kernel/iommu_groups/5/reserved_regions"),
        "0xfee00000 0xfeefffff msi\n",
    )
    .unwrap();
    let planned = preflight(&t.sysfs(), &[bdf("01:00.0")]).unwrap();
    assert_eq!(planned[0].group, 5);
    assert!(planned[0]
        .sysfs_path
        .ends_with("sys/bus/pci/devices/0000:01:00.0"));
    let r = reserved_regions(&t.sysfs(), 5).unwrap();
    assert_eq!(r[0].kind, "msi");
}

#[test]
fn each_bad_input_gets_its_own_error() {
    let t = Tree::new("bad");
    let err = preflight(&t.sysfs(), &[bdf("01:00.0")]).unwrap_err();
    assert!(matches!(err, PreflightError::NoIommu), "{err}");
    t.device("0000:01:00.0", 5, Some("e1000e"));
    let err = preflight(&t.sysfs(), &[bdf("02:00.0")]).unwrap_err();
    assert!(matches!(err, PreflightError::NoDevice(_)), "{err}");
    let err = preflight(&t.sysfs(), &[bdf("01:00.0")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bound to e1000e") && err.contains("vfio-vmm host bind 0000:01:00.0"),
        "{err}"
    );
    let err = preflight(&t.sysfs(), &[bdf("01:00.0"), bdf("0000:01:00.0")]).unwrap_err();
    assert!(matches!(err, PreflightError::Duplicate(_)), "{err}");
}

#[test]
fn a_group_with_host_drivers_lists_them() {
    let t = Tree::new("group");
    t.device("0000:01:00.0", 9, Some("vfio-pci"))
        .device("0000:01:00.1", 9, Some("snd_hda_intel"));
    let err = preflight(&t.sysfs(), &[bdf("01:00.0")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("0000:01:00.1 is on snd_hda_intel"), "{err}");
    assert!(err.contains("host bind --group 0000:01:00.0"), "{err}");
}

#[test]
fn two_devices_of_one_group_are_fine_together() {
    let t = Tree::new("pair");
    t.device("0000:01:00.0", 9, Some("vfio-pci"))
        .device("0000:01:00.1", 9, Some("vfio-pci"));
    let planned = preflight(&t.sysfs(), &[bdf("01:00.0"), bdf("01:00.1")]).unwrap();
    assert_eq!(
        planned.iter().map(|p| p.group).collect::<Vec<_>>(),
        vec![9, 9]
    );
}

#[test]
fn a_missing_group_node_is_reported() {
    let t = Tree::new("node");
    t.device("0000:01:00.0", 4, Some("vfio-pci"));
    fs::remove_file(t.path().join("dev/vfio/4")).unwrap();
    let err = preflight(&t.sysfs(), &[bdf("01:00.0")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("dev/vfio/4 does not exist"), "{err}");
}
