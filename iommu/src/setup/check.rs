//! `host check`: findings about the host as a whole (IOMMU, interrupt remapping, VFIO
//! modules, /dev/kvm, memlock, hugepages), and the entry point [`check`] that adds the
//! per-device findings from [`super::device_check`] and, with `--user`, those of
//! [`super::user_check`]. Checks never stop at the first
//! problem: an unreadable file becomes a `fail` finding naming it, and the other checks
//! still run.

use std::fs::OpenOptions;
use std::io;

use crate::bdf::Bdf;
use crate::sysfs::{Sysfs, SysfsError};

use super::device_check::{self, MmioWindows};
use super::finding::{Finding, Level, Report};
use super::user_check::{check_user, UserOptions};
use super::Host;
use crate::size::format_size;

/// What `host check` is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Guest RAM size in bytes (`--memory`), checked against memlock and hugepages.
    pub memory: Option<u64>,
    /// Devices to check for assignment.
    pub devices: Vec<Bdf>,
    /// Windows the devices' BARs must fit in.
    pub windows: MmioWindows,
    /// The user the guest will run as (`--user`): /dev/kvm and memlock are checked for
    /// that user instead of this process, with its access to the VFIO nodes and taps.
    pub user: Option<UserOptions>,
}

/// Runs every host check, then the per-device checks.
pub fn check(host: &Host, options: &CheckOptions) -> Report {
    let sysfs = &host.sysfs;
    let iommu = iommu_finding(sysfs);
    let iommu_on = iommu.level == Level::Ok;
    let mut findings = vec![iommu, interrupt_remapping(sysfs, iommu_on)];
    findings.extend(modules(sysfs));
    match &options.user {
        Some(user) => findings.extend(check_user(host, user, options.memory, &options.devices)),
        None => {
            findings.push(kvm(sysfs));
            findings.push(super::memlock::memlock(host, options.memory));
        }
    }
    findings.push(hugepages(sysfs, options.memory));
    let mut seen = Vec::new();
    for bdf in &options.devices {
        if !seen.contains(bdf) {
            seen.push(*bdf);
            findings.extend(device_check::check_device(
                host,
                *bdf,
                &options.devices,
                options.windows,
            ));
        }
    }
    Report { findings }
}

fn read(sysfs: &Sysfs, rel: &str) -> Result<String, SysfsError> {
    Ok(sysfs.read_optional(&sysfs.path(rel))?.unwrap_or_default())
}

fn cmdline_has(cmdline: &str, option: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == option)
}

/// Which IOMMU units the kernel registered (`/sys/class/iommu`) and whether devices were
/// put in groups (`/sys/kernel/iommu_groups`). When there are none, the ACPI tables
/// (`/sys/firmware/acpi/tables/DMAR` or `IVRS`) tell firmware problems from kernel ones.
fn iommu_finding(sysfs: &Sysfs) -> Finding {
    let lists = (|| -> Result<_, SysfsError> {
        let units = sysfs.list_dir(&sysfs.path("/sys/class/iommu"))?;
        let groups = crate::group::group_ids(sysfs)?;
        let cmdline = read(sysfs, "/proc/cmdline")?;
        let cpuinfo = read(sysfs, "/proc/cpuinfo")?;
        Ok((units, groups, cmdline, cpuinfo))
    })();
    let (units, groups, cmdline, cpuinfo) = match lists {
        Ok(lists) => lists,
        Err(e) => return Finding::unreadable("iommu", &e),
    };
    let vendor = if units.iter().any(|u| u.starts_with("dmar")) {
        "Intel VT-d"
    } else if units.iter().any(|u| u.starts_with("ivhd")) {
        "AMD-Vi"
    } else {
        "IOMMU"
    };
    if !units.is_empty() && !groups.is_empty() {
        return Finding::ok(
            "iommu",
            format!(
                "{vendor} enabled ({}), {} IOMMU groups",
                units.join(", "),
                groups.len()
            ),
        );
    }
    let reboot = "edit GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub (or grub2-mkconfig) and reboot";
    if !units.is_empty() {
        return Finding::fail(
            "iommu",
            format!("{vendor} units present ({}) but no IOMMU groups exist", units.join(", ")),
            format!("remove iommu=off or similar from the kernel command line ({reboot}); `dmesg | grep -i -e DMAR -e AMD-Vi -e iommu` shows why"),
        );
    }
    for off in ["intel_iommu=off", "amd_iommu=off", "iommu=off"] {
        if cmdline_has(&cmdline, off) {
            return Finding::fail(
                "iommu",
                format!("no IOMMU active: the kernel command line has {off}"),
                format!("remove {off} from the kernel command line ({reboot})"),
            );
        }
    }
    let intel_cpu = cpuinfo.contains("GenuineIntel");
    let amd_cpu = cpuinfo.contains("AuthenticAMD");
    if sysfs.path("/sys/firmware/acpi/tables/DMAR").exists() {
        return Finding::fail(
            "iommu",
            "no IOMMU active: the firmware describes Intel VT-d (ACPI DMAR table) but the kernel did not enable it",
            format!("add intel_iommu=on to the kernel command line ({reboot})"),
        );
    }
    if sysfs.path("/sys/firmware/acpi/tables/IVRS").exists() {
        return Finding::fail(
            "iommu",
            "no IOMMU active: the firmware describes AMD-Vi (ACPI IVRS table) but the kernel did not enable it",
            format!("make sure the kernel has CONFIG_AMD_IOMMU and no amd_iommu= option disables it ({reboot}); `dmesg | grep AMD-Vi` shows why"),
        );
    }
    let firmware = if intel_cpu {
        "enable VT-d (\"Intel Virtualization Technology for Directed I/O\") in the firmware setup, then add intel_iommu=on to the kernel command line"
    } else if amd_cpu {
        "enable the IOMMU (\"AMD-Vi\" or \"IOMMU\") in the firmware setup"
    } else {
        "enable the IOMMU in the firmware setup and in the kernel configuration"
    };
    Finding::fail(
        "iommu",
        "no IOMMU: the firmware does not describe one (no ACPI DMAR or IVRS table)",
        firmware,
    )
}

