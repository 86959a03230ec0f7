//! The VM's life as the API sees it: NotCreated → Created → Running ⇄
//! Paused, → Shutdown (and back to Running with `vm.boot`), driven through a
//! [`Backend`] so that tests use a fake and production builds and runs a
//! `Machine` (`backend.rs`). The [`Controller`] owns the configuration (as
//! its JSON form, so that cold-plug is an edit validated like `vm.create`)
//! and the tap descriptors passed with `vm.add-net`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc::Sender;

use serde_json::Value;

use crate::config::{ConfigError, DeviceConfig, DiskConfig, NetConfig, VmConfig};
use crate::exit::ExitReason;

/// Per device, named counters (`vm.counters`).
pub type Counters = BTreeMap<String, BTreeMap<String, u64>>;

/// Tap descriptors of the NICs, by NIC id.
pub type TapFds = BTreeMap<String, Vec<OwnedFd>>;

/// Waits for the guest's eject of a device being removed: `Ok` once it is
/// released, else the status and message (the guest did not eject in time).
pub type EjectWait = Box<dyn FnOnce() -> Result<(), (u16, String)> + Send>;

/// What runs a VM: production builds a `Machine`, tests record calls.
pub trait Backend: Send {
    /// Builds the VM of `config` and starts its vCPUs; returns once it runs.
    /// `taps` holds the descriptors passed for NICs (by id). When the VM
    /// ends on its own (poweroff, reboot, crash, signal), `on_exit` is called
    /// once with why; it is not called after [`Backend::shutdown`].
    fn boot(
        &mut self,
        config: &VmConfig,
        taps: &TapFds,
        on_exit: Box<dyn FnOnce(ExitReason) + Send>,
    ) -> Result<(), String>;
    /// Stops the running (or paused) VM and tears it down (devices
    /// released); returns when done.
    fn shutdown(&mut self);
    /// Parks every vCPU of the running VM; returns once none runs guest code.
    fn pause(&mut self) -> Result<(), String>;
    /// Lets the paused VM's vCPUs run again.
    fn resume(&mut self) -> Result<(), String>;
    /// Presses the VM's ACPI power button.
    fn power_button(&mut self) -> Result<(), String>;
    /// The counters of the running VM's devices.
    fn counters(&self) -> Counters;
    /// Adds assigned device `device` (its id is `id`) to the running VM
    /// and tells the guest; returns its guest address (`0000:00:XX.0`), or
    /// the HTTP status and message of the refusal (the VM is unaffected).
    fn add_device(&mut self, _device: &DeviceConfig, _id: &str) -> Result<String, (u16, String)> {
        Err((400, "hotplug on a running VM is not supported yet".into()))
    }
    /// Adds a virtio-blk on `disk` (its id is `id`) to the running VM and
    /// tells the guest; returns its guest address, or the refusal.
    fn add_disk(&mut self, _disk: &DiskConfig, _id: &str) -> Result<String, (u16, String)> {
        Err((
            400,
            "hotplug of disks on a running VM is not supported yet".into(),
        ))
    }
    /// Adds a virtio-net on `net`'s tap (`fds[0]` when given: a tap opened
    /// by the caller) to the running VM; returns its guest address.
    fn add_net(
        &mut self,
        _net: &NetConfig,
        _id: &str,
        _fds: &[OwnedFd],
    ) -> Result<String, (u16, String)> {
        Err((
            400,
            "hotplug of net on a running VM is not supported yet".into(),
        ))
    }
    /// Asks the guest to eject device `id`; returns what waits (without
    /// the controller's lock) until the guest has and the device is
    /// released, or the status and message of the refusal.
    fn remove_device(&mut self, _id: &str) -> Result<EjectWait, (u16, String)> {
        Err((
            400,
            "hot-unplug on a running VM is not supported yet".into(),
        ))
    }
    /// Ids of devices the guest ejected on its own since the last call.
    fn take_ejected(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// The API's view of the VM (`VmInfo.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// No `vm.create` yet (or `vm.delete` since).
    NotCreated,
    /// Created, not booted.
    Created,
    /// Booted.
    Running,
    /// Booted, its vCPUs parked (`vm.pause`).
    Paused,
    /// Booted once, stopped since.
    Shutdown,
}

/// A refused request: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StateError {
    /// 400, 404, 405 or 409.
    pub status: u16,
    /// What is wrong, for the error body.
    pub message: String,
}

impl StateError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        StateError {
            status,
            message: message.into(),
        }
    }

    fn not_created() -> Self {
        StateError::new(404, "the VM is not created: send vm.create first")
    }

    fn not_running(state: VmState) -> Self {
        StateError::new(405, format!("the VM is not running (it is {state:?})"))
    }

    /// A feature vfio-vmm does not have (400).
    pub fn unsupported(what: &str) -> Self {
        StateError::new(400, format!("{what} is not supported yet"))
    }
}

