//! `host bind` and `host unbind`: moving devices between their host drivers and vfio-pci
//! through `driver_override`, all-or-nothing.
//!
//! Bind, per device: record the current driver in the state file, write `vfio-pci` to
//! `driver_override`, write the address to the old driver's `unbind`, write it to
//! `/sys/bus/pci/drivers_probe`, then re-read the `driver` link to verify. Unbind: clear
//! `driver_override` (a lone newline clears it), write to `vfio-pci/unbind`, then to the
//! remembered driver's `bind` (or to `drivers_probe` when none is remembered), and verify.
//! Every check that can refuse (root, device exists, group viable, device in use) runs
//! before anything is written. When a later step fails, the devices already changed are
//! put back where they were, so no command leaves a device without its driver.

use std::fmt;

use crate::bdf::Bdf;
use crate::group::{is_vfio_driver, GroupError, IommuGroup, VFIO_PCI};
use crate::process;
use crate::sysfs::{PciDevice, SysfsError};

use super::kernel::{write, KernelError, WriteFailure};
use super::state::{self, StateError};
use super::Host;

/// How long a bind or unbind waits for another one to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why binding or unbinding failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The process is not root and cannot write to sysfs.
    #[error("`vfio-vmm host {action}` writes to /sys/bus/pci and must run as root (effective uid is {euid}); re-run it with sudo")]
    NotRoot {
        /// `bind` or `unbind`.
        action: &'static str,
        /// The effective user ID.
        euid: u32,
    },
    /// The device or its group could not be read.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// sysfs could not be read.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The state file could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The device is a bridge.
    #[error("{0} is a PCI bridge; bridges stay with the host: bind the devices behind it instead")]
    Bridge(Bdf),
    /// Other members of the group are on host drivers.
    #[error(
        "cannot bind {bdf}: IOMMU group {group} also holds {culprits}, on host drivers; \
         VFIO needs the whole group. List those devices too, or pass --group to bind the whole group"
    )]
    NotViable {
        /// The device asked for.
        bdf: Bdf,
        /// Its group.
        group: u32,
        /// The members that block the group, as `BDF (driver)`.
        culprits: String,
    },
    /// A process holds the device's VFIO file open.
    #[error("{bdf} is in use: {holders}; stop that guest before unbinding")]
    InUse {
        /// The device.
        bdf: Bdf,
        /// Who holds it, as `FILE by pid PID (COMMAND)`.
        holders: String,
    },
    /// vfio-pci could not be loaded.
    #[error("vfio-pci is not available: {0}")]
    LoadVfioPci(#[source] KernelError),
    /// vfio-pci was loaded but its driver directory did not appear.
    #[error("vfio-pci was loaded but {0} does not exist; check `dmesg | tail` for vfio errors")]
    VfioPciMissing(String),
    /// A sysfs write failed.
    #[error(transparent)]
    Write(#[from] WriteFailure),
    /// The writes went through but the device ended up on the wrong driver.
    #[error("{bdf} is on {} after the writes, not {wanted}; `dmesg | tail` shows why the driver did not take it", driver_or_none(.got.as_deref()))]
    WrongDriver {
        /// The device.
        bdf: Bdf,
        /// The driver that should have it (`no driver` when none should).
        wanted: String,
        /// The driver it is on.
        got: Option<String>,
    },
    /// A step failed and the changes made so far were undone (or could not be).
    #[error("{cause}{}", rollback_summary(.restored, .failures))]
    RolledBack {
        /// The failure that stopped the command.
        cause: Box<BindError>,
        /// Devices put back, as `BDF on DRIVER`.
        restored: Vec<String>,
        /// Devices that could not be put back, with why.
        failures: Vec<String>,
    },
}

fn rollback_summary(restored: &[String], failures: &[String]) -> String {
    let mut text = String::new();
    if !restored.is_empty() {
        text.push_str(&format!(". Rolled back: {}", restored.join(", ")));
    }
    if !failures.is_empty() {
        text.push_str(&format!(
            ". Rollback FAILED for {}; run `echo BDF > /sys/bus/pci/drivers_probe` for each to let the kernel probe it again",
            failures.join("; ")
        ));
    }
    text
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Now on vfio-pci; the previous driver is remembered.
    Bound {
        /// The device.
        bdf: Bdf,
        /// Its driver before.
        previous: Option<String>,
    },
    /// It was on a VFIO driver already; nothing changed.
    AlreadyBound {
        /// The device.
        bdf: Bdf,
        /// The VFIO driver it is on.
        driver: String,
    },
    /// Back on a host driver (or on none, when no driver claims it).
    Restored {
        /// The device.
        bdf: Bdf,
        /// The driver it is on now.
        driver: Option<String>,
    },
    /// It was not on vfio-pci; nothing changed.
    NotVfio {
        /// The device.
        bdf: Bdf,
        /// The driver it is on.
        driver: Option<String>,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Bound { bdf, previous } => {
                write!(
                    f,
                    "{bdf}: bound to vfio-pci (was on {})",
                    driver_or_none(previous.as_deref())
                )
            }
            Outcome::AlreadyBound { bdf, driver } => {
                write!(f, "{bdf}: already bound to {driver}, nothing to do")
            }
            Outcome::Restored {
                bdf,
                driver: Some(d),
            } => write!(f, "{bdf}: unbound from vfio-pci, now on {d}"),
            Outcome::Restored { bdf, driver: None } => {
                write!(f, "{bdf}: unbound from vfio-pci; no host driver claimed it")
            }
            Outcome::NotVfio { bdf, driver } => {
                write!(
                    f,
                    "{bdf}: not bound to vfio-pci (on {}), nothing to do",
                    driver_or_none(driver.as_deref())
                )
            }
        }
    }
}