/// Interrupt remapping, decided without dmesg (which needs privileges and whose ring
/// buffer wraps). The evidence is `/proc/interrupts`: when remapping is live the kernel
/// stacks the "IR-" irq domains (`IR-IO-APIC`, `IR-PCI-MSI`, `IR-PCI-MSIX-...`) on both
/// Intel and AMD, and only then. The Intel ECAP register (bit 3, IR) only says what the
/// hardware could do: `intremap=off` or a firmware x2APIC opt-out still leave it off, so it
/// is used only to explain a failure. VFIO refuses devices without remapping unless
/// vfio_iommu_type1's `allow_unsafe_interrupts` is set.
fn interrupt_remapping(sysfs: &Sysfs, iommu_on: bool) -> Finding {
    let (interrupts, cmdline, unsafe_param) = match (|| -> Result<_, SysfsError> {
        Ok((
            read(sysfs, "/proc/interrupts")?,
            read(sysfs, "/proc/cmdline")?,
            read(
                sysfs,
                "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
            )?,
        ))
    })() {
        Ok(values) => values,
        Err(e) => return Finding::unreadable("interrupt remapping", &e),
    };
    let subject = "interrupt remapping";
    if interrupts.split_whitespace().any(|w| w.starts_with("IR-")) {
        return Finding::ok(
            subject,
            "active (IR- interrupt domains in /proc/interrupts)",
        );
    }
    let mut why = Vec::new();
    if cmdline_has(&cmdline, "intremap=off") {
        why.push("the kernel command line has intremap=off".to_string());
    }
    for unit in sysfs
        .list_dir(&sysfs.path("/sys/class/iommu"))
        .unwrap_or_default()
    {
        let ecap = sysfs
            .path("/sys/class/iommu")
            .join(&unit)
            .join("intel-iommu/ecap");
        if let Ok(Some(value)) = sysfs.read_optional(&ecap) {
            if u64::from_str_radix(value.trim_start_matches("0x"), 16).is_ok_and(|e| e & 0x8 == 0) {
                why.push(format!(
                    "{unit} has no interrupt remapping hardware (ECAP.IR clear)"
                ));
            }
        }
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {}", why.join("; "))
    };
    if unsafe_param.eq_ignore_ascii_case("y") || unsafe_param == "1" {
        return Finding::warn(
            subject,
            format!("not active{why}; VFIO allows assignment only because vfio_iommu_type1 allow_unsafe_interrupts=Y, so a guest can forge interrupts"),
            "enable interrupt remapping (x2APIC / IR in firmware, no intremap=off) and drop allow_unsafe_interrupts",
        );
    }
    if !iommu_on {
        return Finding::fail(
            subject,
            format!("not active{why}"),
            "enable the IOMMU first (see the iommu line)",
        );
    }
    Finding::fail(
        subject,
        format!("not active{why}; VFIO will refuse to attach devices"),
        "enable x2APIC and interrupt remapping in the firmware and remove intremap=off; as a last resort (unsafe) add `options vfio_iommu_type1 allow_unsafe_interrupts=1` to /etc/modprobe.d/vfio.conf",
    )
}

