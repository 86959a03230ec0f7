//! `host check BDF...`: the findings about one device to be assigned: that it exists, its
//! IOMMU group and every other member there, its driver, who holds it open, its reset
//! methods and its BARs against the guest's MMIO windows ([`MmioWindows`]).

use crate::bdf::Bdf;
use crate::group::{is_vfio_driver, IommuGroup, MemberState, OtherMember};
use crate::process;
use crate::sysfs::{Bar, PciDevice};

use super::finding::Finding;
use super::Host;
use crate::size::format_size;

/// BARs from this size up are called out against the 64-bit window.
const LARGE_BAR: u64 = 1 << 30;

/// The guest-physical MMIO windows BARs of assigned devices are placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioWindows {
    /// Bytes available below 4 GiB for 32-bit BARs.
    pub below_4g: u64,
    /// Bytes available above 4 GiB for 64-bit BARs.
    pub above_4g: u64,
}

impl Default for MmioWindows {
    /// 512 MiB below 4 GiB (vfio-vmm's `PCI_MMIO32_SIZE`) and 64 GiB above.
    fn default() -> Self {
        MmioWindows {
            below_4g: 512 << 20,
            above_4g: 64 << 30,
        }
    }
}

/// All findings for `bdf`, one of the devices `assigned` together, whose BARs must fit
/// `windows`.
pub fn check_device(host: &Host, bdf: Bdf, assigned: &[Bdf], windows: MmioWindows) -> Vec<Finding> {
    let sysfs = &host.sysfs;
    let subject = bdf.to_string();
    if !sysfs.device_exists(bdf) {
        return vec![Finding::fail(
            subject,
            "no such PCI device on this host",
            "check the address with `vfio-vmm host list` (or lspci -D)",
        )];
    }
    let device = match sysfs.device(bdf) {
        Ok(device) => device,
        Err(e) => return vec![Finding::unreadable(subject, &e)],
    };
    let mut findings = Vec::new();
    if device.is_bridge() {
        findings.push(Finding::fail(
            &subject,
            "is a PCI bridge, which cannot be assigned",
            "assign the devices behind the bridge instead",
        ));
        return findings;
    }
    findings.extend(group_findings(host, &device, assigned));
    findings.push(driver_finding(&device));
    findings.push(reset_finding(host, bdf));
    findings.push(bar_finding(host, bdf, windows));
    findings
}

/// The device's IOMMU group: who else is in it and whether they block it, and who holds
/// the group open.
fn group_findings(host: &Host, device: &PciDevice, assigned: &[Bdf]) -> Vec<Finding> {
    let subject = device.bdf.to_string();
    let Some(id) = device.iommu_group else {
        return vec![Finding::fail(
            subject,
            "has no IOMMU group",
            "enable the IOMMU (see the iommu line above)",
        )];
    };
    let group = match IommuGroup::read(&host.sysfs, id) {
        Ok(group) => group,
        Err(e) => return vec![Finding::unreadable(subject, &e)],
    };
    let others: Vec<&PciDevice> = group
        .devices
        .iter()
        .filter(|d| d.bdf != device.bdf)
        .collect();
    let shared = others.len() + group.others.len();
    let mut findings = vec![membership_finding(&subject, id, shared)];
    for other in others {
        findings.push(member_finding(device, other, id, assigned));
    }
    for other in &group.others {
        findings.push(non_pci_finding(&subject, id, other));
    }
    findings.extend(holder_finding(host, device.bdf, id));
    findings
}

/// The group number and how many other members it has.
fn membership_finding(subject: &str, id: u32, shared: usize) -> Finding {
    if shared == 0 {
        return Finding::ok(subject, format!("IOMMU group {id}, no other members"));
    }
    Finding::ok(
        subject,
        format!("IOMMU group {id}, shared with {shared} other device(s)"),
    )
}

/// Whether `other`, a PCI member of group `id`, lets `device`'s group go to VFIO.
fn member_finding(device: &PciDevice, other: &PciDevice, id: u32, assigned: &[Bdf]) -> Finding {
    let subject = device.bdf.to_string();
    let state = MemberState::of(other);
    let what = format!(
        "group {id} member {} (class {:06x})",
        other.bdf, other.class
    );
    if !state.blocks_group() {
        let note = if matches!(state, MemberState::Bridge(_)) {
            ", which may stay with the host"
        } else {
            ""
        };
        return Finding::ok(subject, format!("{what} is {state}{note}"));
    }
    if assigned.contains(&other.bdf) {
        return Finding::ok(
            subject,
            format!("{what} is {state}; it is being checked for assignment too"),
        );
    }
    let mut fix = format!(
        "assign the whole group: `vfio-vmm host bind --group {}` and give every member to the guest",
        device.bdf
    );
    if other.class >> 16 == 0x01 {
        fix.push_str(
            "; this is a storage controller: if the host boots from it, do not bind it; \
             move the device to another slot instead",
        );
    }
    Finding::fail(
        subject,
        format!("{what} is {state}, which blocks the group"),
        fix,
    )
}