/// A driver's name, or `no driver`.
fn driver_or_none(driver: Option<&str>) -> &str {
    driver.unwrap_or("no driver")
}

fn require_root(host: &Host, action: &'static str) -> Result<(), BindError> {
    let euid = host.kernel.euid();
    if euid != 0 {
        return Err(BindError::NotRoot { action, euid });
    }
    Ok(())
}

fn push_unique(list: &mut Vec<Bdf>, bdf: Bdf) {
    if !list.contains(&bdf) {
        list.push(bdf);
    }
}

/// Binds `bdfs` (and with `whole_group`, every non-bridge member of their groups) to
/// vfio-pci. Refuses, before changing anything, when other group members are on host
/// drivers.
pub fn bind(host: &Host, bdfs: &[Bdf], whole_group: bool) -> Result<Vec<Outcome>, BindError> {
    require_root(host, "bind")?;
    let _lock = state::lock(&host.state_dir, LOCK_WAIT)?;
    let (targets, groups) = bind_targets(host, bdfs, whole_group)?;
    require_viable(&groups, &targets, bdfs)?;
    let mut outcomes = Vec::new();
    let mut pending = Vec::new();
    for &bdf in &targets {
        let device = host.sysfs.device(bdf)?;
        match device.driver.as_deref() {
            Some(d) if is_vfio_driver(d) => outcomes.push(Outcome::AlreadyBound {
                bdf,
                driver: d.to_string(),
            }),
            _ => pending.push(device),
        }
    }
    if pending.is_empty() {
        return Ok(outcomes);
    }
    ensure_vfio_pci(host)?;
    outcomes.extend(bind_all(host, &pending)?);
    Ok(outcomes)
}