/// `vfio`, `vfio_iommu_type1` and `vfio_pci`: loaded (or built in) per `/sys/module`, else
/// available per the kernel's `modules.dep`/`modules.builtin`.
fn modules(sysfs: &Sysfs) -> Vec<Finding> {
    let release = read(sysfs, "/proc/sys/kernel/osrelease").unwrap_or_default();
    let moddir = sysfs.path("/lib/modules").join(&release);
    let mut known = String::new();
    for list in ["modules.dep", "modules.builtin"] {
        if let Ok(Some(text)) = sysfs.read_optional(&moddir.join(list)) {
            known.push_str(&text);
            known.push('\n');
        }
    }
    let in_list = |module: &str| {
        known.lines().any(|line| {
            let path = line.split(':').next().unwrap_or("");
            let file = path.rsplit('/').next().unwrap_or("");
            let name = file.split(".ko").next().unwrap_or("");
            name.replace('-', "_") == module
        })
    };
    let mut findings = Vec::new();
    for (module, load_hint, config) in [
        ("vfio", "loaded with vfio_pci", "CONFIG_VFIO"),
        (
            "vfio_iommu_type1",
            "loaded with vfio_pci",
            "CONFIG_VFIO_IOMMU_TYPE1",
        ),
        (
            "vfio_pci",
            "`vfio-vmm host bind` loads it",
            "CONFIG_VFIO_PCI",
        ),
    ] {
        let subject = format!("module {module}");
        let present = |m: &str| sysfs.path("/sys/module").join(m).exists();
        if present(module) {
            findings.push(Finding::ok(subject, "loaded"));
        } else if in_list(module) {
            findings.push(Finding::ok(
                subject,
                format!("available, not loaded ({load_hint})"),
            ));
        } else if module == "vfio_iommu_type1" && (present("iommufd") || in_list("iommufd")) {
            // Kernels with CONFIG_IOMMUFD_VFIO_CONTAINER serve /dev/vfio/vfio from iommufd.
            findings.push(Finding::ok(
                subject,
                "absent; iommufd provides the VFIO container",
            ));
        } else {
            findings.push(Finding::fail(
                subject,
                format!("not loaded and not in {}", moddir.join("modules.dep").display()),
                format!("install the kernel's extra modules package (e.g. linux-modules-extra-$(uname -r)) or use a kernel built with {config}"),
            ));
        }
    }
    findings
}

fn kvm(sysfs: &Sysfs) -> Finding {
    let path = sysfs.path("/dev/kvm");
    match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(_) => Finding::ok("/dev/kvm", "usable"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Finding::fail(
            "/dev/kvm",
            format!("{} does not exist", path.display()),
            "enable VT-x/AMD-V (SVM) in the firmware setup and load kvm_intel or kvm_amd (`modprobe kvm_intel`)",
        ),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Finding::fail(
            "/dev/kvm",
            format!("{} is not readable and writable by this user", path.display()),
            "add the user to the kvm group (`usermod -aG kvm USER`, then log in again) or run as root",
        ),
        Err(e) => Finding::fail("/dev/kvm", format!("cannot open {}: {e}", path.display()), "check dmesg for kvm errors"),
    }
}

/// Hugepages are optional (guest RAM falls back to normal pages), so this only warns.
fn hugepages(sysfs: &Sysfs, memory: Option<u64>) -> Finding {
    let dir = sysfs.path("/sys/kernel/mm/hugepages");
    let mut pools = Vec::new();
    let mut free_bytes = 0u64;
    for name in sysfs.list_dir(&dir).unwrap_or_default() {
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|n| n.strip_suffix("kB"))
        else {
            continue;
        };
        let Ok(kb) = kb.parse::<u64>() else { continue };
        let count = |file: &str| -> u64 {
            sysfs
                .read_optional(&dir.join(&name).join(file))
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (total, free) = (count("nr_hugepages"), count("free_hugepages"));
        if total > 0 {
            pools.push(format!("{total} x {} ({free} free)", format_size(kb << 10)));
            free_bytes = free_bytes.saturating_add(free.saturating_mul(kb << 10));
        }
    }
    let reserve = "optional, for `vfio-vmm run --memory SIZE,hugepages=on`: reserve them, e.g. `echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` (2 GiB) or hugepages=N on the kernel command line";
    if pools.is_empty() {
        return Finding::warn(
            "hugepages",
            "none reserved; guest RAM uses normal pages",
            reserve,
        );
    }
    let summary = pools.join(", ");
    match memory {
        Some(memory) if free_bytes < memory => Finding::warn(
            "hugepages",
            format!(
                "{summary}: {} free, less than the {} guest",
                format_size(free_bytes),
                format_size(memory)
            ),
            reserve,
        ),
        _ => Finding::ok("hugepages", summary),
    }
}