/// A member of group `id` that is not a PCI function.
fn non_pci_finding(subject: &str, id: u32, other: &OtherMember) -> Finding {
    let driver = other.driver.as_deref().unwrap_or("no driver");
    Finding::warn(
        subject,
        format!(
            "group {id} also holds non-PCI device {} ({driver})",
            other.name
        ),
        "VFIO may refuse the group while that device has a driver; unbind it first",
    )
}

/// The first process holding `bdf`'s group `id` (or its VFIO device) open, if any.
fn holder_finding(host: &Host, bdf: Bdf, id: u32) -> Option<Finding> {
    let holders = process::holders(&host.sysfs, bdf, Some(id));
    let holder = holders.first()?;
    Some(Finding::fail(
        bdf.to_string(),
        format!(
            "in use: {} is open in process {} ({})",
            holder.file, holder.pid, holder.command
        ),
        "stop that guest first, or pick another device",
    ))
}

fn driver_finding(device: &PciDevice) -> Finding {
    let subject = device.bdf.to_string();
    let bind = format!("`vfio-vmm host bind {}`", device.bdf);
    match device.driver.as_deref() {
        Some(d) if is_vfio_driver(d) => Finding::ok(subject, format!("bound to {d}")),
        Some(d) => Finding::fail(
            subject,
            format!("bound to host driver {d}, not vfio-pci"),
            bind,
        ),
        None => Finding::fail(subject, "bound to no driver, not vfio-pci", bind),
    }
}

fn reset_finding(host: &Host, bdf: Bdf) -> Finding {
    let subject = bdf.to_string();
    let fix = "expect trouble reusing the device after a guest ran (some GPUs need a vendor reset module); a full host reboot always resets it";
    match host.sysfs.reset_methods(bdf) {
        Ok(Some(methods)) if !methods.is_empty() => {
            Finding::ok(subject, format!("reset methods: {}", methods.join(", ")))
        }
        Ok(Some(_)) => Finding::warn(subject, "the kernel knows no way to reset this device", fix),
        Ok(None) if host.sysfs.has_reset_file(bdf) => Finding::ok(
            subject,
            "resettable (this kernel does not list reset methods)",
        ),
        Ok(None) => Finding::warn(
            subject,
            "no reset method reported (no reset_method or reset file)",
            fix,
        ),
        Err(e) => Finding::unreadable(subject, &e),
    }
}

fn describe(bar: &Bar) -> String {
    let kind = if bar.io {
        "io"
    } else if bar.mem64 {
        "mem64"
    } else {
        "mem32"
    };
    let pref = if bar.prefetchable { " pref" } else { "" };
    format!("BAR{} {} {kind}{pref}", bar.index, format_size(bar.size))
}

/// BAR sizes, and whether 32-bit and 64-bit memory BARs fit their windows. Each BAR is
/// naturally aligned, so the sum of sizes is a lower bound on the space needed.
fn bar_finding(host: &Host, bdf: Bdf, windows: MmioWindows) -> Finding {
    let subject = bdf.to_string();
    let bars = match host.sysfs.bars(bdf) {
        Ok(bars) => bars,
        Err(e) => return Finding::unreadable(subject, &e),
    };
    if bars.is_empty() {
        return Finding::ok(subject, "no BARs");
    }
    let list = bars.iter().map(describe).collect::<Vec<_>>().join(", ");
    let sum = |want64: bool| -> u64 {
        bars.iter()
            .filter(|b| !b.io && b.mem64 == want64)
            .fold(0u64, |acc, b| acc.saturating_add(b.size))
    };
    let (low, high) = (sum(false), sum(true));
    let overflows = [
        (
            "32-bit",
            low,
            windows.below_4g,
            "MMIO window below 4 GiB",
            "this device cannot be assigned with vfio-vmm's memory layout",
        ),
        (
            "64-bit",
            high,
            windows.above_4g,
            "64-bit MMIO window",
            "this device needs a larger 64-bit MMIO window than vfio-vmm provides",
        ),
    ];
    for (bits, need, window, name, fix) in overflows {
        if need > window {
            let (need, window) = (format_size(need), format_size(window));
            return Finding::fail(
                subject,
                format!("{list}: {bits} BARs need {need}, more than the {window} {name}"),
                fix,
            );
        }
    }
    let large: Vec<String> = bars
        .iter()
        .filter(|b| b.size >= LARGE_BAR)
        .map(describe)
        .collect();
    if large.is_empty() {
        return Finding::ok(subject, list);
    }
    Finding::ok(
        subject,
        format!(
            "{list}; large: {}; 64-bit BARs take {} of the {} 64-bit MMIO window",
            large.join(", "),
            format_size(high),
            format_size(windows.above_4g)
        ),
    )
}