/// How a bad configuration maps to a status: 409 for a duplicate, else 400.
fn config_error(e: ConfigError) -> StateError {
    let status = match &e {
        ConfigError::DuplicateDevice(_) | ConfigError::DuplicateNet { .. } => 409,
        ConfigError::BadId(_, why) if *why == "used twice" => 409,
        _ => 400,
    };
    StateError::new(status, e.to_string())
}

/// Something the process's main loop acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// `vmm.shutdown` was answered: tear down and exit 0.
    VmmShutdown,
    /// SIGINT or SIGTERM: tear down and exit 0.
    Signal(i32),
    /// The VM of boot number `generation` ended on its own.
    VmExited {
        /// Which boot.
        generation: u64,
        /// Why.
        reason: ExitReason,
    },
}

/// The VM, its configuration and the backend running it.
pub struct Controller {
    backend: Box<dyn Backend>,
    events: Sender<Event>,
    state: VmState,
    /// The configuration as JSON (cloud-hypervisor's VmConfig), once created.
    config: Option<Value>,
    taps: TapFds,
    /// Counts boots, so an exit report from an earlier boot is ignored.
    generation: u64,
}

impl Controller {
    /// No VM yet; VM ends are reported on `events`.
    pub fn new(backend: Box<dyn Backend>, events: Sender<Event>) -> Self {
        Controller {
            backend,
            events,
            state: VmState::NotCreated,
            config: None,
            taps: TapFds::new(),
            generation: 0,
        }
    }

    /// The state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// `vm.create`: validates `json` as `--config` would.
    pub fn create(&mut self, json: &str) -> Result<(), StateError> {
        if self.state != VmState::NotCreated {
            return Err(StateError::new(
                409,
                "the VM is already created: send vm.delete first",
            ));
        }
        let config = VmConfig::from_json(json).map_err(config_error)?;
        let sent: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        self.config = Some(to_value(&config).merge_unknown(&sent));
        self.state = VmState::Created;
        Ok(())
    }

    /// `vm.boot`: from Created or Shutdown.
    pub fn boot(&mut self) -> Result<(), StateError> {
        match self.state {
            VmState::NotCreated => return Err(StateError::not_created()),
            VmState::Running => return Err(StateError::new(405, "the VM is already running")),
            VmState::Paused => {
                return Err(StateError::new(
                    405,
                    "the VM is already booted (paused): send vm.resume",
                ))
            }
            VmState::Created | VmState::Shutdown => {}
        }
        let config = self.config()?;
        self.generation += 1;
        let (events, generation) = (self.events.clone(), self.generation);
        let on_exit = Box::new(move |reason| {
            // The receiver is gone only when the process is ending anyway.
            let _ = events.send(Event::VmExited { generation, reason });
        });
        self.backend
            .boot(&config, &self.taps, on_exit)
            .map_err(|e| StateError::new(400, format!("cannot boot the VM: {e}")))?;
        self.state = VmState::Running;
        Ok(())
    }

    /// `vm.shutdown`: stops a running or paused VM.
    pub fn shutdown(&mut self) -> Result<(), StateError> {
        match self.state {
            VmState::NotCreated => Err(StateError::not_created()),
            VmState::Running | VmState::Paused => {
                self.backend.shutdown();
                self.state = VmState::Shutdown;
                Ok(())
            }
            state => Err(StateError::not_running(state)),
        }
    }

    /// `vm.reboot`: tears the VM down and boots it again from its configuration.
    pub fn reboot(&mut self) -> Result<(), StateError> {
        self.shutdown()?;
        self.boot()
    }

    /// `vm.delete`: stops the VM if it runs and forgets it.
    pub fn delete(&mut self) {
        if self.booted() {
            self.backend.shutdown();
        }
        self.state = VmState::NotCreated;
        self.config = None;
        self.taps.clear();
    }

    /// Whether a VM runs or is paused (a backend machine exists).
    fn booted(&self) -> bool {
        matches!(self.state, VmState::Running | VmState::Paused)
    }

    /// `vm.pause`: parks the running VM's vCPUs (404 before `vm.create`,
    /// 405 unless running, as cloud-hypervisor answers).
    pub fn pause(&mut self) -> Result<(), StateError> {
        match self.state {
            VmState::NotCreated => return Err(StateError::not_created()),
            VmState::Paused => return Err(StateError::new(405, "the VM is already paused")),
            VmState::Running => {}
            state => return Err(StateError::not_running(state)),
        }
        self.backend
            .pause()
            .map_err(|e| StateError::new(500, format!("cannot pause the VM: {e}")))?;
        self.state = VmState::Paused;
        Ok(())
    }

