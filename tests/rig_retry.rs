//! scripts/rig/run.sh's verdicts and exit status, which CI reads: an L1 run
//! that ends without a verdict is tried again, up to RIG_RETRIES (2) more
//! times, and the last try's verdict is the scenario's. A fake `qemu-system-x86_64` (and `cpio`) on PATH plays the
//! L1 runs, so no rig needs to be built.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plays one L1 run per call, following FAKE_PLAN ("lost,pass", ...): `pass`
/// and `fail` print a verdict line, `lost` prints none and exits 1.
const FAKE_QEMU: &str = r#"#!/bin/bash
n=$(cat "$FAKE_STATE" 2>/dev/null || echo 0)
echo $((n + 1)) > "$FAKE_STATE"
IFS=, read -ra plan <<< "$FAKE_PLAN"
case ${plan[$n]:-lost} in
    pass) echo "RIG-VERDICT: PASS" ;;
    fail) echo "RIG-VERDICT: FAIL the L2 guest said no" ;;
    lost) echo "Kernel panic - not syncing: softlockup: hung tasks"; exit 1 ;;
esac
"#;

struct Rig {
    dir: PathBuf,
}

impl Rig {
    /// A RIG_DIR holding empty stand-ins for the parts run.sh packs, and a bin/
    /// with the fake QEMU and a `cpio` that swallows its input.
    fn new(test: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("vfio-vmm-rig-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for part in [
            "l1/base.cpio",
            "l1/vmm.cpio",
            "l2/base.cpio",
            "l2/tools.cpio",
            "l2/vmlinuz",
        ] {
            let p = dir.join(part);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        script(&dir.join("bin/qemu-system-x86_64"), FAKE_QEMU);
        script(&dir.join("bin/cpio"), "#!/bin/sh\ncat > /dev/null\n");
        std::fs::write(dir.join("l1.sh"), "#!/bin/sh\n").unwrap();
        Rig { dir }
    }

    /// Runs `run.sh custom` with the L1 runs following `plan`; returns
    /// (exit status, stdout, stderr, number of L1 runs).
    fn run(&self, plan: &str) -> (i32, String, String, u32) {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rig/run.sh"))
            .arg("custom")
            .env("PATH", path)
            .env("RIG_BUILD", "0")
            .env("RIG_DIR", &self.dir)
            .env("RIG_L1_SCRIPT", self.dir.join("l1.sh"))
            .env("FAKE_PLAN", plan)
            .env("FAKE_STATE", self.dir.join("runs"))
            .output()
            .expect("run scripts/rig/run.sh");
        let runs = std::fs::read_to_string(self.dir.join("runs")).unwrap_or_default();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            runs.trim().parse().unwrap_or(0),
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_run_without_a_verdict_that_passes_on_retry_exits_0() {
    let (status, stdout, stderr, runs) = Rig::new("lost-pass").run("lost,pass");
    assert_eq!(runs, 2);
    assert!(
        stderr.contains("custom: L1 ended without a verdict"),
        "{stderr}"
    );
    assert!(stdout.contains("RIG PASS custom"), "{stdout}");
    assert_eq!(status, 0, "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn a_second_retry_can_still_pass() {
    let rig = Rig::new("lost-lost-pass");
    let (status, stdout, _, runs) = rig.run("lost,lost,pass");
    assert_eq!((status, runs), (0, 3), "{stdout}");
    for log in ["custom.lost.log", "custom.lost2.log"] {
        assert!(rig.dir.join("logs").join(log).exists(), "{log} not kept");
    }
}

#[test]
fn three_runs_without_a_verdict_fail_the_scenario() {
    let (status, stdout, _, runs) = Rig::new("lost-lost-lost").run("lost,lost,lost,pass");
    assert_eq!(runs, 3);
    assert!(
        stdout.contains("RIG FAIL custom: no verdict, qemu exit status 1"),
        "{stdout}"
    );
    assert_eq!(status, 1);
}

#[test]
fn a_fail_verdict_is_final_and_not_retried() {
    let (status, stdout, _, runs) = Rig::new("fail").run("fail,pass");
    assert_eq!(runs, 1);
    assert!(
        stdout.contains("RIG FAIL custom: the L2 guest said no"),
        "{stdout}"
    );
    assert_eq!(status, 1);
}

#[test]
fn a_pass_verdict_exits_0_after_one_run() {
    let (status, stdout, _, runs) = Rig::new("pass").run("pass");
    assert_eq!((status, runs), (0, 1), "{stdout}");
    assert!(stdout.contains("RIG PASS custom"), "{stdout}");
}
