//! The API over a real UNIX socket against a fake backend: every endpoint,
//! the state machine, each bad input and descriptor passing; `process.rs`:
//! stalls, floods, the socket file, the main loop and the client.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{self, Call};
use super::http::{send_with_fds, Conn, Limits, Response};
use super::routes::Api;
use super::server::{Server, ServerError};
use super::state::{Backend, Controller, Counters, Event, TapFds};
use super::*;
use crate::config::tests::fake_bzimage;

/// What the fake backend was asked to do.
#[derive(Default)]
pub(crate) struct Seen {
    boots: Vec<VmConfig>,
    /// (NIC id, what its descriptor's file holds), per boot.
    taps: Vec<(String, String)>,
    shutdowns: usize,
    /// pause, resume, power-button, in order.
    actions: Vec<&'static str>,
    fail_pause: Option<String>,
    on_exit: Option<Box<dyn FnOnce(ExitReason) + Send>>,
    fail_boot: Option<String>,
}

struct Fake(Arc<Mutex<Seen>>);

impl Backend for Fake {
    fn boot(
        &mut self,
        config: &VmConfig,
        taps: &TapFds,
        on_exit: Box<dyn FnOnce(ExitReason) + Send>,
    ) -> Result<(), String> {
        let mut seen = self.0.lock().unwrap();
        if let Some(e) = seen.fail_boot.clone() {
            return Err(e);
        }
        seen.boots.push(config.clone());
        for (id, fds) in taps {
            for fd in fds {
                seen.taps.push((id.clone(), read_fd(fd)));
            }
        }
        seen.on_exit = Some(on_exit);
        Ok(())
    }

    fn shutdown(&mut self) {
        let mut seen = self.0.lock().unwrap();
        seen.shutdowns += 1;
        seen.on_exit = None;
    }

    fn pause(&mut self) -> Result<(), String> {
        let mut seen = self.0.lock().unwrap();
        if let Some(e) = seen.fail_pause.clone() {
            return Err(e);
        }
        seen.actions.push("pause");
        Ok(())
    }

    fn resume(&mut self) -> Result<(), String> {
        self.0.lock().unwrap().actions.push("resume");
        Ok(())
    }

    fn power_button(&mut self) -> Result<(), String> {
        self.0.lock().unwrap().actions.push("power-button");
        Ok(())
    }

    fn counters(&self) -> Counters {
        let mut c = Counters::new();
        c.entry("0000:01:00.0".into())
            .or_default()
            .insert("relayed_interrupts".into(), 7);
        c
    }
}

fn read_fd(fd: &OwnedFd) -> String {
    let file = std::fs::File::from(fd.try_clone().unwrap());
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A server on a fresh socket with a fake backend.
struct Rig {
    dir: PathBuf,
    sock: PathBuf,
    seen: Arc<Mutex<Seen>>,
    events: mpsc::Receiver<Event>,
    kernel: PathBuf,
    _server: Server,
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vfio-vmm-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Rig {
    fn new(name: &str, limits: Limits) -> Rig {
        let dir = temp_dir(name);
        let sock = dir.join("api.sock");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, events) = mpsc::channel();
        let controller = Controller::new(Box::new(Fake(seen.clone())), tx.clone());
        let api = Arc::new(Api::new(controller, tx));
        let server = Server::start(&sock, api, limits).unwrap();
        let kernel = fake_bzimage(&format!("api-{name}"));
        Rig {
            dir,
            sock,
            seen,
            events,
            kernel,
            _server: server,
        }
    }

    fn config(&self, extra: &str) -> String {
        format!(
            r#"{{"payload": {{"kernel": {:?}, "cmdline": "console=ttyS0"}},
                "cpus": {{"boot_vcpus": 1, "max_vcpus": 1}}, "memory": {{"size": 268435456}}{extra}}}"#,
            self.kernel.display().to_string()
        )
    }

    fn put(&self, endpoint: &str, body: Option<&str>) -> Response {
        self.request("PUT", endpoint, body, &[])
    }

    fn get(&self, endpoint: &str) -> Response {
        self.request("GET", endpoint, None, &[])
    }

    fn request(&self, method: &str, endpoint: &str, body: Option<&str>, fds: &[i32]) -> Response {
        let body = body.unwrap_or("");
        let text = format!(
            "{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.raw(text.as_bytes(), fds)
    }

    fn raw(&self, bytes: &[u8], fds: &[i32]) -> Response {
        let stream = UnixStream::connect(&self.sock).unwrap();
        // A server that refuses the connection (503) may close it before
        // the request is written; its answer is still there to read.
        let _ = send_with_fds(&stream, bytes, fds);
        Conn::new(stream).read_response(&Limits::default()).unwrap()
    }

    fn state(&self) -> String {
        let info: Value = serde_json::from_str(&self.get("vm.info").body.unwrap()).unwrap();
        info["state"].as_str().unwrap().to_string()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.kernel);
    }
}

