//! Hotplug through the controller with a backend that plays the machine:
//! a running VM takes an assigned device (the answer carries its guest
//! address), removes it when the guest ejects, and forgets a device the
//! guest ejected on its own; refusals keep the config as it was.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::super::state::{Backend, Controller, Counters, EjectWait, TapFds};
use crate::config::tests::fake_bzimage;
use crate::config::{DeviceConfig, VmConfig};
use crate::exit::ExitReason;

/// Devices in the fake guest, by id; ids the guest ejected on its own.
#[derive(Default)]
struct Guest {
    devices: Vec<(String, String)>,
    ejected_alone: Vec<String>,
    /// The next remove times out (the guest does not eject).
    deaf: bool,
}

struct HotFake(Arc<Mutex<Guest>>);

impl Backend for HotFake {
    fn boot(
        &mut self,
        _: &VmConfig,
        _: &TapFds,
        _: Box<dyn FnOnce(ExitReason) + Send>,
    ) -> Result<(), String> {
        Ok(())
    }
    fn shutdown(&mut self) {}
    fn pause(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn resume(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn power_button(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn counters(&self) -> Counters {
        Counters::new()
    }
    fn add_device(&mut self, device: &DeviceConfig, id: &str) -> Result<String, (u16, String)> {
        let mut guest = self.0.lock().unwrap();
        if device.bdf.to_string() == "0000:09:00.0" {
            return Err((400, "0000:09:00.0 is not bound to vfio-pci".into()));
        }
        let bdf = format!("0000:00:{:02x}.0", guest.devices.len() + 1);
        guest.devices.push((id.to_string(), bdf.clone()));
        Ok(bdf)
    }
    fn remove_device(&mut self, id: &str) -> Result<EjectWait, (u16, String)> {
        if !self.0.lock().unwrap().devices.iter().any(|(d, _)| d == id) {
            return Err((404, format!("no hot-removable device with id {id:?}")));
        }
        let (guest, id) = (self.0.clone(), id.to_string());
        Ok(Box::new(move || {
            let mut guest = guest.lock().unwrap();
            if guest.deaf {
                return Err((409, "the guest did not eject".into()));
            }
            guest.devices.retain(|(d, _)| *d != id);
            Ok(())
        }))
    }

    fn take_ejected(&mut self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().ejected_alone)
    }
}

fn device(bdf: &str, id: &str) -> Value {
    serde_json::json!({"path": format!("/sys/bus/pci/devices/{bdf}"), "id": id})
}

fn ids(controller: &mut Controller) -> Vec<String> {
    let info = controller.info().unwrap();
    let list = info["config"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_running_vm_takes_and_gives_back_assigned_devices() {
    let kernel = fake_bzimage("api-hotplug");
    let guest = Arc::new(Mutex::new(Guest::default()));
    let (tx, _rx) = mpsc::channel();
    let mut c = Controller::new(Box::new(HotFake(guest.clone())), tx);
    let config = format!(
        r#"{{"payload": {{"kernel": {:?}}}, "memory": {{"size": 268435456}}}}"#,
        kernel.display().to_string()
    );
    c.create(&config).unwrap();
    c.boot().unwrap();

    let (id, bdf) = c
        .cold_plug("devices", device("0000:05:00.0", "nic0"), Vec::new())
        .unwrap();
    assert_eq!(
        (id.as_str(), bdf.as_deref()),
        ("nic0", Some("0000:00:01.0"))
    );
    assert_eq!(ids(&mut c), ["nic0"]);

    let again = c.cold_plug("devices", device("0000:05:00.0", "nic1"), Vec::new());
    assert_eq!(again.unwrap_err().status, 409, "the same device twice");
    let refused = c.cold_plug("devices", device("0000:09:00.0", "x"), Vec::new());
    assert_eq!(refused.unwrap_err().status, 400);
    assert_eq!(ids(&mut c), ["nic0"], "a refused device is not listed");
    let net = serde_json::json!({"tap": "tap9"});
    let net = c.cold_plug("net", net, Vec::new()).unwrap_err();
    assert!(
        net.message.contains("hotplug of net on a running VM"),
        "{}",
        net.message
    );
    let disk = serde_json::json!({"path": "/nonexistent.img"});
    let disk = c.cold_plug("disks", disk, Vec::new()).unwrap_err();
    assert_eq!(
        disk.status, 400,
        "validated before the backend: {}",
        disk.message
    );

    guest.lock().unwrap().deaf = true;
    let wait = c.remove("nic0").unwrap().expect("a wait for the eject");
    assert_eq!(wait().unwrap_err().0, 409);
    assert_eq!(ids(&mut c), ["nic0"], "not ejected: still there");
    guest.lock().unwrap().deaf = false;
    let wait = c.remove("nic0").unwrap().expect("a wait for the eject");
    assert_eq!(ids(&mut c), ["nic0"], "listed until the eject");
    wait().unwrap();
    c.removed("nic0");
    assert!(ids(&mut c).is_empty());
    assert_eq!(c.remove("nic0").err().map(|e| e.status), Some(404));

    // Replug, then the guest ejects it on its own: vm.info stops listing it.
    let (_, bdf) = c
        .cold_plug("devices", device("0000:05:00.0", "nic0"), Vec::new())
        .unwrap();
    assert!(bdf.is_some());
    guest.lock().unwrap().ejected_alone.push("nic0".into());
    assert!(ids(&mut c).is_empty());
    let _ = std::fs::remove_file(&kernel);
}