/// The devices to bind, in order: `bdfs`, or with `whole_group` the non-bridge members of
/// their groups; and those groups. Refuses a bridge.
fn bind_targets(
    host: &Host,
    bdfs: &[Bdf],
    whole_group: bool,
) -> Result<(Vec<Bdf>, Vec<IommuGroup>), BindError> {
    let mut targets = Vec::new();
    let mut groups: Vec<IommuGroup> = Vec::new();
    for &bdf in bdfs {
        let group = IommuGroup::of_device(&host.sysfs, bdf)?;
        if group.devices.iter().any(|d| d.bdf == bdf && d.is_bridge()) {
            return Err(BindError::Bridge(bdf));
        }
        if whole_group {
            group
                .assignable()
                .into_iter()
                .for_each(|b| push_unique(&mut targets, b));
        } else {
            push_unique(&mut targets, bdf);
        }
        if !groups.iter().any(|g| g.id == group.id) {
            groups.push(group);
        }
    }
    Ok((targets, groups))
}

/// Refuses when a member of one of `groups` other than `targets` is on a host driver,
/// naming the device of `asked` in that group.
fn require_viable(groups: &[IommuGroup], targets: &[Bdf], asked: &[Bdf]) -> Result<(), BindError> {
    for group in groups {
        let culprits = group.culprits(targets);
        let Some(first) = culprits.first() else {
            continue;
        };
        let bdf = asked
            .iter()
            .copied()
            .find(|b| group.devices.iter().any(|d| d.bdf == *b))
            .unwrap_or(first.bdf);
        let culprits = culprits
            .iter()
            .map(|d| format!("{} ({})", d.bdf, driver_or_none(d.driver.as_deref())))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(BindError::NotViable {
            bdf,
            group: group.id,
            culprits,
        });
    }
    Ok(())
}

/// Binds `pending` in order; when one fails, puts it and those already bound back.
fn bind_all(host: &Host, pending: &[PciDevice]) -> Result<Vec<Outcome>, BindError> {
    let mut done: Vec<&PciDevice> = Vec::new();
    for device in pending {
        if let Err(cause) = bind_one(host, device) {
            return Err(roll_back(cause, device, &done, |undo| {
                put_back(host, undo)?;
                Ok(format!(
                    "{} on {}",
                    undo.bdf,
                    driver_or_none(undo.driver.as_deref())
                ))
            }));
        }
        done.push(device);
    }
    Ok(done
        .iter()
        .map(|device| Outcome::Bound {
            bdf: device.bdf,
            previous: device.driver.clone(),
        })
        .collect())
}

/// The error of a command that `cause` stopped at `failed`, after undoing `failed` and
/// then `done` newest first; `undo` returns where it left the device (`BDF on DRIVER`).
fn roll_back(
    cause: BindError,
    failed: &PciDevice,
    done: &[&PciDevice],
    undo: impl Fn(&PciDevice) -> Result<String, BindError>,
) -> BindError {
    let mut restored = Vec::new();
    let mut failures = Vec::new();
    for device in std::iter::once(failed).chain(done.iter().rev().copied()) {
        match undo(device) {
            Ok(now) => restored.push(now),
            Err(e) => failures.push(format!("{}: {e}", device.bdf)),
        }
    }
    BindError::RolledBack {
        cause: Box::new(cause),
        restored,
        failures,
    }
}

fn ensure_vfio_pci(host: &Host) -> Result<(), BindError> {
    let dir = host.sysfs.driver_dir(VFIO_PCI);
    if dir.exists() {
        return Ok(());
    }
    host.kernel
        .load_module(&host.sysfs, VFIO_PCI)
        .map_err(BindError::LoadVfioPci)?;
    if !dir.exists() {
        return Err(BindError::VfioPciMissing(dir.display().to_string()));
    }
    Ok(())
}

fn verify(host: &Host, bdf: Bdf, wanted: Option<&str>) -> Result<(), BindError> {
    let got = host.sysfs.driver_of(bdf)?;
    if got.as_deref() == wanted {
        return Ok(());
    }
    Err(BindError::WrongDriver {
        bdf,
        wanted: driver_or_none(wanted).to_string(),
        got,
    })
}

