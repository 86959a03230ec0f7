//! The control API as Kata and a user meet it: `vfio-vmm --api-socket PATH
//! -v --log-file FILE --seccomp false` (Kata's form) and `vfio-vmm run
//! --api-socket PATH`, driven with `vfio-vmm remote`. The ignored tests boot
//! a tiny 64-bit payload dressed as a bzImage on /dev/kvm (a real guest with
//! devices is the rig's `api` scenario).

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
    bzimage_running(path, &[]);
}

/// A bzImage whose 64-bit entry runs `code`, then halts for ever.
fn bzimage_running(path: &Path, code: &[u8]) {
    let mut image = vec![0u8; 4096];
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 1;
    image[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
                                                                      // setup_sects 0 means 4: the kernel starts at 5 * 512, startup_64 0x200 into it.
    let entry = 5 * 512 + 0x200;
    let halt = [0xf4, 0xeb, 0xfd]; // hlt; jmp back to the hlt
    image[entry..entry + code.len()].copy_from_slice(code);
    image[entry + code.len()..entry + code.len() + 3].copy_from_slice(&halt);
    std::fs::write(path, image).unwrap();
}

/// A server process, killed if the test ends before it does.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the server with `args` and waits (bounded) until it accepts.
fn start(args: &[&str], sock: &Path) -> Server {
    let mut child = vfio_vmm()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
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
    Server(child)
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
fn wait_exit(Server(child): &mut Server) -> std::process::ExitStatus {
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
    assert!(log.contains("--seccomp false: no seccomp filters"), "{log}");
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

fn require_kvm() {
    assert!(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok(),
        "/dev/kvm is not usable here"
    );
}

#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn a_vm_boots_reboots_and_shuts_down_through_the_api() {
    require_kvm();
    let dir = scratch("kvm-boot");
    let sock = dir.join("api.sock");
    let kernel = dir.join("bzImage");
    bzimage_running(&kernel, &[]);
    let config = dir.join("vm.json");
    let json = format!(
        r#"{{"payload": {{"kernel": {:?}}}, "memory": {{"size": 268435456}}, "serial": {{"mode": "Off"}}}}"#,
        kernel.to_str().unwrap()
    );
    std::fs::write(&config, json).unwrap();
    let mut server = start(&["--api-socket", sock.to_str().unwrap()], &sock);
    ok(&remote(&sock, &["create", config.to_str().unwrap()]));
    // Kata's way: a tap it opened, passed as a descriptor, no tap name.
    let tap_name = format!("vvk{}", std::process::id() % 100_000);
    let tap = vfio_vmm::devices::virtio::Tap::open(&tap_name).expect("needs root and /dev/net/tun");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&tap);
    // SAFETY: `tap` owns `raw` and outlives this borrow, which is only duplicated.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }
        .try_clone_to_owned()
        .unwrap();
    ok(&remote_with_stdin(
        &sock,
        &["add-net", "fd=0,id=net0"],
        Stdio::from(fd),
    ));
    assert!(ok(&remote(&sock, &["info"])).contains(&format!("\"tap\": \"{tap_name}\"")));
    ok(&remote(&sock, &["boot"]));
    assert!(ok(&remote(&sock, &["info"])).contains("\"state\": \"Running\""));
    assert_eq!(ok(&remote(&sock, &["counters"])).trim(), "{}");
    fails(
        &remote(&sock, &["boot"]),
        "error 405: the VM is already running",
    );
    fails(
        &remote(
            &sock,
            &["add-vsock", "cid=3,socket=/tmp/vfio-vmm-api-cli.vsock"],
        ),
        "hotplug of vsock on a running VM is not supported yet",
    );
    ok(&remote(&sock, &["pause"]));
    assert!(ok(&remote(&sock, &["info"])).contains("\"state\": \"Paused\""));
    fails(
        &remote(&sock, &["pause"]),
        "error 405: the VM is already paused",
    );
    ok(&remote(&sock, &["power-button"]));
    ok(&remote(&sock, &["resume"]));
    assert!(ok(&remote(&sock, &["info"])).contains("\"state\": \"Running\""));
    fails(
        &remote(&sock, &["resume"]),
        "error 405: the VM is not paused",
    );
    ok(&remote(&sock, &["pause"]));
    ok(&remote(&sock, &["reboot"]));
    assert!(ok(&remote(&sock, &["info"])).contains("\"state\": \"Running\""));
    ok(&remote(&sock, &["pause"]));
    ok(&remote(&sock, &["shutdown"]));
    assert!(ok(&remote(&sock, &["info"])).contains("\"state\": \"Shutdown\""));
    ok(&remote(&sock, &["boot"]));
    ok(&remote(&sock, &["shutdown-vmm"]));
    assert_eq!(wait_exit(&mut server).code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[ignore = "needs /dev/kvm (scripts/test.sh runs it)"]
fn a_guest_poweroff_ends_the_api_process_with_0() {
    require_kvm();
    let dir = scratch("kvm-poweroff");
    let sock = dir.join("api.sock");
    let kernel = dir.join("bzImage");
    // mov edx, 0x600; mov al, S5 | SLP_EN; out dx, al
    bzimage_running(
        &kernel,
        &[
            0xba,
            0x00,
            0x06,
            0x00,
            0x00,
            0xb0,
            (5 << 2) | (1 << 5),
            0xee,
        ],
    );
    let k = kernel.to_str().unwrap();
    let args = [
        "run",
        "--api-socket",
        sock.to_str().unwrap(),
        "--kernel",
        k,
        "--memory",
        "256M",
        "--serial",
        "off",
    ];
    let mut child = Server(
        vfio_vmm()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    assert!(!sock.exists(), "the socket is removed at exit");
    let _ = std::fs::remove_dir_all(dir);
}
