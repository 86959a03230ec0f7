//! `vm.pause`, `vm.resume` and `vm.power-button` against the fake backend:
//! cloud-hypervisor's status codes in every state, and a paused VM that
//! still shuts down, deletes and ends.

use super::*;
use crate::api::state::VmState;

/// A rig with a created and booted VM.
fn booted(name: &str) -> Rig {
    let rig = Rig::new(name, Limits::default());
    assert_eq!(rig.put("vm.create", Some(&rig.config(""))).status, 204);
    assert_eq!(rig.put("vm.boot", None).status, 204);
    rig
}

#[test]
fn pause_resume_and_power_button_answer_as_cloud_hypervisor_in_each_state() {
    let rig = Rig::new("pause-states", Limits::default());
    for endpoint in ["vm.pause", "vm.resume", "vm.power-button"] {
        assert_error(rig.put(endpoint, None), 404, "not created");
    }
    assert_eq!(rig.put("vm.create", Some(&rig.config(""))).status, 204);
    assert_error(
        rig.put("vm.pause", None),
        405,
        "not running (it is Created)",
    );
    assert_error(
        rig.put("vm.resume", None),
        405,
        "not paused (it is Created)",
    );
    assert_error(rig.put("vm.power-button", None), 405, "it is Created");
    assert_eq!(rig.put("vm.boot", None).status, 204);
    assert_error(
        rig.put("vm.resume", None),
        405,
        "not paused (it is Running)",
    );

    assert_eq!(rig.put("vm.pause", None).status, 204);
    assert_eq!(rig.state(), "Paused");
    assert_error(rig.put("vm.pause", None), 405, "already paused");
    assert_error(rig.put("vm.boot", None), 405, "already booted");
    let disk = format!(r#"{{"path": "{}"}}"#, rig.kernel.display());
    assert_error(rig.put("vm.add-disk", Some(&disk)), 400, "hotplug");
    assert_eq!(rig.get("vm.counters").status, 200);
    // A press while paused waits in the device; the guest sees it on resume.
    assert_eq!(rig.put("vm.power-button", None).status, 204);
    assert_eq!(rig.put("vm.resume", None).status, 204);
    assert_eq!(rig.state(), "Running");
    assert_eq!(rig.put("vm.power-button", None).status, 204);
    assert_eq!(
        rig.seen.lock().unwrap().actions,
        ["pause", "power-button", "resume", "power-button"]
    );
    assert_eq!(rig.put("vm.shutdown", None).status, 204);
    assert_error(rig.put("vm.pause", None), 405, "it is Shutdown");
    assert_error(rig.put("vm.power-button", None), 405, "it is Shutdown");
}

#[test]
fn a_paused_vm_shuts_down_reboots_and_deletes() {
    let rig = booted("pause-teardown");
    assert_eq!(rig.put("vm.pause", None).status, 204);
    assert_eq!(rig.put("vm.shutdown", None).status, 204);
    assert_eq!(rig.state(), "Shutdown");
    assert_eq!(rig.put("vm.boot", None).status, 204);
    assert_eq!(rig.put("vm.pause", None).status, 204);
    assert_eq!(rig.put("vm.reboot", None).status, 204);
    assert_eq!(rig.state(), "Running", "a reboot boots a running VM");
    assert_eq!(rig.put("vm.pause", None).status, 204);
    assert_eq!(rig.put("vm.delete", None).status, 204);
    let seen = rig.seen.lock().unwrap();
    assert_eq!((seen.boots.len(), seen.shutdowns), (3, 3));
}

#[test]
fn a_pause_the_backend_cannot_make_answers_500_and_the_vm_keeps_running() {
    let rig = booted("pause-fails");
    rig.seen.lock().unwrap().fail_pause = Some("1 vCPU(s) did not leave KVM_RUN".into());
    assert_error(rig.put("vm.pause", None), 500, "did not leave KVM_RUN");
    assert_eq!(rig.state(), "Running");
    assert_error(rig.put("vm.resume", None), 405, "not paused");
}

#[test]
fn a_vm_that_ends_while_paused_ends_the_process() {
    let (tx, _rx) = mpsc::channel();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut controller = Controller::new(Box::new(Fake(seen.clone())), tx);
    let kernel = fake_bzimage("pause-exit");
    let json = format!(
        r#"{{"payload": {{"kernel": {:?}}}}}"#,
        kernel.display().to_string()
    );
    controller.create(&json).unwrap();
    controller.boot().unwrap();
    controller.pause().unwrap();
    assert_eq!(controller.state(), VmState::Paused);
    assert_eq!(controller.vm_exited(1, &ExitReason::Signal(15)), Some(0));
    assert_eq!(controller.state(), VmState::Shutdown);
    assert_eq!(seen.lock().unwrap().shutdowns, 1);
    let _ = std::fs::remove_file(kernel);
}