/// The status and the error message (cloud-hypervisor's body: a list of messages).
fn error(resp: &Response) -> (u16, String) {
    let messages: Vec<String> = serde_json::from_str(resp.body.as_deref().unwrap_or("[]")).unwrap();
    (resp.status, messages.join(": "))
}

fn assert_error(resp: Response, status: u16, want: &str) {
    let (got, message) = error(&resp);
    assert_eq!(got, status, "{message}");
    assert!(message.contains(want), "{message:?} lacks {want:?}");
}

#[test]
fn ping_answers_cloud_hypervisors_fields() {
    let rig = Rig::new("ping", Limits::default());
    let resp = rig.get("vmm.ping");
    assert_eq!(resp.status, 200);
    let v: Value = serde_json::from_str(&resp.body.unwrap()).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["pid"], std::process::id());
    assert!(v["build_version"].is_string() && v["features"].is_array());
}

#[test]
fn the_vm_goes_through_its_states() {
    let rig = Rig::new("states", Limits::default());
    assert_error(rig.get("vm.info"), 404, "not created");
    assert_error(rig.put("vm.boot", None), 404, "send vm.create first");
    assert_error(rig.put("vm.shutdown", None), 404, "not created");
    assert_error(rig.get("vm.counters"), 404, "not created");
    assert_eq!(rig.put("vm.create", Some(&rig.config(""))).status, 204);
    assert_error(
        rig.put("vm.create", Some(&rig.config(""))),
        409,
        "already created",
    );
    assert_eq!(rig.state(), "Created");
    let info: Value = serde_json::from_str(&rig.get("vm.info").body.unwrap()).unwrap();
    assert_eq!(info["memory_actual_size"], 268435456);
    assert_eq!(info["config"]["cpus"]["boot_vcpus"], 1);
    assert_error(
        rig.put("vm.shutdown", None),
        405,
        "not running (it is Created)",
    );
    assert_error(rig.put("vm.reboot", None), 405, "not running");
    assert_error(rig.put("vm.pause", None), 405, "not running");
    assert_error(rig.put("vm.resume", None), 405, "not paused");
    assert_error(rig.put("vm.power-button", None), 405, "not running");

    assert_eq!(rig.put("vm.boot", None).status, 204);
    assert_eq!(rig.state(), "Running");
    assert_eq!(rig.seen.lock().unwrap().boots.len(), 1);
    assert_error(rig.put("vm.boot", None), 405, "already running");
    let counters: Value = serde_json::from_str(&rig.get("vm.counters").body.unwrap()).unwrap();
    assert_eq!(counters["0000:01:00.0"]["relayed_interrupts"], 7);
    assert_error(
        rig.put("vm.resize", Some(r#"{"desired_vcpus": 2}"#)),
        400,
        "static_sandbox_resource_mgmt = true",
    );

    assert_eq!(rig.put("vm.reboot", None).status, 204);
    assert_eq!(rig.state(), "Running");
    assert_eq!(rig.put("vm.shutdown", None).status, 204);
    assert_eq!(rig.state(), "Shutdown");
    assert_error(rig.put("vm.shutdown", None), 405, "it is Shutdown");
    assert_eq!(rig.get("vm.counters").body.as_deref(), Some("{}"));
    assert_eq!(
        rig.put("vm.boot", None).status,
        204,
        "a shut down VM boots again"
    );
    {
        let seen = rig.seen.lock().unwrap();
        assert_eq!((seen.boots.len(), seen.shutdowns), (3, 2));
    }
    assert_eq!(rig.put("vm.delete", None).status, 204);
    assert_eq!(rig.seen.lock().unwrap().shutdowns, 3);
    assert_error(rig.get("vm.info"), 404, "not created");
    assert_eq!(
        rig.put("vm.create", Some(&rig.config(""))).status,
        204,
        "created again after delete"
    );
}

#[test]
fn a_boot_that_fails_answers_400_and_leaves_the_vm_created() {
    let rig = Rig::new("boot-fails", Limits::default());
    rig.seen.lock().unwrap().fail_boot = Some("device 0000:01:00.0 is busy".into());
    assert_eq!(rig.put("vm.create", Some(&rig.config(""))).status, 204);
    assert_error(
        rig.put("vm.boot", None),
        400,
        "cannot boot the VM: device 0000:01:00.0 is busy",
    );
    assert_eq!(rig.state(), "Created");
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let rig = Rig::new("bad-config", Limits::default());
    assert_error(
        rig.put("vm.create", Some("{")),
        400,
        "JSON configuration: EOF",
    );
    assert_error(rig.put("vm.create", None), 400, "JSON configuration");
    assert_error(
        rig.put(
            "vm.create",
            Some(&rig.config(r#", "fs": [{"tag": "x", "socket": "/s"}]"#)),
        ),
        400,
        "fs is not supported yet",
    );
    assert_error(
        rig.put("vm.create", Some(&rig.config(r#", "colour": 1"#))),
        400,
        "unknown field colour",
    );
    assert_error(
        rig.put(
            "vm.create",
            Some(r#"{"payload": {"kernel": "/nonexistent"}}"#),
        ),
        400,
        "cannot read the kernel /nonexistent",
    );
    assert_error(
        rig.raw(
            b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 2\r\n\r\n\xff\xfe",
            &[],
        ),
        400,
        "not UTF-8",
    );
    assert_error(rig.put("vm.info", None), 405, "vm.info takes GET, not PUT");
    assert_error(rig.get("vm.boot"), 405, "takes PUT");
    assert_error(
        rig.put("vm.frobnicate", None),
        404,
        "unknown endpoint vm.frobnicate",
    );
    assert_error(
        rig.get("../etc/passwd"),
        404,
        "unknown endpoint ../etc/passwd",
    );
    assert_error(
        rig.raw(b"GET /etc/passwd HTTP/1.1\r\n\r\n", &[]),
        404,
        "the API lives under /api/v1/",
    );
    assert_error(
        rig.put("vm.snapshot", Some("{}")),
        400,
        "vm.snapshot is not supported yet",
    );
    assert_eq!(rig.get("vmm.ping").status, 200, "still serving");
}

#[test]
fn cold_plug_changes_the_vm_that_will_boot() {
    let rig = Rig::new("cold-plug", Limits::default());
    let dev = r#"{"path": "/sys/bus/pci/devices/0000:01:00.0", "id": "gpu", "iommu": false}"#;
    assert_error(rig.put("vm.add-device", Some(dev)), 404, "not created");
    assert_eq!(rig.put("vm.create", Some(&rig.config(""))).status, 204);
    assert_eq!(rig.put("vm.add-device", Some(dev)).status, 204);
    let same_path = r#"{"path": "/sys/bus/pci/devices/0000:01:00.0", "id": "gpu2"}"#;
    assert_error(
        rig.put("vm.add-device", Some(same_path)),
        409,
        "given twice",
    );
    let same_id = r#"{"path": "/sys/bus/pci/devices/0000:02:00.0", "id": "gpu"}"#;
    assert_error(rig.put("vm.add-device", Some(same_id)), 409, "used twice");
    let no_id = r#"{"path": "/sys/bus/pci/devices/0000:03:00.0"}"#;
    assert_eq!(rig.put("vm.add-device", Some(no_id)).status, 204);
    assert_error(
        rig.put(
            "vm.add-device",
            Some(r#"{"path": "/sys/bus/pci/devices/zz"}"#),
        ),
        400,
        "malformed PCI address",
    );
    assert_error(
        rig.put(
            "vm.add-device",
            Some(r#"{"path": "/sys/bus/pci/devices/0000:04:00.0", "iommu": true}"#),
        ),
        400,
        "iommu is not supported yet",
    );
    assert_error(
        rig.put("vm.add-device", Some("[1]")),
        400,
        "must be a JSON object",
    );
    assert_error(rig.put("vm.add-device", Some("{")), 400, "not JSON");
    assert_eq!(
        rig.put(
            "vm.add-net",
            Some(r#"{"tap": "tap7", "mac": "02:00:00:00:00:07", "id": "net0"}"#)
        )
        .status,
        204
    );
    assert_error(
        rig.put("vm.add-net", Some(r#"{"tap": "tap7"}"#)),
        409,
        "used by two NICs",
    );
    assert_error(
        rig.put("vm.remove-device", Some(r#"{"id": "nope"}"#)),
        404,
        "no device with id \"nope\"",
    );
    assert_error(
        rig.put("vm.remove-device", Some("{}")),
        400,
        "needs {\"id\": ID}",
    );
    assert_eq!(
        rig.put("vm.remove-device", Some(r#"{"id": "gpu"}"#)).status,
        204
    );

    assert_eq!(rig.put("vm.boot", None).status, 204);
    let booted = rig.seen.lock().unwrap().boots[0].clone();
    let bdfs: Vec<String> = booted.devices.iter().map(|d| d.bdf.to_string()).collect();
    assert_eq!(bdfs, ["0000:03:00.0"]);
    assert_eq!(booted.devices[0].id.as_deref(), Some("_devices0"));
    assert_eq!(
        (booted.net[0].tap.as_str(), booted.net[0].id.as_deref()),
        ("tap7", Some("net0"))
    );
    let info: Value = serde_json::from_str(&rig.get("vm.info").body.unwrap()).unwrap();
    assert_eq!(info["config"]["net"][0]["mac"], "02:00:00:00:00:07");

    let dev2 = r#"{"path": "/sys/bus/pci/devices/0000:05:00.0"}"#;
    assert_error(
        rig.put("vm.add-device", Some(dev2)),
        400,
        "hotplug on a running VM is not supported yet",
    );
    assert_error(
        rig.put("vm.remove-device", Some(r#"{"id": "net0"}"#)),
        400,
        "not supported yet",
    );
}

#[test]
fn tap_descriptors_ride_with_add_net() {
    let rig = Rig::new("fds", Limits::default());
    let file = rig.dir.join("queue0");
    std::fs::write(&file, "queue 0").unwrap();
    let fd = std::fs::File::open(&file).unwrap();
    assert_eq!(rig.put("vm.create", Some(&rig.config(""))).status, 204);
    let body = r#"{"tap": "tapq", "fds": [3], "id": "n0"}"#;
    assert_eq!(
        rig.request("PUT", "vm.add-net", Some(body), &[fd.as_raw_fd()])
            .status,
        204
    );
    let resp = rig.request(
        "PUT",
        "vm.add-net",
        Some(r#"{"tap": "tapr", "fds": [3, 4]}"#),
        &[fd.as_raw_fd()],
    );
    assert_error(
        resp,
        400,
        "net.fds lists 2 descriptor(s) but 1 came with the request",
    );
    let resp = rig.request(
        "PUT",
        "vm.add-net",
        Some(r#"{"fds": [3]}"#),
        &[fd.as_raw_fd()],
    );
    assert_error(
        resp,
        400,
        "is not a tap: pass a tap descriptor or a tap name",
    );
    assert_error(
        rig.put("vm.add-net", Some("{}")),
        400,
        "needs a tap name or tap descriptors",
    );
    assert_eq!(rig.put("vm.boot", None).status, 204);
    assert_eq!(
        rig.seen.lock().unwrap().taps,
        [("n0".to_string(), "queue 0".to_string())]
    );
}

#[test]
fn malformed_and_oversized_requests_are_answered_and_the_server_goes_on() {
    let limits = Limits {
        body: 1024,
        ..Limits::default()
    };
    let rig = Rig::new("malformed", limits);
    assert_error(
        rig.raw(b"\x00\x01garbage\r\n\r\n", &[]),
        400,
        "malformed HTTP",
    );
    assert_error(
        rig.raw(
            b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
            &[],
        ),
        400,
        "bad Content-Length",
    );
    let huge = format!(
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        1 << 30
    );
    assert_error(
        rig.raw(huge.as_bytes(), &[]),
        413,
        "over the limit of 1024 bytes",
    );
    let long_head = format!(
        "GET /api/v1/vmm.ping HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(20 << 10)
    );
    assert_error(
        rig.raw(long_head.as_bytes(), &[]),
        413,
        "HTTP head longer than",
    );
    assert_eq!(rig.get("vmm.ping").status, 200);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let rig = Rig::new("keep-alive", Limits::default());
    let stream = UnixStream::connect(&rig.sock).unwrap();
    let mut conn = Conn::new(stream.try_clone().unwrap());
    for _ in 0..3 {
        (&stream)
            .write_all(b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(conn.read_response(&Limits::default()).unwrap().status, 200);
    }
}

mod hotplug;
mod notes;
mod pause;
mod process;
