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

/// A scratch path for `test`. Tests run in parallel in one process, so each
/// names its own.
fn scratch(test: &str) -> std::path::PathBuf {
    let name = format!("vfio-vmm-cli-{}-{test}", std::process::id());
    std::env::temp_dir().join(name)
}

/// A 4 KiB file of zeros: not a kernel.
fn zeros(test: &str) -> std::path::PathBuf {
    let path = scratch(test);
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    path
}

/// A file with a bzImage setup header and nothing bootable after it: it
/// passes the checks made before anything is built, so the run fails later.
fn fake_kernel(test: &str) -> std::path::PathBuf {
    let mut image = vec![0u8; 4096];
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 1;
    image[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
    let path = scratch(test);
    std::fs::write(&path, image).unwrap();
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
fn the_kernel_is_checked_before_any_device_is_touched() {
    // No /dev/kvm, no sysfs and no device are needed to get this error:
    // the configuration is checked before anything is opened.
    let err = run_fails(&[
        "--kernel",
        "/missing",
        "--device",
        "0000:01:00.0",
        "--sysfs-root",
        "/nonexistent-sysfs",
    ]);
    assert!(err.contains("cannot read the kernel /missing"), "{err}");
}

#[test]
fn a_kernel_that_is_not_a_bzimage_says_what_to_pass() {
    let k = zeros("not-bzimage");
    let err = run_fails(&["--kernel", k.to_str().unwrap(), "--memory", "64M"]);
    assert!(
        err.contains("is not a bzImage") && err.contains("vmlinuz"),
        "{err}"
    );
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
    // The host's free memory is checked before /dev/kvm is opened.
    let k = fake_kernel("memory");
    let err = run_fails(&["--kernel", k.to_str().unwrap(), "--memory", "65536G"]);
    assert!(err.contains("more than the host can give"), "{err}");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn run_and_host_check_take_the_same_memory_sizes() {
    let k = fake_kernel("one-size-grammar");
    for size in ["1T", "1GiB", "4096"] {
        // run accepts the size and fails later (the host cannot give 1 TiB
        // here, or the fake kernel does not boot).
        let err = run_fails(&["--kernel", k.to_str().unwrap(), "--memory", size]);
        assert!(!err.contains("--memory:"), "{size}: {err}");
        let out = vfio_vmm(&["host", "check", "--memory", size]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c <= 1) && !stderr.contains("invalid value"),
            "host check --memory {size}: {stderr}"
        );
    }
    for size in ["1X", "16M"] {
        run_fails(&["--kernel", k.to_str().unwrap(), "--memory", size]);
        let out = vfio_vmm(&["host", "check", "--memory", size]);
        assert_eq!(out.status.code(), Some(2), "host check --memory {size}");
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
    assert!(err.contains("nr_hugepages"), "{err}");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_malformed_device_mac_or_serial_is_refused() {
    let err = run_fails(&["--kernel", "/k", "--net", "tap=t0,mac=zz:00:00:00:00:01"]);
    assert!(err.contains("invalid MAC address"), "{err}");
    assert!(
        run_fails(&["--kernel", "/k", "--serial", "pty"]).contains("stdio, null, off or file=PATH")
    );
    let err = run_fails(&["--kernel", "/k", "--device", "zz:00"]);
    assert!(err.contains("malformed PCI address 'zz:00'"), "{err}");
    let err = run_fails(&["--kernel", "/k", "--serial", "file=/nonexistent/dir/log"]);
    assert!(err.contains("create the directory"), "{err}");
}

/// A fake sysfs tree: one IOMMU group and `0000:01:00.0` bound to e1000e.
fn fake_sysfs(test: &str) -> std::path::PathBuf {
    let root = scratch(test);
    let dev = root.join("sys/bus/pci/devices/0000:01:00.0");
    std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/5/devices")).unwrap();
    std::fs::create_dir_all(root.join("sys/bus/pci/drivers/e1000e")).unwrap();
    std::fs::create_dir_all(&dev).unwrap();
    std::os::unix::fs::symlink("../../drivers/e1000e", dev.join("driver")).unwrap();
    std::os::unix::fs::symlink("../../../../kernel/iommu_groups/5", dev.join("iommu_group"))
        .unwrap();
    root
}

#[test]
fn run_reads_devices_under_the_sysfs_root_before_opening_kvm() {
    let k = fake_kernel("sysfs-root");
    let root = fake_sysfs("sysfs-root-tree");
    let (k, r) = (k.to_str().unwrap(), root.to_str().unwrap());
    let err = run_fails(&["--kernel", k, "--device", "01:00.0", "--sysfs-root", r]);
    assert!(
        err.contains("0000:01:00.0 is bound to e1000e, not vfio-pci")
            && err.contains("vfio-vmm host bind 0000:01:00.0"),
        "{err}"
    );
    let err = run_fails(&["--kernel", k, "--device", "02:00.0", "--sysfs-root", r]);
    assert!(err.contains("no PCI device 0000:02:00.0"), "{err}");
    let empty = scratch("sysfs-root-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = run_fails(&[
        "--kernel",
        k,
        "--device",
        "01:00.0",
        "--sysfs-root",
        empty.to_str().unwrap(),
    ]);
    assert!(err.contains("this host has no IOMMU"), "{err}");
    std::fs::remove_dir_all(root).unwrap();
    std::fs::remove_dir_all(empty).unwrap();
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_json_config_runs_end_to_end_and_bad_fields_are_named() {
    let k = fake_kernel("json");
    let file = scratch("json-config.json");
    let write = |extra: &str| {
        let json = format!(
            r#"{{"payload": {{"kernel": {:?}}}, "memory": {{"size": 70368744177664}}{extra}}}"#,
            k.to_str().unwrap()
        );
        std::fs::write(&file, json).unwrap();
    };
    let f = file.to_str().unwrap();
    write("");
    // The JSON path reaches the builder: 64 TiB is more than this host has.
    let err = run_fails(&["--config", f]);
    assert!(err.contains("more than the host can give"), "{err}");
    write(r#", "vsock": {"cid": 3, "socket": "/nonexistent/v.sock"}"#);
    let err = run_fails(&["--config", f]);
    assert!(
        err.contains(&format!("--config {f}: vsock socket /nonexistent/v.sock")),
        "{err}"
    );
    let err = run_fails(&["--config", f, "--cpus", "2"]);
    assert!(
        err.contains("--config cannot be combined with --cpus"),
        "{err}"
    );
    std::fs::remove_file(file).unwrap();
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_missing_disk_image_is_named_before_anything_is_opened() {
    let k = fake_kernel("disk-missing");
    let k = k.to_str().unwrap();
    let err = run_fails(&["--kernel", k, "--disk", "path=/nonexistent/disk.img"]);
    assert!(
        err.contains("disk image /nonexistent/disk.img: no such file; check the path"),
        "{err}"
    );
    let err = run_fails(&["--kernel", k, "--disk", "path=/tmp"]);
    assert!(err.contains("disk image /tmp: is a directory"), "{err}");
    let err = run_fails(&["--kernel", k, "--disk", "path=/d,cache=none"]);
    assert!(err.contains("unknown key \"cache\""), "{err}");
    std::fs::remove_file(k).unwrap();
}

/// Takes an OFD lock on the whole of `file`, as another VMM would: a write
/// lock for a writable image, a read lock for a read-only one. A lock just
/// dropped can outlive its file for a moment: another test's fork holds a
/// copy of every descriptor until its exec closes them, so a conflict is
/// retried for up to a second.
fn ofd_lock(file: &std::fs::File, write: bool) {
    let lock_type = if write { libc::F_WRLCK } else { libc::F_RDLCK };
    let flock = libc::flock {
        // Constants that fit in a short.
        l_type: lock_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    for _ in 0..100 {
        match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&flock)) {
            Err(nix::errno::Errno::EAGAIN) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            r => return r.map(drop).unwrap(),
        }
    }
    panic!("the image stayed locked for a second");
}

#[test]
fn a_disk_image_in_use_by_another_vmm_is_refused_before_kvm() {
    let k = fake_kernel("disk-locked");
    let img = zeros("disk-locked.img");
    let (k, i) = (k.to_str().unwrap(), img.to_str().unwrap());
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    ofd_lock(&holder, true);
    // Images are locked before /dev/kvm is opened: no KVM needed for this.
    for disk in [format!("path={i}"), format!("path={i},readonly=on")] {
        let err = run_fails(&["--kernel", k, "--memory", "64M", "--disk", &disk]);
        assert!(
            err.contains(&format!("disk image {i} is in use")) && err.contains("stop it first"),
            "{disk}: {err}"
        );
    }
    drop(holder);
    // A reader leaves the image to other readers only.
    let reader = std::fs::File::open(&img).unwrap();
    ofd_lock(&reader, false);
    let err = run_fails(&[
        "--kernel",
        k,
        "--memory",
        "64M",
        "--disk",
        &format!("path={i}"),
    ]);
    assert!(
        err.contains("is in use") && err.contains("readonly=on"),
        "{err}"
    );
    let err = run_fails(&[
        "--kernel",
        k,
        "--memory",
        "64M",
        "--disk",
        &format!("path={i},readonly=on"),
    ]);
    assert!(!err.contains("in use"), "a shared lock is shared: {err}");
    drop(reader);
    std::fs::remove_file(img).unwrap();
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_vsock_socket_a_live_program_listens_on_is_refused_before_kvm() {
    let k = fake_kernel("vsock-live");
    let sock = scratch("vsock-live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let vsock = format!("cid=3,socket={}", sock.display());
    let err = run_fails(&["--kernel", k.to_str().unwrap(), "--vsock", &vsock]);
    assert!(
        err.contains(&format!("vsock socket {}: in use", sock.display())),
        "{err}"
    );
    let err = run_fails(&["--kernel", "/k", "--vsock", "cid=2,socket=/tmp/v.sock"]);
    assert!(err.contains("vsock cid 2: use 3 to 4294967294"), "{err}");
    std::fs::remove_file(sock).unwrap();
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_disk_image_the_device_refuses_is_named_before_kvm() {
    let k = fake_kernel("disk-odd-size");
    let img = scratch("disk-odd-size.img");
    std::fs::write(&img, vec![0u8; 1000]).unwrap();
    let disk = format!("path={}", img.display());
    let err = run_fails(&["--kernel", k.to_str().unwrap(), "--disk", &disk]);
    assert!(
        err.contains(&format!(
            "disk image {} is 1000 bytes, not a multiple of 512",
            img.display()
        )),
        "{err}"
    );
    std::fs::remove_file(img).unwrap();
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_disk_said_to_be_qcow2_that_is_not_is_refused_before_kvm() {
    let k = fake_kernel("disk-not-qcow2");
    let img = zeros("disk-not-qcow2.img");
    let i = img.display().to_string();
    let disk = format!("path={i},format=qcow2");
    let err = run_fails(&["--kernel", k.to_str().unwrap(), "--disk", &disk]);
    assert!(
        err.contains(&format!("disk image {i} is not a qcow2 image")) && err.contains("format=raw"),
        "{err}"
    );
    let err = run_fails(&[
        "--kernel",
        k.to_str().unwrap(),
        "--disk",
        &format!("path={i},format=vmdk"),
    ]);
    assert!(
        err.contains("format=vmdk: use format=raw or format=qcow2"),
        "{err}"
    );
    std::fs::remove_file(img).unwrap();
    std::fs::remove_file(k).unwrap();
}
