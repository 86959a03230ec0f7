//! Test support: a fake host (tree + fake kernel) built from a fixture.
#![allow(dead_code)]

pub mod kernel;
pub mod tree;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use iommu::setup::Host;
use iommu::sysfs::Sysfs;
use iommu::Bdf;
use nix::errno::Errno;

use kernel::{FailRule, FakeKernel, State};
use tree::TempDir;

/// A fake host: a tree under a temp dir and the kernel that reacts to writes into it.
pub struct FakeHost {
    pub dir: TempDir,
    pub kernel: FakeKernel,
}

impl FakeHost {
    /// Builds the host described by `tests/fixtures/NAME.json`.
    pub fn load(name: &str) -> FakeHost {
        let spec = tree::read_spec(name);
        let dir = TempDir::new(name);
        tree::build(&dir.0, &spec);
        let native: HashMap<String, String> = spec
            .devices
            .iter()
            .filter_map(|d| {
                d.native_driver
                    .clone()
                    .or(d.driver.clone())
                    .map(|n| (d.bdf.clone(), n))
            })
            .filter(|(_, n)| n != "vfio-pci")
            .collect();
        let state = State {
            root: dir.0.clone(),
            euid: 0,
            memlock: Some(8 << 20),
            native,
            rules: Vec::new(),
            writes: Vec::new(),
            modules_loaded: Vec::new(),
            modprobe_ok: true,
        };
        FakeHost {
            dir,
            kernel: FakeKernel(Rc::new(RefCell::new(state))),
        }
    }

    pub fn root(&self) -> &Path {
        &self.dir.0
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root().join("run/vfio-vmm")
    }

    /// The `Host` the code under test uses.
    pub fn host(&self) -> Host {
        Host::new(
            Sysfs::new(self.root()),
            self.state_dir(),
            Box::new(self.kernel.clone()),
        )
    }

    /// The driver `bdf` is bound to now.
    pub fn driver(&self, bdf: &str) -> Option<String> {
        Sysfs::new(self.root())
            .driver_of(bdf.parse().unwrap())
            .unwrap()
    }

    /// The `driver_override` of `bdf` now (`None` when cleared).
    pub fn driver_override(&self, bdf: &str) -> Option<String> {
        Sysfs::new(self.root())
            .device(bdf.parse().unwrap())
            .unwrap()
            .driver_override
    }

    pub fn set_euid(&self, euid: u32) {
        self.kernel.0.borrow_mut().euid = euid;
    }

    pub fn set_memlock(&self, limit: Option<u64>) {
        self.kernel.0.borrow_mut().memlock = limit;
    }

    pub fn set_modprobe_ok(&self, ok: bool) {
        self.kernel.0.borrow_mut().modprobe_ok = ok;
    }

    /// Makes writes of `value` to paths ending in `path_suffix` fail with `errno`, `times`
    /// times (`None`: always).
    pub fn fail_write(&self, path_suffix: &str, value: &str, errno: Errno, times: Option<u32>) {
        self.kernel.0.borrow_mut().rules.push(FailRule {
            path_suffix: path_suffix.to_string(),
            value: value.to_string(),
            errno,
            times,
        });
    }

    pub fn writes(&self) -> Vec<(String, String)> {
        self.kernel.0.borrow().writes.clone()
    }

    pub fn modules_loaded(&self) -> Vec<String> {
        self.kernel.0.borrow().modules_loaded.clone()
    }

    pub fn hold(&self, pid: u32, comm: &str, file: &str) {
        tree::add_holder(self.root(), pid, comm, file);
    }
}

pub fn bdf(text: &str) -> Bdf {
    text.parse().unwrap()
}

pub fn bdfs(texts: &[&str]) -> Vec<Bdf> {
    texts.iter().map(|t| bdf(t)).collect()
}