/// Writes `value` to `bdf`'s `driver_override` (a lone newline clears it).
fn set_override(host: &Host, bdf: Bdf, value: &str) -> Result<(), BindError> {
    let path = host.sysfs.device_dir(bdf).join("driver_override");
    Ok(write(host.kernel.as_ref(), &path, value)?)
}

/// Writes `bdf` to `drivers/DRIVER/ACTION`: `bind` or `unbind`.
fn driver_action(host: &Host, driver: &str, action: &str, bdf: Bdf) -> Result<(), BindError> {
    let path = host.sysfs.driver_dir(driver).join(action);
    Ok(write(host.kernel.as_ref(), &path, &bdf.to_string())?)
}

/// Writes `bdf` to `drivers_probe`: the kernel binds it to its override's driver, or to
/// the driver that matches it best.
fn probe(host: &Host, bdf: Bdf) -> Result<(), BindError> {
    let path = host.sysfs.path("/sys/bus/pci/drivers_probe");
    Ok(write(host.kernel.as_ref(), &path, &bdf.to_string())?)
}

fn bind_one(host: &Host, device: &PciDevice) -> Result<(), BindError> {
    let bdf = device.bdf;
    state::remember(&host.state_dir, bdf, device.driver.as_deref())?;
    set_override(host, bdf, VFIO_PCI)?;
    release_from(host, bdf, device.driver.as_deref())?;
    probe(host, bdf)?;
    verify(host, bdf, Some(VFIO_PCI))
}

/// Unbinds `bdf` from `driver`, the driver holding it now (nothing if none).
fn release_from(host: &Host, bdf: Bdf, driver: Option<&str>) -> Result<(), BindError> {
    match driver {
        Some(d) => driver_action(host, d, "unbind", bdf),
        None => Ok(()),
    }
}

/// Returns `device` to the driver and `driver_override` it had when it was read, and
/// forgets its state file.
fn put_back(host: &Host, device: &PciDevice) -> Result<(), BindError> {
    let bdf = device.bdf;
    let override_value = device.driver_override.as_deref().unwrap_or("\n");
    set_override(host, bdf, override_value)?;
    let current = host.sysfs.driver_of(bdf)?;
    if current != device.driver {
        release_from(host, bdf, current.as_deref())?;
        if let Some(previous) = &device.driver {
            driver_action(host, previous, "bind", bdf)?;
        }
    }
    verify(host, bdf, device.driver.as_deref())?;
    state::forget(&host.state_dir, bdf)?;
    Ok(())
}

/// True when `device` is ours to unbind: on a VFIO driver, or left with a vfio-pci
/// override and no driver by an interrupted bind.
fn on_vfio(device: &PciDevice) -> bool {
    match device.driver.as_deref() {
        Some(d) => is_vfio_driver(d),
        None => device.driver_override.as_deref() == Some(VFIO_PCI),
    }
}

/// Returns `bdfs` (with `whole_group`, every member of their groups on vfio-pci) to the
/// drivers remembered by `host bind`, or lets the kernel probe them when none is
/// remembered. Refuses, before changing anything, when a process holds a device open.
pub fn unbind(host: &Host, bdfs: &[Bdf], whole_group: bool) -> Result<Vec<Outcome>, BindError> {
    require_root(host, "unbind")?;
    let _lock = state::lock(&host.state_dir, LOCK_WAIT)?;
    let mut outcomes = Vec::new();
    let mut pending = Vec::new();
    for bdf in unbind_targets(host, bdfs, whole_group)? {
        let device = host.sysfs.device(bdf)?;
        if !on_vfio(&device) {
            outcomes.push(Outcome::NotVfio {
                bdf,
                driver: device.driver,
            });
            continue;
        }
        require_unused(host, &device)?;
        let previous = state::recall(&host.state_dir, bdf)?;
        pending.push((device, previous));
    }
    outcomes.extend(unbind_all(host, &pending)?);
    for (device, _) in &pending {
        state::forget(&host.state_dir, device.bdf)?;
    }
    Ok(outcomes)
}

