//! A stand-in for the kernel's PCI core over a fake tree: it reacts to `driver_override`,
//! `drivers/NAME/bind|unbind` and `drivers_probe` writes the way Linux does (including
//! its refusals), loads modules by creating their sysfs directories, and can be told to
//! fail chosen writes with an errno, so tests can drive failures and rollbacks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use iommu::setup::kernel::{Kernel, KernelError};
use iommu::sysfs::Sysfs;
use nix::errno::Errno;

use super::tree;

/// A write the fake kernel refuses: path ending and value, the errno, and how many more
/// times it applies (`None`: always).
pub struct FailRule {
    pub path_suffix: String,
    pub value: String,
    pub errno: Errno,
    pub times: Option<u32>,
}

pub struct State {
    pub root: PathBuf,
    pub euid: u32,
    pub memlock: Option<u64>,
    /// Driver the probe picks without an override, per device.
    pub native: HashMap<String, String>,
    pub rules: Vec<FailRule>,
    /// Every write, as (path relative to the root, value).
    pub writes: Vec<(String, String)>,
    pub modules_loaded: Vec<String>,
    /// Whether modprobe works.
    pub modprobe_ok: bool,
}

#[derive(Clone)]
pub struct FakeKernel(pub Rc<RefCell<State>>);

fn err(errno: Errno) -> io::Error {
    io::Error::from(errno)
}

impl State {
    fn device_dir(&self, bdf: &str) -> PathBuf {
        tree::device_dir(&self.root, bdf)
    }

    fn driver_of(&self, bdf: &str) -> Option<String> {
        fs::read_link(self.device_dir(bdf).join("driver"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    fn override_of(&self, bdf: &str) -> Option<String> {
        let text = fs::read_to_string(self.device_dir(bdf).join("driver_override")).ok()?;
        let text = text.trim();
        (text != "(null)" && !text.is_empty()).then(|| text.to_string())
    }

    fn driver_registered(&self, driver: &str) -> bool {
        self.root.join("sys/bus/pci/drivers").join(driver).exists()
    }

    /// The kernel's bind: refused when already bound (EBUSY) or when the override names
    /// another driver (ENODEV).
    fn attach(&self, bdf: &str, driver: &str) -> io::Result<()> {
        if self.driver_of(bdf).is_some() {
            return Err(err(Errno::EBUSY));
        }
        if self.override_of(bdf).is_some_and(|o| o != driver) || !self.driver_registered(driver) {
            return Err(err(Errno::ENODEV));
        }
        tree::link_driver(&self.root, bdf, driver);
        Ok(())
    }

    fn apply(&mut self, rel: &str, value: &str) -> io::Result<()> {
        let bdf = value.trim();
        if let Some(dev) = rel
            .strip_prefix("sys/bus/pci/devices/")
            .and_then(|r| r.strip_suffix("/driver_override"))
        {
            let stored = if value.trim().is_empty() {
                "(null)".to_string()
            } else {
                value.trim().to_string()
            };
            fs::write(
                self.device_dir(dev).join("driver_override"),
                format!("{stored}\n"),
            )?;
            return Ok(());
        }
        if rel == "sys/bus/pci/drivers_probe" {
            if !self.device_dir(bdf).exists() {
                return Err(err(Errno::ENODEV));
            }
            if self.driver_of(bdf).is_some() {
                return Ok(());
            }
            let pick = self
                .override_of(bdf)
                .or_else(|| self.native.get(bdf).cloned());
            if let Some(driver) = pick.filter(|d| self.driver_registered(d)) {
                self.attach(bdf, &driver)?;
            }
            return Ok(());
        }
        if let Some(rest) = rel.strip_prefix("sys/bus/pci/drivers/") {
            let (driver, action) = rest.split_once('/').ok_or_else(|| err(Errno::EINVAL))?;
            return match action {
                "unbind" if self.driver_of(bdf).as_deref() == Some(driver) => {
                    tree::unlink_driver(&self.root, bdf, driver);
                    Ok(())
                }
                "unbind" => Err(err(Errno::ENODEV)),
                "bind" => self.attach(bdf, driver),
                _ => Err(err(Errno::EINVAL)),
            };
        }
        Err(err(Errno::EACCES))
    }
}

impl Kernel for FakeKernel {
    fn write_attr(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut state = self.0.borrow_mut();
        let rel = path
            .strip_prefix(&state.root)
            .expect("write outside the fake root")
            .to_string_lossy()
            .into_owned();
        state.writes.push((rel.clone(), value.to_string()));
        let hit = state.rules.iter_mut().find(|r| {
            rel.ends_with(&r.path_suffix) && value.trim() == r.value && r.times != Some(0)
        });
        if let Some(rule) = hit {
            if let Some(times) = rule.times.as_mut() {
                *times -= 1;
            }
            return Err(err(rule.errno));
        }
        state.apply(&rel, value)
    }

    fn load_module(&self, _sysfs: &Sysfs, module: &str) -> Result<(), KernelError> {
        let mut state = self.0.borrow_mut();
        state.modules_loaded.push(module.to_string());
        if !state.modprobe_ok {
            return Err(KernelError::Modprobe {
                module: module.to_string(),
                stderr: format!("modprobe: FATAL: Module {module} not found"),
            });
        }
        tree::add_driver(&state.root, module);
        fs::create_dir_all(state.root.join("sys/module").join(module.replace('-', "_")))
            .expect("module dir");
        Ok(())
    }

    fn euid(&self) -> u32 {
        self.0.borrow().euid
    }

    fn memlock_limit(&self) -> Option<u64> {
        self.0.borrow().memlock
    }
}
