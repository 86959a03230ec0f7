//! `host check` over fake hosts: what users see (one ok/warn/fail line per finding, with a
//! fix) and the exit status that says whether the devices can be assigned.

mod common;

use common::{bdfs, FakeHost};
use iommu::setup::check::{check, CheckOptions};
use iommu::setup::device_check::MmioWindows;
use iommu::setup::finding::{Level, Report};

fn run(fake: &FakeHost, devices: &[&str], memory: Option<u64>) -> Report {
    let options = CheckOptions {
        memory,
        devices: bdfs(devices),
        windows: MmioWindows::default(),
        user: None,
    };
    check(&fake.host(), &options)
}

/// The lines of the report about `subject`.
fn lines(report: &Report, subject: &str) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|f| f.subject == subject)
        .map(|f| f.to_string())
        .collect()
}

fn line(report: &Report, subject: &str) -> String {
    let found = lines(report, subject);
    assert_eq!(
        found.len(),
        1,
        "expected one line about {subject}, got {found:?}\n{report}"
    );
    found[0].clone()
}

#[test]
fn no_iommu_host_fails_with_the_kernel_command_line_fix() {
    let fake = FakeHost::load("no-iommu");
    let report = run(&fake, &["01:00.0"], None);
    let iommu = line(&report, "iommu");
    assert!(iommu.starts_with("fail iommu: no IOMMU active"), "{iommu}");
    assert!(
        iommu.contains("add intel_iommu=on to the kernel command line"),
        "{iommu}"
    );
    let ir = line(&report, "interrupt remapping");
    assert!(ir.starts_with("fail"), "{ir}");
    let device = lines(&report, "0000:01:00.0").join("\n");
    assert!(
        device.contains("fail 0000:01:00.0: has no IOMMU group"),
        "{device}"
    );
    assert!(device.contains("bound to host driver nvidia"), "{device}");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn no_dmar_table_points_at_the_firmware_setting() {
    let fake = FakeHost::load("no-iommu");
    std::fs::remove_file(fake.root().join("sys/firmware/acpi/tables/DMAR")).unwrap();
    let iommu = line(&run(&fake, &[], None), "iommu");
    assert!(
        iommu.contains("the firmware does not describe one"),
        "{iommu}"
    );
    assert!(iommu.contains("enable VT-d"), "{iommu}");
}

#[test]
fn iommu_disabled_on_the_command_line_says_which_option_to_remove() {
    let fake = FakeHost::load("no-iommu");
    std::fs::write(
        fake.root().join("proc/cmdline"),
        "root=/dev/sda1 intel_iommu=off\n",
    )
    .unwrap();
    let iommu = line(&run(&fake, &[], None), "iommu");
    assert!(iommu.contains("remove intel_iommu=off"), "{iommu}");
}

#[test]
fn modules_that_are_only_available_are_ok_and_missing_ones_fail() {
    let fake = FakeHost::load("no-iommu");
    let report = run(&fake, &[], None);
    assert!(
        line(&report, "module vfio_pci").starts_with("ok   module vfio_pci: available, not loaded")
    );
    std::fs::write(fake.root().join("lib/modules/6.8.0-test/modules.dep"), "").unwrap();
    let missing = line(&run(&fake, &[], None), "module vfio_pci");
    assert!(missing.starts_with("fail module vfio_pci"), "{missing}");
    assert!(missing.contains("CONFIG_VFIO_PCI"), "{missing}");
}

#[test]
fn healthy_intel_host_is_ready_for_a_device_already_on_vfio_pci() {
    let fake = FakeHost::load("intel-healthy");
    let report = run(&fake, &["03:00.0"], Some(4 << 30));
    assert!(report.ready(), "{report}");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        line(&report, "iommu"),
        "ok   iommu: Intel VT-d enabled (dmar0, dmar1), 4 IOMMU groups"
    );
    assert!(line(&report, "interrupt remapping").starts_with("ok"));
    assert_eq!(line(&report, "/dev/kvm"), "ok   /dev/kvm: usable");
    assert_eq!(
        line(&report, "hugepages"),
        "ok   hugepages: 2048 x 2 MiB (2048 free)"
    );
    let device = lines(&report, "0000:03:00.0").join("\n");
    assert!(
        device.contains("IOMMU group 5, no other members"),
        "{device}"
    );
    assert!(device.contains("bound to vfio-pci"), "{device}");
    assert!(device.contains("reset methods: flr, bus"), "{device}");
    assert!(
        device.contains("BAR0 1 MiB mem32, BAR2 32 B io, BAR3 16 KiB mem32"),
        "{device}"
    );
}

