//! `host bind` / `host unbind` over fake hosts whose fake kernel reacts to sysfs writes:
//! refusals name the culprits, state survives between the commands, and a failure
//! halfway leaves every device on the driver it had.

mod common;

use common::{bdfs, FakeHost};
use iommu::setup::bind::{bind, unbind, BindError, Outcome};
use nix::errno::Errno;

#[test]
fn bind_refuses_a_group_with_members_on_host_drivers_and_names_them() {
    let fake = FakeHost::load("gpu-audio");
    let err = bind(&fake.host(), &bdfs(&["01:00.0"]), false).unwrap_err();
    assert!(
        matches!(err, BindError::NotViable { group: 1, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("IOMMU group 1 also holds 0000:01:00.1 (snd_hda_intel)"),
        "{text}"
    );
    assert!(text.contains("pass --group"), "{text}");
    assert_eq!(fake.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert!(
        fake.writes().is_empty(),
        "nothing may be written: {:?}",
        fake.writes()
    );
}

#[test]
fn bind_group_loads_vfio_pci_binds_every_function_and_remembers_the_drivers() {
    let fake = FakeHost::load("gpu-audio");
    let outcomes = bind(&fake.host(), &bdfs(&["01:00.0"]), true).unwrap();
    assert_eq!(fake.modules_loaded(), vec!["vfio-pci".to_string()]);
    assert_eq!(
        outcomes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "0000:01:00.0: bound to vfio-pci (was on nvidia)".to_string(),
            "0000:01:00.1: bound to vfio-pci (was on snd_hda_intel)".to_string(),
        ]
    );
    assert_eq!(fake.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(fake.driver("0000:01:00.1").as_deref(), Some("vfio-pci"));
    assert_eq!(
        fake.driver("0000:00:01.0").as_deref(),
        Some("pcieport"),
        "bridges are never bound"
    );
    let state = std::fs::read_to_string(fake.state_dir().join("0000:01:00.1.driver")).unwrap();
    assert!(state.contains("driver=snd_hda_intel"), "{state}");
    // The kernel sees the documented sequence for each device.
    let writes: Vec<String> = fake
        .writes()
        .iter()
        .take(3)
        .map(|(p, v)| format!("{p} <- {v}"))
        .collect();
    assert_eq!(
        writes,
        vec![
            "sys/bus/pci/devices/0000:01:00.0/driver_override <- vfio-pci",
            "sys/bus/pci/drivers/nvidia/unbind <- 0000:01:00.0",
            "sys/bus/pci/drivers_probe <- 0000:01:00.0",
        ]
    );
}

#[test]
fn listing_every_function_binds_without_group_flag() {
    let fake = FakeHost::load("gpu-audio");
    bind(&fake.host(), &bdfs(&["01:00.0", "0000:01:00.1"]), false).unwrap();
    assert_eq!(fake.driver("0000:01:00.1").as_deref(), Some("vfio-pci"));
}

#[test]
fn group_with_a_bridge_binds_the_endpoint_and_leaves_the_bridge() {
    let fake = FakeHost::load("bridge-group");
    let outcomes = bind(&fake.host(), &bdfs(&["02:00.0"]), false).unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(fake.driver("0000:02:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(fake.driver("0000:00:1c.0").as_deref(), Some("pcieport"));
}

#[test]
fn binding_a_bridge_is_refused() {
    let fake = FakeHost::load("bridge-group");
    let err = bind(&fake.host(), &bdfs(&["00:1c.0"]), false).unwrap_err();
    assert!(
        err.to_string().contains("0000:00:1c.0 is a PCI bridge"),
        "{err}"
    );
}

#[test]
fn device_already_on_vfio_pci_is_reported_not_an_error() {
    let fake = FakeHost::load("intel-healthy");
    let outcomes = bind(&fake.host(), &bdfs(&["03:00.0"]), false).unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::AlreadyBound {
            bdf: bdfs(&["03:00.0"])[0],
            driver: "vfio-pci".into()
        }]
    );
    assert_eq!(
        outcomes[0].to_string(),
        "0000:03:00.0: already bound to vfio-pci, nothing to do"
    );
    assert!(fake.writes().is_empty());
}

#[test]
fn not_root_is_refused_before_anything_is_read_or_written() {
    let fake = FakeHost::load("intel-healthy");
    fake.set_euid(1000);
    let err = bind(&fake.host(), &bdfs(&["04:00.0"]), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("must run as root (effective uid is 1000); re-run it with sudo"),
        "{err}"
    );
    let err = unbind(&fake.host(), &bdfs(&["03:00.0"]), false).unwrap_err();
    assert!(
        matches!(
            err,
            BindError::NotRoot {
                action: "unbind",
                ..
            }
        ),
        "{err}"
    );
    assert!(fake.writes().is_empty());
}

#[test]
fn unknown_device_is_refused_with_a_hint() {
    let fake = FakeHost::load("intel-healthy");
    let err = bind(&fake.host(), &bdfs(&["0000:0a:00.0"]), false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no PCI device 0000:0a:00.0 on this host"),
        "{text}"
    );
    assert!(text.contains("vfio-vmm host list"), "{text}");
}

#[test]
fn device_without_a_group_is_refused_with_the_iommu_hint() {
    let fake = FakeHost::load("no-iommu");
    let err = bind(&fake.host(), &bdfs(&["02:00.0"]), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("0000:02:00.0 has no IOMMU group: the IOMMU is off"),
        "{err}"
    );
}

#[test]
fn failure_on_the_second_device_rolls_the_first_back_to_its_driver() {
    let fake = FakeHost::load("gpu-audio");
    fake.fail_write("drivers_probe", "0000:01:00.1", Errno::EBUSY, None);
    let err = bind(&fake.host(), &bdfs(&["01:00.0"]), true).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("writing \"0000:01:00.1\" to"), "{text}");
    assert!(
        text.contains("Device or resource busy (EBUSY, errno 16)"),
        "{text}"
    );
    assert!(
        text.contains("`dmesg | tail` shows the kernel's reason"),
        "{text}"
    );
    assert!(
        text.contains("Rolled back: 0000:01:00.1 on snd_hda_intel, 0000:01:00.0 on nvidia"),
        "{text}"
    );
    assert_eq!(fake.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert_eq!(
        fake.driver("0000:01:00.1").as_deref(),
        Some("snd_hda_intel")
    );
    assert_eq!(fake.driver_override("0000:01:00.0"), None);
    assert_eq!(fake.driver_override("0000:01:00.1"), None);
    assert!(
        !fake.state_dir().join("0000:01:00.0.driver").exists(),
        "state must be forgotten on rollback"
    );
}

#[test]
fn bind_refused_by_the_kernel_on_unbind_leaves_the_device_on_its_driver() {
    let fake = FakeHost::load("intel-healthy");
    fake.fail_write(
        "drivers/xhci_hcd/unbind",
        "0000:04:00.0",
        Errno::EPERM,
        None,
    );
    let err = bind(&fake.host(), &bdfs(&["04:00.0"]), false).unwrap_err();
    assert!(err.to_string().contains("EPERM"), "{err}");
    assert_eq!(fake.driver("0000:04:00.0").as_deref(), Some("xhci_hcd"));
    assert_eq!(fake.driver_override("0000:04:00.0"), None);
}

#[test]
fn vfio_pci_that_cannot_be_loaded_is_reported_before_any_device_changes() {
    let fake = FakeHost::load("gpu-audio");
    fake.set_modprobe_ok(false);
    let err = bind(&fake.host(), &bdfs(&["01:00.0"]), true).unwrap_err();
    assert!(
        err.to_string()
            .contains("vfio-pci is not available: modprobe vfio-pci failed"),
        "{err}"
    );
    assert_eq!(fake.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert!(fake.writes().is_empty());
}

#[test]
fn unbind_restores_the_remembered_drivers_and_clears_the_override() {
    let fake = FakeHost::load("gpu-audio");
    bind(&fake.host(), &bdfs(&["01:00.0"]), true).unwrap();
    let outcomes = unbind(&fake.host(), &bdfs(&["01:00.0"]), true).unwrap();
    assert_eq!(
        outcomes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "0000:01:00.0: unbound from vfio-pci, now on nvidia".to_string(),
            "0000:01:00.1: unbound from vfio-pci, now on snd_hda_intel".to_string(),
        ]
    );
    assert_eq!(fake.driver("0000:01:00.0").as_deref(), Some("nvidia"));
    assert_eq!(fake.driver_override("0000:01:00.0"), None);
    assert!(!fake.state_dir().join("0000:01:00.0.driver").exists());
}

#[test]
fn unbind_without_state_lets_the_kernel_probe_the_host_driver() {
    let fake = FakeHost::load("intel-healthy");
    let outcomes = unbind(&fake.host(), &bdfs(&["03:00.0"]), false).unwrap();
    assert_eq!(
        outcomes[0].to_string(),
        "0000:03:00.0: unbound from vfio-pci, now on igb"
    );
    assert!(fake
        .writes()
        .iter()
        .any(|(p, v)| p == "sys/bus/pci/drivers_probe" && v == "0000:03:00.0"));
}

#[test]
fn unbind_of_a_device_not_on_vfio_pci_says_so() {
    let fake = FakeHost::load("intel-healthy");
    let outcomes = unbind(&fake.host(), &bdfs(&["04:00.0"]), false).unwrap();
    assert_eq!(
        outcomes[0].to_string(),
        "0000:04:00.0: not bound to vfio-pci (on xhci_hcd), nothing to do"
    );
    assert!(fake.writes().is_empty());
}

#[test]
fn unbind_refuses_a_device_in_use_by_a_running_vmm() {
    let fake = FakeHost::load("intel-healthy");
    fake.hold(777, "vfio-vmm", "/dev/vfio/5");
    let err = unbind(&fake.host(), &bdfs(&["03:00.0"]), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0000:03:00.0 is in use: /dev/vfio/5 is open in pid 777 (vfio-vmm); stop that guest before unbinding"
    );
    assert_eq!(fake.driver("0000:03:00.0").as_deref(), Some("vfio-pci"));
    assert!(fake.writes().is_empty());
}

#[test]
fn unbind_rolls_back_to_vfio_pci_when_the_old_driver_refuses_the_device() {
    let fake = FakeHost::load("gpu-audio");
    bind(&fake.host(), &bdfs(&["01:00.0"]), true).unwrap();
    fake.fail_write(
        "drivers/snd_hda_intel/bind",
        "0000:01:00.1",
        Errno::ENODEV,
        None,
    );
    let err = unbind(&fake.host(), &bdfs(&["01:00.0", "01:00.1"]), false).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("No such device (ENODEV, errno 19)"), "{text}");
    assert!(
        text.contains("Rolled back: 0000:01:00.1 on vfio-pci, 0000:01:00.0 on vfio-pci"),
        "{text}"
    );
    assert_eq!(fake.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(fake.driver("0000:01:00.1").as_deref(), Some("vfio-pci"));
    // The state is kept, so a later unbind can still restore the drivers.
    assert!(fake.state_dir().join("0000:01:00.0.driver").exists());
}

#[test]
fn failed_rollback_is_reported_with_what_to_do() {
    let fake = FakeHost::load("intel-healthy");
    fake.fail_write("drivers_probe", "0000:04:00.0", Errno::EIO, None);
    fake.fail_write("drivers/xhci_hcd/bind", "0000:04:00.0", Errno::EIO, None);
    let err = bind(&fake.host(), &bdfs(&["04:00.0"]), false).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Rollback FAILED for 0000:04:00.0"), "{text}");
    assert!(
        text.contains("echo BDF > /sys/bus/pci/drivers_probe"),
        "{text}"
    );
}

#[test]
fn unbind_refuses_a_device_held_through_its_iommufd_cdev() {
    let fake = FakeHost::load("intel-healthy");
    std::fs::create_dir_all(
        common::tree::device_dir(fake.root(), "0000:03:00.0").join("vfio-dev/vfio0"),
    )
    .unwrap();
    fake.hold(900, "vfio-vmm", "/dev/vfio/devices/vfio0");
    let err = unbind(&fake.host(), &bdfs(&["03:00.0"]), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("/dev/vfio/devices/vfio0 is open in pid 900 (vfio-vmm)"),
        "{err}"
    );
    assert_eq!(fake.driver("0000:03:00.0").as_deref(), Some("vfio-pci"));
}

#[test]
fn unbind_finishes_a_bind_that_was_interrupted_after_the_override() {
    let fake = FakeHost::load("intel-healthy");
    // A bind killed between `driver_override` and `drivers_probe`: no driver, override set,
    // previous driver remembered.
    iommu::setup::state::remember(&fake.state_dir(), common::bdf("04:00.0"), Some("xhci_hcd"))
        .unwrap();
    common::tree::unlink_driver(fake.root(), "0000:04:00.0", "xhci_hcd");
    std::fs::write(
        common::tree::device_dir(fake.root(), "0000:04:00.0").join("driver_override"),
        "vfio-pci\n",
    )
    .unwrap();
    let outcomes = unbind(&fake.host(), &bdfs(&["04:00.0"]), false).unwrap();
    assert_eq!(
        outcomes[0].to_string(),
        "0000:04:00.0: unbound from vfio-pci, now on xhci_hcd"
    );
    assert_eq!(fake.driver_override("0000:04:00.0"), None);
}

#[test]
fn a_second_bind_or_unbind_waits_for_the_first_and_times_out_with_a_message() {
    use iommu::setup::state::{lock, StateError};
    use std::time::Duration;
    let fake = FakeHost::load("gpu-audio");
    let held = lock(&fake.state_dir(), Duration::ZERO).unwrap();
    let err = lock(&fake.state_dir(), Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, StateError::Busy { .. }), "{err}");
    assert!(
        err.to_string().contains("another `vfio-vmm host bind`"),
        "{err}"
    );
    // A bind started while the lock is held goes ahead once it is released.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
    });
    let outcomes = bind(&fake.host(), &bdfs(&["01:00.0"]), true).unwrap();
    release.join().unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(fake.driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
}
