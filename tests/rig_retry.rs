//! scripts/rig/run.sh's verdicts, retries and grouping, which CI reads.
//! Scenarios with the same device set share one L1 boot; a lost run (L1
//! ended without a scenario's verdict) boots again only the scenarios left
//! without a verdict, up to RIG_RETRIES (2) more times each; a verdict is
//! final. An L1 that prints nothing for RIG_SILENCE seconds is killed and
//! counts as lost; a `RIG-KILL-L1: NAME` line gets L1 killed at once and
//! counts as NAME's PASS. A fake `qemu-system-x86_64` (and `cpio`) on PATH plays the L1 runs,
//! so no rig needs to be built. The grouping tests use the real
//! scripts/rig/scenarios.table: boot, boot-hugepages and pci need no device,
//! edu has its own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plays one L1 boot per call. It reads the boot's scenarios from the
/// initramfs (where the fake cpio put L1's /rig/env) and appends them, with
/// the timeout that run.sh gave the boot, as one line to FAKE_STATE. Then it
/// follows FAKE_PLAN, whose boots are separated by `;`, each a comma list of
/// one outcome per scenario: `pass` and `fail` print the scenario's verdict,
/// `lost` starts it and freezes L1 (a panic, exit status 1), `silent` starts
/// it and hangs without a word (a frozen L1 CPU), `kill` asks for L1's death
/// (`RIG-KILL-L1: NAME`, as disk-durability does) and then hangs too.
const FAKE_QEMU: &str = r#"#!/bin/bash
while [ $# -gt 0 ] && [ "$1" != -initrd ]; do shift; done
eval "$(grep -a '^RIG_SCENARIOS=' "$2")"
read -ra names <<< "$RIG_SCENARIOS"
tmo=$(tr '\0' ' ' < /proc/$PPID/cmdline | cut -d' ' -f4)
echo "${names[*]} | timeout $tmo" >> "$FAKE_STATE"
n=$(wc -l < "$FAKE_STATE")
IFS=';' read -ra boots <<< "$FAKE_PLAN"
IFS=, read -ra plan <<< "${boots[$((n - 1))]:-}"
echo "RIG-L1: setup done"
for i in "${!names[@]}"; do
    s=${names[$i]}
    echo "RIG-L1: scenario $s ($((i + 1)) of ${#names[@]})"
    case ${plan[$i]:-} in
        pass) echo "RIG-OUT: $s says hello"; echo "RIG-VERDICT: $s PASS" ;;
        fail) echo "RIG-VERDICT: $s FAIL the L2 guest said no" ;;
        lost) echo "Kernel panic - not syncing: softlockup: hung tasks"; exit 1 ;;
        silent) exec sleep 60 ;;
        kill) echo "RIG-OUT: $s flushed"; echo "RIG-KILL-L1: $s"; exec sleep 60 ;;
        *) echo "fake qemu: no outcome for $s in boot $n of FAKE_PLAN $FAKE_PLAN"; exit 3 ;;
    esac
done
"#;

struct Rig {
    dir: PathBuf,
}