    /// `vm.resume`: runs a paused VM again (404 before `vm.create`, 405 unless paused).
    pub fn resume(&mut self) -> Result<(), StateError> {
        match self.state {
            VmState::NotCreated => return Err(StateError::not_created()),
            VmState::Paused => {}
            state => {
                return Err(StateError::new(
                    405,
                    format!("the VM is not paused (it is {state:?})"),
                ))
            }
        }
        self.backend
            .resume()
            .map_err(|e| StateError::new(500, format!("cannot resume the VM: {e}")))?;
        self.state = VmState::Running;
        Ok(())
    }

    /// `vm.power-button`: presses the ACPI power button of a booted VM (a
    /// paused one sees the press once resumed); the guest's poweroff then
    /// ends the VM.
    pub fn power_button(&mut self) -> Result<(), StateError> {
        match self.state {
            VmState::NotCreated => return Err(StateError::not_created()),
            VmState::Running | VmState::Paused => {}
            state => return Err(StateError::not_running(state)),
        }
        self.backend
            .power_button()
            .map_err(|e| StateError::new(500, format!("cannot press the power button: {e}")))
    }

    /// `vm.info`: configuration, state and memory size.
    pub fn info(&mut self) -> Result<Value, StateError> {
        self.prune_ejected();
        let config = self.config.clone().ok_or_else(StateError::not_created)?;
        let size = config
            .pointer("/memory/size")
            .cloned()
            .unwrap_or(Value::Null);
        Ok(serde_json::json!({
            "config": config,
            "state": format!("{:?}", self.state),
            "memory_actual_size": size,
        }))
    }

    /// `vm.counters` (404 before `vm.create`; empty before boot).
    pub fn counters(&self) -> Result<Counters, StateError> {
        match self.state {
            VmState::NotCreated => Err(StateError::not_created()),
            VmState::Running | VmState::Paused => Ok(self.backend.counters()),
            _ => Ok(Counters::new()),
        }
    }

