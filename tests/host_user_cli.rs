//! `vfio-vmm host check --user` and `host bind --owner` as a user meets them: unknown
//! users are refused before anything is read or written, with what to do, and the user
//! findings appear in the report.

use std::process::{Command, Output};

fn vfio_vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfio-vmm"))
        .args(args)
        .output()
        .expect("run vfio-vmm")
}

/// An empty directory standing in for the host's root, so nothing real is touched.
fn empty_root(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vfio-vmm-user-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn unknown_users_are_refused_with_what_to_give() {
    let root = empty_root("unknown");
    let root = root.to_str().unwrap();
    for args in [
        vec![
            "--sysfs-root",
            root,
            "host",
            "check",
            "--user",
            "no-such-user-vfio",
        ],
        vec![
            "--sysfs-root",
            root,
            "host",
            "bind",
            "--owner",
            "no-such-user-vfio",
            "01:00.0",
        ],
    ] {
        let out = vfio_vmm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("unknown user \"no-such-user-vfio\"") && stderr.contains("numeric uid"),
            "{args:?}: {stderr}"
        );
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn pid_and_tap_need_user() {
    for args in [
        ["host", "check", "--pid", "1"],
        ["host", "check", "--tap", "tap0"],
    ] {
        let out = vfio_vmm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--user"), "{args:?}: {stderr}");
    }
}

#[test]
fn check_for_root_reports_the_user_lines_and_missing_nodes() {
    let root = empty_root("root");
    let out = vfio_vmm(&[
        "--sysfs-root",
        root.to_str().unwrap(),
        "host",
        "check",
        "--user",
        "0",
        "--tap",
        "tap0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok   user: root: uid 0"), "{stdout}");
    assert!(
        stdout.contains("fail /dev/vfio/vfio: cannot stat"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok   memlock: root has CAP_IPC_LOCK"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok   tap tap0: does not exist; vfio-vmm creates it"),
        "{stdout}"
    );
    std::fs::remove_dir_all(root).unwrap();
}