#[test]
fn device_on_its_host_driver_is_not_ready_and_names_the_bind_command() {
    let fake = FakeHost::load("intel-healthy");
    let report = run(&fake, &["04:00.0"], None);
    let device = lines(&report, "0000:04:00.0").join("\n");
    assert!(
        device.contains("fail 0000:04:00.0: bound to host driver xhci_hcd, not vfio-pci; fix: `vfio-vmm host bind 0000:04:00.0`"),
        "{device}"
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn unknown_device_fails_and_points_at_host_list() {
    let fake = FakeHost::load("intel-healthy");
    let report = run(&fake, &["0000:09:00.0"], None);
    let device = line(&report, "0000:09:00.0");
    assert!(device.contains("no such PCI device"), "{device}");
    assert!(device.contains("vfio-vmm host list"), "{device}");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn gpu_sharing_its_group_with_audio_names_the_audio_function() {
    let fake = FakeHost::load("gpu-audio");
    let report = run(&fake, &["01:00.0"], None);
    let device = lines(&report, "0000:01:00.0").join("\n");
    assert!(
        device.contains("IOMMU group 1, shared with 1 other device(s)"),
        "{device}"
    );
    assert!(
        device.contains("fail 0000:01:00.0: group 1 member 0000:01:00.1 (class 040300) is on host driver snd_hda_intel, which blocks the group"),
        "{device}"
    );
    assert!(
        device.contains("vfio-vmm host bind --group 0000:01:00.0"),
        "{device}"
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn gpu_with_a_large_bar_is_noted_against_the_64_bit_window() {
    let fake = FakeHost::load("gpu-audio");
    let report = run(&fake, &["01:00.0"], None);
    let bars = lines(&report, "0000:01:00.0")
        .into_iter()
        .find(|l| l.contains("BAR0"))
        .unwrap();
    assert!(bars.starts_with("ok"), "{bars}");
    assert!(bars.contains("BAR1 32 GiB mem64 pref"), "{bars}");
    assert!(bars.contains("large: BAR1 32 GiB"), "{bars}");
    assert!(
        bars.contains("64-bit BARs take 32.0 GiB of the 64 GiB 64-bit MMIO window"),
        "{bars}"
    );

    let small = MmioWindows {
        below_4g: 1 << 30,
        above_4g: 16 << 30,
    };
    let options = CheckOptions {
        memory: None,
        devices: bdfs(&["01:00.0"]),
        windows: small,
        user: None,
    };
    let report = check(&fake.host(), &options);
    let bars = lines(&report, "0000:01:00.0")
        .into_iter()
        .find(|l| l.contains("BAR0"))
        .unwrap();
    assert!(bars.starts_with("fail"), "{bars}");
    assert!(
        bars.contains("more than the 16 GiB 64-bit MMIO window"),
        "{bars}"
    );
}

#[test]
fn group_shared_with_a_bridge_is_fine() {
    let fake = FakeHost::load("bridge-group");
    let report = run(&fake, &["02:00.0"], None);
    let device = lines(&report, "0000:02:00.0").join("\n");
    assert!(
        device.contains("ok   0000:02:00.0: group 7 member 0000:00:1c.0 (class 060400) is a bridge on pcieport, which may stay with the host"),
        "{device}"
    );
    assert!(!device.contains("blocks the group"), "{device}");
    assert_eq!(
        line(&report, "iommu"),
        "ok   iommu: AMD-Vi enabled (ivhd0), 2 IOMMU groups"
    );
}

#[test]
fn group_shared_with_a_disk_controller_warns_not_to_bind_the_boot_disk() {
    let fake = FakeHost::load("bridge-group");
    let report = run(&fake, &["05:00.0"], None);
    let culprit = lines(&report, "0000:05:00.0")
        .into_iter()
        .find(|l| l.contains("blocks the group"))
        .unwrap();
    assert!(
        culprit.contains("0000:05:00.1 (class 010601) is on host driver ahci"),
        "{culprit}"
    );
    assert!(
        culprit.contains("storage controller: if the host boots from it, do not bind it"),
        "{culprit}"
    );
}

#[test]
fn asking_for_both_functions_of_a_group_does_not_call_either_a_culprit() {
    let fake = FakeHost::load("gpu-audio");
    let report = run(&fake, &["01:00.0", "01:00.1"], None);
    let all = report.to_string();
    assert!(!all.contains("blocks the group"), "{all}");
    assert!(
        all.contains("it is being checked for assignment too"),
        "{all}"
    );
}

#[test]
fn device_held_open_by_a_running_vmm_is_not_ready() {
    let fake = FakeHost::load("intel-healthy");
    fake.hold(4242, "vfio-vmm", "/dev/vfio/5");
    let report = run(&fake, &["03:00.0"], None);
    let device = lines(&report, "0000:03:00.0").join("\n");
    assert!(
        device
            .contains("fail 0000:03:00.0: in use: /dev/vfio/5 is open in process 4242 (vfio-vmm)"),
        "{device}"
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn memlock_is_checked_against_the_guest_size_for_non_root_users() {
    let fake = FakeHost::load("intel-healthy");
    fake.set_euid(1000);
    fake.set_memlock(Some(64 << 20));
    let report = run(&fake, &[], Some(4 << 30));
    let memlock = line(&report, "memlock");
    assert!(
        memlock.starts_with("fail memlock: RLIMIT_MEMLOCK is 64 MiB, below the 4 GiB of guest RAM"),
        "{memlock}"
    );
    assert!(memlock.contains("LimitMEMLOCK="), "{memlock}");
    assert_eq!(report.exit_code(), 1);

    fake.set_memlock(None);
    assert!(line(&run(&fake, &[], Some(4 << 30)), "memlock").starts_with("ok"));
    fake.set_euid(0);
    fake.set_memlock(Some(64 << 20));
    assert!(line(&run(&fake, &[], Some(4 << 30)), "memlock").contains("CAP_IPC_LOCK"));
}

#[test]
fn too_few_free_hugepages_for_the_guest_warn_without_failing() {
    let fake = FakeHost::load("intel-healthy");
    let report = run(&fake, &[], Some(8 << 30));
    let huge = line(&report, "hugepages");
    assert!(huge.starts_with("warn hugepages"), "{huge}");
    assert!(
        huge.contains("4 GiB free, less than the 8 GiB guest"),
        "{huge}"
    );
    assert!(report.ready(), "{report}");
}

#[test]
fn missing_interrupt_remapping_fails_unless_unsafe_interrupts_are_allowed() {
    let fake = FakeHost::load("intel-healthy");
    std::fs::write(
        fake.root().join("proc/interrupts"),
        "  1: 9 IO-APIC 1-edge i8042\n",
    )
    .unwrap();
    std::fs::write(
        fake.root()
            .join("sys/devices/virtual/iommu/dmar1/intel-iommu/ecap"),
        "f050d2\n",
    )
    .unwrap();
    let ir = line(&run(&fake, &[], None), "interrupt remapping");
    assert!(
        ir.starts_with(
            "fail interrupt remapping: not active: dmar1 has no interrupt remapping hardware"
        ),
        "{ir}"
    );
    assert!(ir.contains("allow_unsafe_interrupts=1"), "{ir}");

    let param = fake
        .root()
        .join("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts");
    std::fs::write(param, "Y\n").unwrap();
    let report = run(&fake, &[], None);
    let ir = line(&report, "interrupt remapping");
    assert!(ir.starts_with("warn"), "{ir}");
    assert!(ir.contains("a guest can forge interrupts"), "{ir}");
}

#[test]
fn missing_kvm_and_no_hugepages_say_what_to_do() {
    let fake = FakeHost::load("gpu-audio");
    std::fs::remove_file(fake.root().join("dev/kvm")).unwrap();
    let report = run(&fake, &[], None);
    let kvm = line(&report, "/dev/kvm");
    assert!(
        kvm.starts_with("fail /dev/kvm:") && kvm.contains("modprobe kvm_intel"),
        "{kvm}"
    );
    let huge = line(&report, "hugepages");
    assert_eq!(
        report
            .findings
            .iter()
            .find(|f| f.subject == "hugepages")
            .unwrap()
            .level,
        Level::Warn
    );
    assert!(
        huge.contains("none reserved") && huge.contains("nr_hugepages"),
        "{huge}"
    );
}