    /// Cold-plug: adds `item` (an object) to the list `section` (`devices`,
    /// `disks`, `net`) or sets the single `vsock`, and revalidates. An item
    /// without an id gets `_{section}N`, as cloud-hypervisor names them.
    /// `fds` are tap descriptors for a NIC. On a running (or paused) VM an
    /// assigned device is hot-plugged. Returns the id, and the guest address
    /// of a hot-plugged device.
    pub fn cold_plug(
        &mut self,
        section: &str,
        mut item: Value,
        fds: Vec<OwnedFd>,
    ) -> Result<(String, Option<String>), StateError> {
        let hot = match self.state {
            VmState::NotCreated => return Err(StateError::not_created()),
            VmState::Running | VmState::Paused
                if matches!(section, "devices" | "disks" | "net") =>
            {
                true
            }
            VmState::Running | VmState::Paused => {
                return Err(StateError::unsupported(&format!(
                    "hotplug of {section} on a running VM"
                )))
            }
            VmState::Created | VmState::Shutdown => false,
        };
        self.prune_ejected();
        let mut config = self.config.clone().ok_or_else(StateError::not_created)?;
        let Some(obj) = item.as_object_mut() else {
            return Err(StateError::new(400, "the body must be a JSON object"));
        };
        let id = match obj.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Null) | None => self.free_id(&config, section),
            Some(other) => return Err(StateError::new(400, format!("id {other} is not a string"))),
        };
        obj.insert("id".into(), Value::String(id.clone()));
        if section == "vsock" {
            if config.get("vsock").is_some_and(|v| !v.is_null()) {
                return Err(StateError::new(409, "the VM has a vsock device already"));
            }
            config["vsock"] = item;
        } else {
            match config.get_mut(section) {
                Some(Value::Array(list)) => list.push(item),
                _ => config[section] = Value::Array(vec![item]),
            }
        }
        let checked = VmConfig::from_json(&config.to_string()).map_err(config_error)?;
        let mut bdf = None;
        if hot {
            bdf = Some(self.hot_plug(&checked, section, &id, &fds)?);
        }
        self.config = Some(to_value(&checked).merge_unknown(&config));
        if !fds.is_empty() {
            self.taps.insert(id.clone(), fds);
        }
        Ok((id, bdf))
    }

    /// Has the backend add item `id` of `section` (in `checked`) to the
    /// running VM; returns its guest address.
    fn hot_plug(
        &mut self,
        checked: &VmConfig,
        section: &str,
        id: &str,
        fds: &[OwnedFd],
    ) -> Result<String, StateError> {
        let vanished = || StateError::new(500, format!("{id} vanished from the config"));
        let has_id = |i: &Option<String>| i.as_deref() == Some(id);
        let added = if section == "net" {
            let net = checked
                .net
                .iter()
                .find(|n| has_id(&n.id))
                .ok_or_else(vanished)?;
            self.backend.add_net(net, id, fds)
        } else if section == "disks" {
            let disk = checked
                .disks
                .iter()
                .find(|d| has_id(&d.id))
                .ok_or_else(vanished)?;
            self.backend.add_disk(disk, id)
        } else {
            let device = checked
                .devices
                .iter()
                .find(|d| has_id(&d.id))
                .ok_or_else(vanished)?;
            self.backend.add_device(device, id)
        };
        added.map_err(|(status, message)| StateError::new(status, message))
    }

    /// Drops from the config the devices the guest ejected on its own.
    fn prune_ejected(&mut self) {
        if !self.booted() {
            return;
        }
        for id in self.backend.take_ejected() {
            self.drop_from_config(&id);
        }
    }

    /// `vm.remove-device`: before boot, drops the device, disk or NIC `id`
    /// and returns `None`; on a running VM, asks the guest to eject device
    /// `id` and returns the wait for it: run it without the controller's
    /// lock, then call [`Controller::removed`].
    pub fn remove(&mut self, id: &str) -> Result<Option<EjectWait>, StateError> {
        match self.state {
            VmState::NotCreated => return Err(StateError::not_created()),
            VmState::Running | VmState::Paused => {
                self.prune_ejected();
                let wait = self.backend.remove_device(id);
                let wait = wait.map_err(|(status, message)| StateError::new(status, message))?;
                return Ok(Some(wait));
            }
            VmState::Created | VmState::Shutdown => {}
        }
        if !self.drop_from_config(id) {
            return Err(StateError::new(404, format!("no device with id {id:?}")));
        }
        self.taps.remove(id);
        Ok(None)
    }

    /// The guest ejected device `id` and it is released: drops it from the config.
    pub fn removed(&mut self, id: &str) {
        self.prune_ejected();
        self.drop_from_config(id);
    }

    /// Removes the item with `id` from the config; whether there was one.
    fn drop_from_config(&mut self, id: &str) -> bool {
        let Some(config) = self.config.as_mut() else {
            return false;
        };
        let has_id = |v: &Value| v.get("id").and_then(Value::as_str) == Some(id);
        let mut found = false;
        if let Some(map) = config.as_object_mut() {
            for (key, value) in map.iter_mut() {
                if let Value::Array(list) = value {
                    let before = list.len();
                    list.retain(|v| !has_id(v));
                    found |= list.len() != before;
                } else if key == "vsock" && has_id(value) {
                    *value = Value::Null;
                    found = true;
                }
            }
        }
        found
    }

    /// Acts on a VM that ended on its own; returns the process exit status
    /// when the process should end (anything but a reboot, which boots again).
    pub fn vm_exited(&mut self, generation: u64, reason: &ExitReason) -> Option<i32> {
        if generation != self.generation || !self.booted() {
            return None;
        }
        // Reaps the machine's thread, which has ended or is ending.
        self.backend.shutdown();
        self.state = VmState::Shutdown;
        if *reason == ExitReason::Reset {
            log::info!("the guest rebooted: booting it again");
            match self.boot() {
                Ok(()) => return None,
                Err(e) => {
                    log::error!("cannot boot the VM again after its reboot: {e}");
                    return Some(1);
                }
            }
        }
        Some(reason.status())
    }

    /// Stops the VM if it runs or is paused (`vmm.shutdown`, signals).
    pub fn teardown(&mut self) {
        if self.booted() {
            self.backend.shutdown();
            self.state = VmState::Shutdown;
        }
    }

    fn config(&self) -> Result<VmConfig, StateError> {
        let json = self.config.as_ref().ok_or_else(StateError::not_created)?;
        VmConfig::from_json(&json.to_string()).map_err(config_error)
    }

    /// `_{section}N` not used by any item yet.
    fn free_id(&self, config: &Value, section: &str) -> String {
        let text = config.to_string();
        (0..)
            .map(|n| format!("_{section}{n}"))
            .find(|id| !text.contains(&format!("\"{id}\"")))
            .unwrap_or_default()
    }
}

/// A validated config as JSON.
fn to_value(config: &VmConfig) -> Value {
    // `to_json` writes plain JSON; it always parses.
    serde_json::from_str(&config.to_json()).unwrap_or(Value::Null)
}

/// Keeps what the caller sent beside what `VmConfig` holds: sections
/// vfio-vmm accepts but does not model (logged as ignored) stay visible in `vm.info`.
trait MergeUnknown {
    fn merge_unknown(self, sent: &Value) -> Value;
}

impl MergeUnknown for Value {
    fn merge_unknown(mut self, sent: &Value) -> Value {
        if let (Some(ours), Some(theirs)) = (self.as_object_mut(), sent.as_object()) {
            for (k, v) in theirs {
                ours.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        self
    }
}
