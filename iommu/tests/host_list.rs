//! `host list`: devices grouped by IOMMU group with names from pci.ids, as text and JSON.

mod common;

use common::tree::fixture_path;
use common::FakeHost;
use iommu::pciids::PciNames;
use iommu::setup::list::list;
use iommu::sysfs::Sysfs;

fn names() -> PciNames {
    PciNames::load(&fixture_path("pci.ids")).unwrap()
}

#[test]
fn text_listing_groups_devices_and_names_them() {
    let fake = FakeHost::load("gpu-audio");
    let text = list(&Sysfs::new(fake.root()), &names())
        .unwrap()
        .to_string();
    let expected = "\
IOMMU group 0:
  0000:00:00.0 [8086:3e30] Host bridge [0600]: Intel Corporation 8th Gen Core 8-core Desktop Processor Host Bridge/DRAM Registers [Coffee Lake S] (driver none)
IOMMU group 1:
  0000:01:00.0 [10de:2204] VGA compatible controller [0300]: NVIDIA Corporation GA102 [GeForce RTX 3090] (driver nvidia)
  0000:01:00.1 [10de:1aef] Audio device [0403]: NVIDIA Corporation GA102 High Definition Audio Controller (driver snd_hda_intel)
IOMMU group 2:
  0000:00:01.0 [8086:1901] PCI bridge [0604]: Intel Corporation 6th-10th Gen Core Processor PCIe Controller (x16) (driver pcieport)
";
    assert_eq!(text, expected);
}

#[test]
fn devices_without_a_group_come_last_and_say_why() {
    let fake = FakeHost::load("no-iommu");
    let text = list(&Sysfs::new(fake.root()), &names())
        .unwrap()
        .to_string();
    assert!(
        text.starts_with("No IOMMU group (IOMMU off; `vfio-vmm host check` says why):\n"),
        "{text}"
    );
    assert!(text.contains("0000:02:00.0 [144d:a808] Non-Volatile memory controller [0108]: Samsung Electronics Co Ltd NVMe SSD Controller SM981/PM981/PM983 (driver nvme)"), "{text}");
}

#[test]
fn json_listing_follows_the_documented_schema() {
    let fake = FakeHost::load("intel-healthy");
    let json = list(&Sysfs::new(fake.root()), &names())
        .unwrap()
        .to_json()
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schema"], 1);
    assert!(value["pci_ids"]
        .as_str()
        .unwrap()
        .ends_with("tests/fixtures/pci.ids"));
    let groups = value["groups"].as_array().unwrap();
    let ids: Vec<u64> = groups
        .iter()
        .map(|g| g["group"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![0, 3, 5, 6]);
    let nic = &groups[2]["devices"][0];
    assert_eq!(
        nic,
        &serde_json::json!({
            "bdf": "0000:03:00.0",
            "vendor_id": "8086",
            "device_id": "1533",
            "subsystem_vendor_id": "8086",
            "subsystem_device_id": "0001",
            "vendor_name": "Intel Corporation",
            "device_name": "I210 Gigabit Network Connection",
            "class": "020000",
            "class_name": "Ethernet controller",
            "driver": "vfio-pci",
            "iommu_group": 5,
            "bridge": false
        })
    );
}

#[test]
fn without_a_database_the_listing_shows_ids_and_says_how_to_get_names() {
    let fake = FakeHost::load("bridge-group");
    let listing = list(&Sysfs::new(fake.root()), &PciNames::empty()).unwrap();
    let text = listing.to_string();
    assert!(
        text.contains("  0000:02:00.0 [8086:1533] Class [0200]: device 8086:1533 (driver igb)"),
        "{text}"
    );
    assert!(
        text.contains("install the pci.ids or hwdata package, or set $VFIO_VMM_PCI_IDS"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&listing.to_json().unwrap()).unwrap();
    assert!(json["groups"][0]["devices"][0]["vendor_name"].is_null());
    assert_eq!(json["groups"][0]["devices"][0]["bridge"], true);
}

#[test]
fn a_broken_pci_ids_file_is_an_error_naming_the_file() {
    let dir = common::tree::TempDir::new("pciids");
    let path = dir.0.join("pci.ids");
    std::fs::write(&path, "8086 Intel with one space only\n").unwrap();
    let err = PciNames::load(&path).unwrap_err().to_string();
    assert!(err.contains("is not a valid pci.ids database"), "{err}");
    assert!(err.contains("VFIO_VMM_PCI_IDS"), "{err}");
    let missing = PciNames::load(&dir.0.join("nope")).unwrap_err().to_string();
    assert!(
        missing.contains("cannot read the pci.ids database"),
        "{missing}"
    );
}
