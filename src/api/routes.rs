//! The endpoint table: each `/api/v1/NAME` with its method, mapped to the
//! [`Controller`] action and answered with the status codes of
//! cloud-hypervisor's OpenAPI spec. Client mistakes get a 4xx with
//! cloud-hypervisor's error body (a JSON array of messages).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::http::{Request, Response};
use super::state::{Controller, Event, StateError};

/// Where every endpoint lives.
pub const PREFIX: &str = "/api/v1/";

/// Endpoints cloud-hypervisor has and vfio-vmm does not, with why.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("vm.resize", "vm.resize: vfio-vmm has no CPU or memory hotplug (Kata: set static_sandbox_resource_mgmt = true)"),
    ("vm.resize-zone", "vm.resize-zone: vfio-vmm has no memory hotplug"),
    ("vm.resize-disk", "vm.resize-disk"),
    ("vm.add-fs", "virtio-fs (vm.add-fs; Kata: set shared_fs = \"none\")"),
    ("vm.add-pmem", "vm.add-pmem"),
    ("vm.add-vdpa", "vm.add-vdpa"),
    ("vm.add-user-device", "vm.add-user-device"),
    ("vm.add-generic-vhost-user", "vm.add-generic-vhost-user"),
    ("vm.snapshot", "vm.snapshot"),
    ("vm.restore", "vm.restore"),
    ("vm.coredump", "vm.coredump"),
    ("vm.send-migration", "vm.send-migration"),
    ("vm.receive-migration", "vm.receive-migration"),
    ("vm.nmi", "vm.nmi"),
];

/// Shared by every connection: the VM and the main loop's event queue.
pub struct Api {
    controller: Mutex<Controller>,
    events: Sender<Event>,
}

/// What to do once the response is written.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Nothing.
    Nothing,
    /// Tell the main loop (`vmm.shutdown`).
    Send(Event),
}

impl Api {
    /// The API around `controller`; `events` reaches the main loop.
    pub fn new(controller: Controller, events: Sender<Event>) -> Self {
        Api {
            controller: Mutex::new(controller),
            events,
        }
    }

    /// The controller (a panicked holder leaves it usable).
    pub fn controller(&self) -> MutexGuard<'_, Controller> {
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `event` to the main loop.
    pub fn notify(&self, event: Event) {
        // No receiver means the process is ending anyway.
        let _ = self.events.send(event);
    }

    /// Answers one request.
    pub fn handle(&self, req: Request) -> (Response, After) {
        let Some(name) = req.path.strip_prefix(PREFIX) else {
            return (not_found(&req.path), After::Nothing);
        };
        let name = name.to_string();
        let method = req.method.clone();
        let expected = match name.as_str() {
            "vmm.ping" | "vm.info" | "vm.counters" => "GET",
            _ => "PUT",
        };
        if known(&name) && method != expected {
            let msg = format!("{name} takes {expected}, not {method}");
            return (Response::error(405, &msg), After::Nothing);
        }
        match self.route(&name, req) {
            Ok((resp, after)) => (resp, after),
            Err(e) => (Response::error(e.status, &e.message), After::Nothing),
        }
    }

    fn route(&self, name: &str, req: Request) -> Result<(Response, After), StateError> {
        let done = Ok((Response::empty(204), After::Nothing));
        match name {
            "vmm.ping" => Ok((Response::json(200, ping()), After::Nothing)),
            "vmm.shutdown" => Ok((Response::empty(204), After::Send(Event::VmmShutdown))),
            "vm.create" => {
                let text = std::str::from_utf8(&req.body)
                    .map_err(|_| StateError::new_bad("the body is not UTF-8"))?;
                self.controller().create(text).and(done)
            }
            "vm.boot" => self.controller().boot().and(done),
            "vm.shutdown" => self.controller().shutdown().and(done),
            "vm.reboot" => self.controller().reboot().and(done),
            "vm.delete" => {
                self.controller().delete();
                done
            }
            "vm.pause" => self.controller().pause().and(done),
            "vm.resume" => self.controller().resume().and(done),
            "vm.power-button" => self.controller().power_button().and(done),
            "vm.info" => {
                let info = self.controller().info()?;
                Ok((Response::json(200, info.to_string()), After::Nothing))
            }
            "vm.counters" => {
                let counters = self.controller().counters()?;
                let body = serde_json::to_string(&counters).unwrap_or_default();
                Ok((Response::json(200, body), After::Nothing))
            }
            "vm.add-device" => self.plug("devices", &req.body, Vec::new()),
            "vm.add-disk" => self.plug("disks", &req.body, Vec::new()),
            "vm.add-vsock" => self.plug("vsock", &req.body, Vec::new()),
            "vm.add-net" => {
                let body = net_body(&req.body, &req.fds)?;
                self.plug_value("net", body, req.fds)
            }
            "vm.remove-device" => {
                let body = json_body(&req.body)?;
                let Some(id) = body.get("id").and_then(Value::as_str) else {
                    return Err(StateError::new_bad("vm.remove-device needs {\"id\": ID}"));
                };
                // The wait for the guest's eject holds no lock: other
                // requests are served meanwhile.
                let wait = self.controller().remove(id)?;
                if let Some(wait) = wait {
                    wait().map_err(|(status, message)| StateError::new_status(status, &message))?;
                    self.controller().removed(id);
                }
                done
            }
            _ => match UNSUPPORTED.iter().find(|(n, _)| *n == name) {
                Some((_, what)) => Err(StateError::unsupported(what)),
                None => Err(StateError::new_status(
                    404,
                    &format!("unknown endpoint {name}"),
                )),
            },
        }
    }