impl Rig {
    /// A RIG_DIR holding empty stand-ins for the parts run.sh packs, and a bin/
    /// with the fake QEMU and a `cpio` that writes only L1's /rig/env.
    fn new(test: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("vfio-vmm-rig-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for part in [
            "l1/base.cpio",
            "l1/vmm.cpio",
            "l1/qemu.cpio",
            "l1/iperf.cpio",
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
        // The "archive" is L1's /rig/env, which names the boot's scenarios.
        script(
            &dir.join("bin/cpio"),
            "#!/bin/sh\nwhile read -r f; do [ \"$f\" != ./rig/env ] || cat \"$f\"; done\n",
        );
        std::fs::write(dir.join("l1.sh"), "#!/bin/sh\n").unwrap();
        Rig { dir }
    }

    /// Runs `run.sh custom` with the L1 runs following `plan`; returns
    /// (exit status, stdout, stderr, number of L1 runs).
    fn run(&self, plan: &str) -> (i32, String, String, u32) {
        let (status, stdout, stderr, boots) = self.run_scenarios(&["custom"], plan);
        (status, stdout, stderr, boots.len() as u32)
    }

    /// Runs `run.sh SCENARIO...` with the L1 runs following `plan`; returns
    /// (exit status, stdout, stderr, one "SCENARIOS | timeout N" line per L1 boot).
    fn run_scenarios(&self, scenarios: &[&str], plan: &str) -> (i32, String, String, Vec<String>) {
        self.run_with(scenarios, plan, &[])
    }

    /// `run_scenarios` with extra environment variables for run.sh.
    fn run_with(
        &self,
        scenarios: &[&str],
        plan: &str,
        env: &[(&str, &str)],
    ) -> (i32, String, String, Vec<String>) {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rig/run.sh"))
            .args(scenarios)
            .env("PATH", path)
            .env("RIG_BUILD", "0")
            .env("RIG_DIR", &self.dir)
            .env("RIG_L1_SCRIPT", self.dir.join("l1.sh"))
            .env("FAKE_PLAN", plan)
            .env("FAKE_STATE", self.dir.join("boots"))
            .envs(env.iter().copied())
            .output()
            .expect("run scripts/rig/run.sh");
        let boots = std::fs::read_to_string(self.dir.join("boots")).unwrap_or_default();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            boots.lines().map(str::to_owned).collect(),
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
    let (status, stdout, stderr, runs) = Rig::new("lost-pass").run("lost;pass");
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
    let (status, stdout, _, runs) = rig.run("lost;lost;pass");
    assert_eq!((status, runs), (0, 3), "{stdout}");
    for log in ["custom.lost.log", "custom.lost2.log"] {
        assert!(rig.dir.join("logs").join(log).exists(), "{log} not kept");
    }
}

#[test]
fn three_runs_without_a_verdict_fail_the_scenario() {
    let (status, stdout, _, runs) = Rig::new("lost-lost-lost").run("lost;lost;lost;pass");
    assert_eq!(runs, 3);
    assert!(
        stdout.contains("RIG FAIL custom: no verdict, qemu exit status 1"),
        "{stdout}"
    );
    assert_eq!(status, 1);
}

#[test]
fn a_fail_verdict_is_final_and_not_retried() {
    let (status, stdout, _, runs) = Rig::new("fail").run("fail;pass");
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

/// Groups boot in the order of the arguments, a group's scenarios run in table order.
#[test]
fn scenarios_with_the_same_device_set_share_one_boot() {
    let rig = Rig::new("group");
    let (status, stdout, stderr, boots) =
        rig.run_scenarios(&["boot", "edu", "pci", "bench-boot"], "pass,pass,pass;pass");
    assert_eq!(
        boots,
        ["boot bench-boot pci | timeout 390", "edu | timeout 120"],
        "{stderr}"
    );
    let verdicts: Vec<&str> = stdout.lines().filter(|l| l.starts_with("RIG ")).collect();
    assert_eq!(
        verdicts,
        [
            "RIG PASS boot",
            "RIG PASS bench-boot",
            "RIG PASS pci",
            "RIG PASS edu"
        ]
    );
    assert!(stdout.contains("  pci says hello"), "{stdout}");
    assert_eq!(status, 0, "stdout: {stdout}\nstderr: {stderr}");
    // Each scenario's own part of the L1 log, with its RIG-OUT line and verdict.
    let log = std::fs::read_to_string(rig.dir.join("logs/pci.log")).unwrap();
    assert!(log.contains("RIG-OUT: pci says hello"), "{log}");
    assert!(log.contains("RIG-VERDICT: pci PASS"), "{log}");
    assert!(!log.contains("RIG-VERDICT: bench-boot"), "{log}");
    assert!(rig.dir.join("logs/l1-none.1.log").exists());
}

#[test]
fn a_lost_run_boots_again_only_the_scenarios_without_a_verdict() {
    let rig = Rig::new("group-lost");
    let (status, stdout, stderr, boots) =
        rig.run_scenarios(&["boot", "boot-hugepages", "pci"], "pass,lost;pass,pass");
    assert_eq!(
        boots,
        [
            "boot boot-hugepages pci | timeout 360",
            "boot-hugepages pci | timeout 240"
        ]
    );
    assert!(
        stderr.contains("boot-hugepages: L1 ended without a verdict"),
        "{stderr}"
    );
    assert!(stderr.contains("pci: not reached"), "{stderr}");
    assert!(rig.dir.join("logs/boot-hugepages.lost.log").exists());
    assert_eq!(stdout.matches("RIG PASS").count(), 3, "{stdout}");
    assert_eq!(status, 0, "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn a_fail_in_a_group_is_final_and_the_next_scenario_still_runs() {
    let (status, stdout, _, boots) =
        Rig::new("group-fail").run_scenarios(&["boot", "pci"], "fail,pass");
    assert_eq!(boots.len(), 1);
    assert!(
        stdout.contains("RIG FAIL boot: the L2 guest said no"),
        "{stdout}"
    );
    assert!(stdout.contains("RIG PASS pci"), "{stdout}");
    assert_eq!(status, 1);
}

#[test]
fn a_scenario_that_keeps_freezing_l1_fails_and_the_next_one_still_runs() {
    let (status, stdout, stderr, boots) =
        Rig::new("group-freeze").run_scenarios(&["boot", "pci"], "lost;lost;lost;pass");
    assert_eq!(boots.len(), 4, "{boots:?}");
    assert_eq!(boots[3], "pci | timeout 120");
    assert!(
        stdout.contains("RIG FAIL boot: no verdict, qemu exit status 1"),
        "{stdout}"
    );
    assert!(stdout.contains("RIG PASS pci"), "{stdout}\n{stderr}");
    assert_eq!(status, 1);
}

#[test]
fn an_unknown_scenario_fails_and_a_repeated_one_is_refused() {
    let (status, stdout, _, boots) = Rig::new("unknown").run_scenarios(&["no-such", "pci"], "pass");
    assert!(
        stdout.contains("RIG FAIL no-such: no such scenario"),
        "{stdout}"
    );
    assert!(stdout.contains("RIG PASS pci"), "{stdout}");
    assert_eq!((status, boots.len()), (1, 1));
    let (status, _, stderr, boots) = Rig::new("twice").run_scenarios(&["pci", "pci"], "pass");
    assert!(stderr.contains("scenario pci given twice"), "{stderr}");
    assert_eq!((status, boots.len()), (2, 0));
}

/// An L1 that stops printing (a CPU frozen by TCG, no panic) is killed after
/// RIG_SILENCE seconds and counts as a lost run, which boots again.
#[test]
fn a_silent_l1_is_killed_and_booted_again() {
    let rig = Rig::new("silent");
    let (status, stdout, stderr, boots) =
        rig.run_with(&["custom"], "silent;pass", &[("RIG_SILENCE", "2")]);
    assert_eq!(boots.len(), 2, "{stderr}");
    assert!(
        stderr.contains("silent for 2s (RIG_SILENCE), killed"),
        "{stderr}"
    );
    assert!(stdout.contains("RIG PASS custom"), "{stdout}");
    assert_eq!(status, 0, "stdout: {stdout}\nstderr: {stderr}");
    let lost = std::fs::read_to_string(rig.dir.join("logs/custom.lost.log")).unwrap();
    assert!(lost.contains("RIG-L1: scenario custom"), "{lost}");
}

#[test]
fn a_scenario_that_stays_silent_fails_with_the_reason() {
    let (status, stdout, _, boots) =
        Rig::new("silent3").run_with(&["custom"], "silent;silent;silent", &[("RIG_SILENCE", "1")]);
    assert_eq!(boots.len(), 3);
    assert!(
        stdout.contains("RIG FAIL custom: no verdict, L1 was silent for 1s"),
        "{stdout}"
    );
    assert_eq!(status, 1);
}

/// `RIG-KILL-L1: NAME` gets L1's QEMU a SIGKILL at once and counts as NAME's
/// PASS; the scenarios after it in the group boot again without counting.
#[test]
fn a_kill_request_ends_l1_and_the_rest_of_the_group_boots_again() {
    let rig = Rig::new("kill");
    let (status, stdout, stderr, boots) = rig.run_scenarios(&["boot", "pci"], "kill,pass;pass");
    assert_eq!(
        boots,
        ["boot pci | timeout 240", "pci | timeout 120"],
        "{stderr}"
    );
    assert!(stderr.contains("pci: not reached"), "{stderr}");
    assert!(!stderr.contains("without a verdict"), "{stderr}");
    assert!(!stderr.contains("Killed"), "bash's job notice: {stderr}");
    let verdicts: Vec<&str> = stdout.lines().filter(|l| l.starts_with("RIG ")).collect();
    assert_eq!(verdicts, ["RIG PASS boot", "RIG PASS pci"], "{stdout}");
    assert!(stdout.contains("  boot flushed"), "{stdout}");
    let log = std::fs::read_to_string(rig.dir.join("logs/boot.log")).unwrap();
    assert!(
        log.contains("qemu exit status 137")
            && log.contains("killed on request (RIG-KILL-L1: boot)"),
        "{log}"
    );
    assert_eq!(status, 0, "stdout: {stdout}\nstderr: {stderr}");
}

/// RIG_VERBOSE=1 streams the L1 serial log to stderr while it is written.
#[test]
fn verbose_streams_the_l1_log_to_stderr() {
    let (status, _, stderr, _) =
        Rig::new("verbose").run_with(&["custom"], "pass", &[("RIG_VERBOSE", "1")]);
    assert!(stderr.contains("RIG-OUT: custom says hello"), "{stderr}");
    assert!(stderr.contains("RIG-VERDICT: custom PASS"), "{stderr}");
    assert_eq!(status, 0, "{stderr}");
}
