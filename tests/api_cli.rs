//! The control API as Kata and a user meet it: `vfio-vmm --api-socket PATH
//! -v --log-file FILE --seccomp false` (Kata's form) and `vfio-vmm run
//! --api-socket PATH`, driven with `vfio-vmm remote`. No VM is booted
//! (that needs KVM and a kernel: the rig's `api` scenario).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vfio_vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vfio-vmm"))
}

/// A fresh scratch directory for `test`.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vfio-vmm-api-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file with a bzImage setup header: enough for vm.create's validation.
fn fake_bzimage(path: &Path) {
    let mut image = vec![0u8; 4096];
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 1;
    image[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
    std::fs::write(path, image).unwrap();
}

/// Starts the server with `args` and waits (bounded) until it accepts.
fn start(args: &[&str], sock: &Path) -> Child {
    let mut child = vfio_vmm()
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(sock).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("vfio-vmm {args:?} ended with {status} before listening");
        }
        assert!(
            Instant::now() < deadline,
            "vfio-vmm never listened on {sock:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn remote(sock: &Path, command: &[&str]) -> Output {
    remote_with_stdin(sock, command, Stdio::null())
}

fn remote_with_stdin(sock: &Path, command: &[&str], stdin: Stdio) -> Output {
    vfio_vmm()
        .args(["remote", "--api-socket", sock.to_str().unwrap()])
        .args(command)
        .stdin(stdin)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(want), "{stderr:?} lacks {want:?}");
}

/// Waits (bounded) for the server to end and returns its status.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "vfio-vmm did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kata_s_command_line_and_remote_drive_the_api() {
    let dir = scratch("kata");
    let sock = dir.join("clh-api.sock");
    let log = dir.join("vmm.log");
    let (s, l) = (sock.to_str().unwrap(), log.to_str().unwrap());
    let mut server = start(
        &[
            "--api-socket",
            s,
            "-v",
            "--log-file",
            l,
            "--seccomp",
            "false",
        ],
        &sock,
    );

    assert!(ok(&remote(&sock, &["ping"])).contains("\"version\""));
    fails(
        &remote(&sock, &["info"]),
        "error 404: the VM is not created",
    );
    fails(&remote(&sock, &["boot"]), "error 404");
    let kernel = dir.join("bzImage");
    fake_bzimage(&kernel);
    let config = dir.join("vm.json");
    let json = format!(
        r#"{{"payload": {{"kernel": {:?}}}, "memory": {{"size": 268435456}}}}"#,
        kernel.to_str().unwrap()
    );
    std::fs::write(&config, json).unwrap();
    ok(&remote(&sock, &["create", config.to_str().unwrap()]));
    fails(
        &remote(&sock, &["create", config.to_str().unwrap()]),
        "error 409",
    );
    assert!(ok(&remote(&sock, &["info"])).contains("\"state\": \"Created\""));
    ok(&remote(
        &sock,
        &[
            "add-device",
            "path=/sys/bus/pci/devices/0000:01:00.0,id=gpu",
        ],
    ));
    fails(
        &remote(
            &sock,
            &["add-device", "path=/sys/bus/pci/devices/0000:01:00.0"],
        ),
        "error 409",
    );
    // fd=0: the remote's stdin, a file here, passed with SCM_RIGHTS.
    let queue = std::fs::File::create(dir.join("queue")).unwrap();
    let out = remote_with_stdin(
        &sock,
        &["add-net", "tap=vmmtest0,fd=0,id=net0"],
        Stdio::from(queue),
    );
    ok(&out);
    let info = ok(&remote(&sock, &["info"]));
    assert!(
        info.contains("\"tap\": \"vmmtest0\"") && info.contains("\"gpu\""),
        "{info}"
    );
    ok(&remote(&sock, &["remove-device", "gpu"]));
    fails(&remote(&sock, &["remove-device", "gpu"]), "error 404");
    fails(
        &remote(&sock, &["pause"]),
        "error 405: the VM is not running",
    );
    fails(&remote(&sock, &["frobnicate"]), "commands: ping");

    ok(&remote(&sock, &["shutdown-vmm"]));
    assert_eq!(wait_exit(&mut server).code(), Some(0));
    assert!(!sock.exists(), "the socket is removed at exit");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("--seccomp false: accepted"), "{log}");
    assert!(log.contains("API: listening on"), "{log}");
    fails(&remote(&sock, &["ping"]), "cannot connect to");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_with_an_api_socket_waits_and_a_live_socket_is_not_taken() {
    let dir = scratch("run");
    let sock = dir.join("api.sock");
    let s = sock.to_str().unwrap();
    let mut server = start(&["run", "--api-socket", s], &sock);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let second = vfio_vmm().args(["--api-socket", s]).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("is in use by a running process"));
    ok(&remote(&sock, &["ping"]));
    ok(&remote(&sock, &["shutdown-vmm"]));
    assert_eq!(wait_exit(&mut server).code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