    fn plug(
        &self,
        section: &str,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(Response, After), StateError> {
        self.plug_value(section, json_body(body)?, fds)
    }

    /// Adds an item; a device hot-plugged into the running VM answers 200
    /// `{"id", "bdf"}`, anything else 204.
    fn plug_value(
        &self,
        section: &str,
        item: Value,
        fds: Vec<OwnedFd>,
    ) -> Result<(Response, After), StateError> {
        let (id, bdf) = self.controller().cold_plug(section, item, fds)?;
        let Some(bdf) = bdf else {
            log::info!("API: {section} {id} added to the VM that will boot");
            return Ok((Response::empty(204), After::Nothing));
        };
        log::info!("API: device {id} hot-plugged at {bdf}");
        let body = serde_json::json!({ "id": id, "bdf": bdf });
        Ok((Response::json(200, body.to_string()), After::Nothing))
    }
}

impl StateError {
    fn new_bad(message: &str) -> Self {
        StateError::new_status(400, message)
    }

    fn new_status(status: u16, message: &str) -> Self {
        StateError {
            status,
            message: message.to_string(),
        }
    }
}

/// Whether `name` is an endpoint of cloud-hypervisor's API.
fn known(name: &str) -> bool {
    const OURS: &[&str] = &[
        "vmm.ping",
        "vmm.shutdown",
        "vm.create",
        "vm.boot",
        "vm.shutdown",
        "vm.reboot",
        "vm.delete",
        "vm.pause",
        "vm.resume",
        "vm.power-button",
        "vm.info",
        "vm.counters",
        "vm.add-device",
        "vm.add-disk",
        "vm.add-vsock",
        "vm.add-net",
        "vm.remove-device",
    ];
    OURS.contains(&name) || UNSUPPORTED.iter().any(|(n, _)| *n == name)
}

fn not_found(path: &str) -> Response {
    Response::error(
        404,
        &format!("no endpoint at {path}: the API lives under {PREFIX}"),
    )
}

/// `vmm.ping`'s answer.
fn ping() -> String {
    serde_json::json!({
        "build_version": concat!("vfio-vmm ", env!("CARGO_PKG_VERSION")),
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "features": [],
    })
    .to_string()
}

/// A body that must be a JSON object.
fn json_body(body: &[u8]) -> Result<Value, StateError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| StateError::new_bad(&format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(StateError::new_bad("the body must be a JSON object"));
    }
    Ok(value)
}

/// `vm.add-net`'s body: `fds` (the sender's numbers) gives way to the
/// descriptors that came with the request; without `tap`, the tap's name
/// is read from the first descriptor.
fn net_body(body: &[u8], fds: &[OwnedFd]) -> Result<Value, StateError> {
    let mut value = json_body(body)?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| StateError::new_bad("not an object"))?;
    let listed = obj.remove("fds");
    let listed = match listed {
        Some(Value::Array(list)) => list.len(),
        Some(Value::Null) | None => 0,
        Some(_) => return Err(StateError::new_bad("net.fds must be a list of descriptors")),
    };
    if listed != fds.len() {
        return Err(StateError::new_bad(&format!(
            "net.fds lists {listed} descriptor(s) but {} came with the request (send them with SCM_RIGHTS)",
            fds.len()
        )));
    }
    if obj.get("tap").is_none_or(Value::is_null) {
        let Some(fd) = fds.first() else {
            return Err(StateError::new_bad(
                "vm.add-net needs a tap name or tap descriptors",
            ));
        };
        let name = tap_name(fd).ok_or_else(|| {
            StateError::new_bad(&format!(
                "descriptor {} is not a tap: pass a tap descriptor or a tap name",
                fd.as_raw_fd()
            ))
        })?;
        obj.insert("tap".into(), Value::String(name));
    }
    Ok(value)
}

/// The interface a tun/tap descriptor is attached to (the `iff:` line the
/// tun driver writes in `/proc/self/fdinfo`).
pub fn tap_name(fd: &OwnedFd) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .map(|name| name.trim().to_string())
}
