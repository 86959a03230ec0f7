//! Builds fake sysfs/procfs trees in temporary directories from the JSON host
//! descriptions in `tests/fixtures/*.json`, laid out like the real kernel's (device
//! directories under `sys/devices`, `driver` and `iommu_group` symlinks, group member
//! links, `resource` lines), so the code under test reads them exactly as it reads `/`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;

/// A host description (one fixture file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// What the fixture models (for humans).
    pub description: String,
    /// `vendor_id` for /proc/cpuinfo.
    pub cpu: String,
    /// /proc/cmdline.
    pub cmdline: String,
    /// Names under /sys/class/iommu, with the Intel ECAP register when given.
    #[serde(default)]
    pub iommu_units: Vec<IommuUnit>,
    /// ACPI tables present under /sys/firmware/acpi/tables (DMAR, IVRS).
    #[serde(default)]
    pub acpi_tables: Vec<String>,
    /// Whether /proc/interrupts shows IR- (remapped) interrupt domains.
    pub interrupt_remapping: bool,
    /// vfio_iommu_type1 allow_unsafe_interrupts.
    #[serde(default)]
    pub allow_unsafe_interrupts: bool,
    /// Modules under /sys/module.
    #[serde(default)]
    pub modules_loaded: Vec<String>,
    /// Module files listed in lib/modules/RELEASE/modules.dep.
    #[serde(default)]
    pub modules_available: Vec<String>,
    /// Whether /dev/kvm exists.
    pub kvm: bool,
    /// Hugepage pools: `[size_kb, total, free]`.
    #[serde(default)]
    pub hugepages: Vec<[u64; 3]>,
    /// Registered PCI drivers (sys/bus/pci/drivers/NAME).
    pub drivers: Vec<String>,
    /// PCI functions.
    pub devices: Vec<DeviceSpec>,
}

/// One IOMMU unit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IommuUnit {
    /// `dmar0`, `ivhd0`, ...
    pub name: String,
    /// Intel ECAP register in hex.
    pub ecap: Option<String>,
}