/// The devices to unbind, in order: `bdfs`, with `whole_group` preceded by the members of
/// their groups that are on vfio-pci.
fn unbind_targets(host: &Host, bdfs: &[Bdf], whole_group: bool) -> Result<Vec<Bdf>, BindError> {
    let mut targets = Vec::new();
    for &bdf in bdfs {
        if whole_group {
            let group = IommuGroup::of_device(&host.sysfs, bdf)?;
            group
                .devices
                .iter()
                .filter(|d| on_vfio(d))
                .for_each(|d| push_unique(&mut targets, d.bdf));
        }
        push_unique(&mut targets, bdf);
    }
    Ok(targets)
}

/// Refuses when a process holds `device`'s VFIO files open.
fn require_unused(host: &Host, device: &PciDevice) -> Result<(), BindError> {
    let holders = process::holders(&host.sysfs, device.bdf, device.iommu_group);
    if holders.is_empty() {
        return Ok(());
    }
    let holders = holders
        .iter()
        .map(|h| format!("{} is open in pid {} ({})", h.file, h.pid, h.command))
        .collect::<Vec<_>>()
        .join(", ");
    Err(BindError::InUse {
        bdf: device.bdf,
        holders,
    })
}

/// Unbinds `pending` in order; when one fails, puts it and those already unbound back on
/// vfio-pci.
fn unbind_all(
    host: &Host,
    pending: &[(PciDevice, Option<Option<String>>)],
) -> Result<Vec<Outcome>, BindError> {
    let mut outcomes = Vec::new();
    let mut done: Vec<&PciDevice> = Vec::new();
    for (device, previous) in pending {
        match unbind_one(host, device, previous.as_ref()) {
            Ok(driver) => {
                outcomes.push(Outcome::Restored {
                    bdf: device.bdf,
                    driver,
                });
                done.push(device);
            }
            Err(cause) => {
                return Err(roll_back(cause, device, &done, |undo| {
                    back_to_vfio(host, undo)?;
                    Ok(format!("{} on vfio-pci", undo.bdf))
                }))
            }
        }
    }
    Ok(outcomes)
}

/// Moves one device off vfio-pci; returns the driver it ends up on.
fn unbind_one(
    host: &Host,
    device: &PciDevice,
    previous: Option<&Option<String>>,
) -> Result<Option<String>, BindError> {
    let bdf = device.bdf;
    set_override(host, bdf, "\n")?;
    release_from(host, bdf, device.driver.as_deref())?;
    match previous {
        // Bound by us from a driver that is still registered: give it back to that driver.
        Some(Some(driver)) if host.sysfs.driver_dir(driver).exists() => {
            driver_action(host, driver, "bind", bdf)?;
            verify(host, bdf, Some(driver))?;
            Ok(Some(driver.clone()))
        }
        // Had no driver before `host bind`: leave it without one, as it was.
        Some(None) => Ok(None),
        // Unknown previous driver (bound by other means) or one no longer loaded:
        // let the kernel pick, like at boot.
        _ => {
            probe(host, bdf)?;
            let got = host.sysfs.driver_of(bdf)?;
            if got.as_deref().is_some_and(is_vfio_driver) {
                return Err(BindError::WrongDriver {
                    bdf,
                    wanted: "a host driver".to_string(),
                    got,
                });
            }
            Ok(got)
        }
    }
}

/// Undoes [`unbind_one`]: puts the device back on vfio-pci.
fn back_to_vfio(host: &Host, device: &PciDevice) -> Result<(), BindError> {
    let bdf = device.bdf;
    set_override(host, bdf, VFIO_PCI)?;
    let current = host.sysfs.driver_of(bdf)?;
    if current == device.driver {
        return Ok(());
    }
    release_from(host, bdf, current.as_deref())?;
    // A device found with only the override and no driver goes back to exactly that.
    if device.driver.is_some() {
        probe(host, bdf)?;
    }
    verify(host, bdf, device.driver.as_deref())
}
