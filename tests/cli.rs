//! The `vfio-vmm run` command line as a user meets it: bad input ends with a
//! one-line error that names the problem and the fix, and a non-zero status.

use std::process::{Command, Output};

fn vfio_vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfio-vmm"))
        .args(args)
        .output()
        .expect("run vfio-vmm")
}

/// Runs `vfio-vmm run` with `args` and returns its stderr, checking it failed with one line.
fn run_fails(args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let out = vfio_vmm(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "vfio-vmm {all:?} succeeded");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("vfio-vmm: error: "), "{stderr}");
    stderr
}

/// A 4 KiB file of zeros standing in for a kernel. Tests run in parallel in
/// one process, so each names its own file.
fn fake_kernel(test: &str) -> std::path::PathBuf {
    let name = format!("vfio-vmm-cli-kernel-{}-{test}", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    path
}

#[test]
fn a_missing_kernel_is_named() {
    let err = run_fails(&["--kernel", "/nonexistent/bzImage"]);
    assert!(
        err.contains("/nonexistent/bzImage") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn a_kernel_that_is_not_a_bzimage_says_what_to_pass() {
    let k = fake_kernel("not-bzimage");
    let err = run_fails(&["--kernel", k.to_str().unwrap(), "--memory", "64M"]);
    if !err.contains("/dev/kvm") {
        assert!(
            err.contains("is not a bzImage") && err.contains("vmlinuz"),
            "{err}"
        );
    }
    std::fs::remove_file(k).unwrap();
}

#[test]
fn vcpu_counts_out_of_range_are_refused() {
    for n in ["0", "255"] {
        let err = run_fails(&["--kernel", "/k", "--cpus", n]);
        assert!(err.contains("use 1 to 254"), "{err}");
    }
}

#[test]
fn memory_too_small_too_large_or_malformed_is_refused() {
    assert!(run_fails(&["--kernel", "/k", "--memory", "16M"]).contains("at least 64 MiB"));
    assert!(run_fails(&["--kernel", "/k", "--memory", "lots"]).contains("a K, M, G or T suffix"));
    assert!(
        run_fails(&["--kernel", "/k", "--memory", "512M,hugepage=on"]).contains("hugepages=on|off")
    );
    let k = fake_kernel("memory");
    let err = run_fails(&["--kernel", k.to_str().unwrap(), "--memory", "65536G"]);
    if !err.contains("/dev/kvm") {
        assert!(err.contains("more than the host can give"), "{err}");
    }
    std::fs::remove_file(k).unwrap();
}

#[test]
fn hugepages_without_reserved_pages_say_how_to_reserve_them() {
    let k = fake_kernel("hugepages");
    let err = run_fails(&[
        "--kernel",
        k.to_str().unwrap(),
        "--memory",
        "32G,hugepages=on",
    ]);
    if !err.contains("/dev/kvm") {
        assert!(err.contains("nr_hugepages"), "{err}");
    }
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_malformed_mac_or_serial_is_refused() {
    let out = vfio_vmm(&[
        "run",
        "--kernel",
        "/k",
        "--net",
        "tap=t0,mac=zz:00:00:00:00:01",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid MAC address"));
    assert!(run_fails(&["--kernel", "/k", "--serial", "pty"]).contains("stdio or file=PATH"));
}