/// One PCI function.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Address, canonical form.
    pub bdf: String,
    /// `vendor:device` in hex.
    pub id: String,
    /// `subvendor:subdevice` in hex.
    #[serde(default)]
    pub subsystem: Option<String>,
    /// Class code, 6 hex digits.
    pub class: String,
    /// Bound driver.
    pub driver: Option<String>,
    /// The driver the fake kernel's probe picks when no override is set; defaults to
    /// `driver`.
    #[serde(default)]
    pub native_driver: Option<String>,
    /// IOMMU group.
    pub group: Option<u32>,
    /// `reset_method` contents; absent means no file.
    #[serde(default)]
    pub reset_method: Option<String>,
    /// BARs as `INDEX:SIZE:KIND`, SIZE with K/M/G suffix, KIND mem32|mem64|mem64pref|io.
    #[serde(default)]
    pub bars: Vec<String>,
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("vfio-vmm-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub const RELEASE: &str = "6.8.0-test";

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read_spec(name: &str) -> HostSpec {
    let path = fixture_path(&format!("{name}.json"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn put(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

pub fn device_dir(root: &Path, bdf: &str) -> PathBuf {
    root.join("sys/devices/pci0000:00").join(bdf)
}

/// Links `bdf` to `driver` the way the kernel shows a bound device.
pub fn link_driver(root: &Path, bdf: &str, driver: &str) {
    let drv = root.join("sys/bus/pci/drivers").join(driver);
    fs::create_dir_all(&drv).expect("driver dir");
    symlink(
        format!("../../../bus/pci/drivers/{driver}"),
        device_dir(root, bdf).join("driver"),
    )
    .expect("driver link");
    symlink(
        format!("../../../../devices/pci0000:00/{bdf}"),
        drv.join(bdf),
    )
    .expect("driver member link");
}

/// Removes the links [`link_driver`] made.
pub fn unlink_driver(root: &Path, bdf: &str, driver: &str) {
    let _ = fs::remove_file(device_dir(root, bdf).join("driver"));
    let _ = fs::remove_file(root.join("sys/bus/pci/drivers").join(driver).join(bdf));
}

/// Registers a PCI driver: its directory with `bind`, `unbind` and `new_id` files.
pub fn add_driver(root: &Path, driver: &str) {
    let dir = root.join("sys/bus/pci/drivers").join(driver);
    for file in ["bind", "unbind", "new_id"] {
        put(&dir.join(file), "");
    }
}

fn size(text: &str) -> u64 {
    let shift = match text.chars().last() {
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        _ => 0,
    };
    let digits = text.trim_end_matches(['K', 'M', 'G']);
    digits.parse::<u64>().expect("bar size") << shift
}

fn resource_file(bars: &[String]) -> String {
    let mut lines = vec![(0u64, 0u64, 0u64); 13];
    let mut next: u64 = 0x40_0000_0000;
    for bar in bars {
        let parts: Vec<&str> = bar.split(':').collect();
        let index: usize = parts[0].parse().expect("bar index");
        let len = size(parts[1]);
        let flags = match parts[2] {
            "mem32" => 0x0004_0200,
            "mem64" => 0x0014_0204,
            "mem64pref" => 0x0014_220c,
            "io" => 0x0004_0101,
            other => panic!("bar kind {other}"),
        };
        let start = next.next_multiple_of(len);
        lines[index] = (start, start + len - 1, flags);
        next = start + len;
    }
    lines
        .iter()
        .map(|(s, e, f)| format!("0x{s:016x} 0x{e:016x} 0x{f:016x}\n"))
        .collect()
}

/// Builds the tree for `spec` under `root`.
pub fn build(root: &Path, spec: &HostSpec) {
    add_proc(root, spec);
    fs::create_dir_all(root.join("sys/class/iommu")).expect("class/iommu");
    fs::create_dir_all(root.join("sys/kernel/iommu_groups")).expect("iommu_groups");
    fs::create_dir_all(root.join("sys/bus/pci/devices")).expect("pci devices");
    put(&root.join("sys/bus/pci/drivers_probe"), "");
    add_iommu(root, spec);
    add_modules(root, spec);
    if spec.kvm {
        put(&root.join("dev/kvm"), "");
    }
    for [kb, total, free] in &spec.hugepages {
        let dir = root
            .join("sys/kernel/mm/hugepages")
            .join(format!("hugepages-{kb}kB"));
        put(&dir.join("nr_hugepages"), &format!("{total}\n"));
        put(&dir.join("free_hugepages"), &format!("{free}\n"));
    }
    for driver in &spec.drivers {
        add_driver(root, driver);
    }
    for dev in &spec.devices {
        add_device(root, dev);
    }
}

/// `proc/cmdline`, `proc/cpuinfo`, the kernel release and `proc/interrupts` (with IR-
/// domains when remapping is on).
fn add_proc(root: &Path, spec: &HostSpec) {
    put(&root.join("proc/cmdline"), &format!("{}\n", spec.cmdline));
    put(
        &root.join("proc/cpuinfo"),
        &format!("processor\t: 0\nvendor_id\t: {}\n", spec.cpu),
    );
    put(
        &root.join("proc/sys/kernel/osrelease"),
        &format!("{RELEASE}\n"),
    );
    let chip = if spec.interrupt_remapping {
        "IR-IO-APIC"
    } else {
        "IO-APIC"
    };
    let msi = if spec.interrupt_remapping {
        "IR-PCI-MSIX-0000:00:14.0"
    } else {
        "PCI-MSIX-0000:00:14.0"
    };
    put(
        &root.join("proc/interrupts"),
        &format!("           CPU0\n  1:         9  {chip}    1-edge      i8042\n 24:       100  {msi}  0-edge  xhci_hcd\n"),
    );
}

/// IOMMU units under `sys/class/iommu` (with their ECAP) and the ACPI tables.
fn add_iommu(root: &Path, spec: &HostSpec) {
    for unit in &spec.iommu_units {
        let dir = root.join("sys/devices/virtual/iommu").join(&unit.name);
        fs::create_dir_all(&dir).expect("iommu unit");
        if let Some(ecap) = &unit.ecap {
            put(&dir.join("intel-iommu/ecap"), &format!("{ecap}\n"));
        }
        symlink(
            format!("../../devices/virtual/iommu/{}", unit.name),
            root.join("sys/class/iommu").join(&unit.name),
        )
        .expect("class link");
    }
    for table in &spec.acpi_tables {
        put(&root.join("sys/firmware/acpi/tables").join(table), "");
    }
}

/// Loaded modules under `sys/module` (with vfio_iommu_type1's allow_unsafe_interrupts)
/// and the available ones in `modules.dep`.
fn add_modules(root: &Path, spec: &HostSpec) {
    for module in &spec.modules_loaded {
        fs::create_dir_all(root.join("sys/module").join(module)).expect("module");
    }
    if spec.modules_loaded.iter().any(|m| m == "vfio_iommu_type1") {
        let value = if spec.allow_unsafe_interrupts {
            "Y"
        } else {
            "N"
        };
        put(
            &root.join("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"),
            &format!("{value}\n"),
        );
    }
    let dep: String = spec
        .modules_available
        .iter()
        .map(|m| format!("kernel/drivers/vfio/{m}.ko.zst: kernel/drivers/vfio/vfio.ko.zst\n"))
        .collect();
    put(
        &root.join("lib/modules").join(RELEASE).join("modules.dep"),
        &dep,
    );
}

fn add_device(root: &Path, dev: &DeviceSpec) {
    let dir = device_dir(root, &dev.bdf);
    let (vendor, device) = dev.id.split_once(':').expect("id");
    let (subvendor, subdevice) = dev
        .subsystem
        .as_deref()
        .unwrap_or("0000:0000")
        .split_once(':')
        .expect("subsystem");
    put(&dir.join("vendor"), &format!("0x{vendor}\n"));
    put(&dir.join("device"), &format!("0x{device}\n"));
    put(&dir.join("subsystem_vendor"), &format!("0x{subvendor}\n"));
    put(&dir.join("subsystem_device"), &format!("0x{subdevice}\n"));
    put(&dir.join("class"), &format!("0x{}\n", dev.class));
    put(&dir.join("driver_override"), "(null)\n");
    put(&dir.join("resource"), &resource_file(&dev.bars));
    if let Some(reset) = &dev.reset_method {
        put(&dir.join("reset_method"), &format!("{reset}\n"));
        put(&dir.join("reset"), "");
    }
    symlink(
        format!("../../../devices/pci0000:00/{}", dev.bdf),
        root.join("sys/bus/pci/devices").join(&dev.bdf),
    )
    .expect("bus link");
    if let Some(driver) = &dev.driver {
        link_driver(root, &dev.bdf, driver);
    }
    if let Some(group) = dev.group {
        let gdir = root
            .join("sys/kernel/iommu_groups")
            .join(group.to_string())
            .join("devices");
        fs::create_dir_all(&gdir).expect("group dir");
        symlink(
            format!("../../../../devices/pci0000:00/{}", dev.bdf),
            gdir.join(&dev.bdf),
        )
        .expect("member link");
        symlink(
            format!("../../../kernel/iommu_groups/{group}"),
            dir.join("iommu_group"),
        )
        .expect("group link");
    }
}

/// Makes process `pid` (named `comm`) hold `file` open, as /proc shows it.
pub fn add_holder(root: &Path, pid: u32, comm: &str, file: &str) {
    let pdir = root.join("proc").join(pid.to_string());
    put(&pdir.join("comm"), &format!("{comm}\n"));
    fs::create_dir_all(pdir.join("fd")).expect("fd dir");
    symlink("/dev/null", pdir.join("fd/0")).expect("fd 0");
    symlink(file, pdir.join("fd/7")).expect("fd 7");
}
