//! The production [`Backend`]: `builder::build` assembles the machine on the
//! API thread that asked for the boot (so build errors answer that request),
//! then the machine runs on its own thread until the guest ends it or the
//! API stops it through the machine's exit latch. Pause parks the vCPUs on
//! the machine's run gate and freezes the guest's clock (kvmclock) until
//! resume; device threads keep running (they only finish what the guest
//! queued before the pause, and their interrupts wait in the irqchip).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_clock_data;
use kvm_ioctls::VmFd;
use vmm_sys_util::signal::SIGRTMIN;

use iommu::sysfs::Sysfs;
use pci::vfio::VfioStats;
use pci::ROM_BAR;

use super::state::{Backend, Counters, EjectWait, TapFds};
use crate::builder;
use crate::config::{DeviceConfig, DiskConfig, NetConfig, VmConfig};
use crate::devices::ged::GedEvents;
use crate::devices::virtio::Tap;
use crate::exit::{ExitHandle, ExitReason};
use crate::hotplug::{Hotplug, HotplugError, EJECT_TIMEOUT};
use crate::vstate::gate::RunGate;

/// How long `vm.pause` waits for every vCPU to leave KVM_RUN.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs VMs with `builder::build` and `Machine::run`.
pub struct MachineBackend {
    sysfs: Sysfs,
    running: Option<Running>,
}

/// A machine running on its thread.
struct Running {
    exit: Arc<ExitHandle>,
    gate: Arc<RunGate>,
    ged: Arc<GedEvents>,
    hotplug: Arc<Hotplug>,
    vm: Arc<VmFd>,
    /// The guest clock at the pause, restored at resume.
    clock: Option<kvm_clock_data>,
    /// Set before the API stops the machine, so its end is not reported as the guest's.
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl MachineBackend {
    /// Passthrough devices are looked up under `sysfs`.
    pub fn new(sysfs: Sysfs) -> Self {
        MachineBackend {
            sysfs,
            running: None,
        }
    }
}

impl Backend for MachineBackend {
    fn boot(
        &mut self,
        config: &VmConfig,
        taps: &TapFds,
        on_exit: Box<dyn FnOnce(ExitReason) + Send>,
    ) -> Result<(), String> {
        if self.running.is_some() {
            return Err("a VM is running already".into());
        }
        adopt_taps(config, taps)?;
        let machine = builder::build(config, &self.sysfs).map_err(|e| e.to_string())?;
        let exit = machine.exit.clone();
        let (gate, ged) = (machine.gate.clone(), machine.ged.clone());
        let hotplug = machine.hotplug.clone();
        let vm = machine.vm.shared_fd();
        let stopping = Arc::new(AtomicBool::new(false));
        let stopping2 = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("vm".into())
            .spawn(move || {
                let reason = match machine.run() {
                    Ok(reason) => reason,
                    Err(e) => ExitReason::VcpuError(0, e.to_string()),
                };
                log::info!("the VM ended: {}", reason.describe());
                if !stopping2.load(Ordering::Acquire) {
                    on_exit(reason);
                }
            })
            .map_err(|e| format!("cannot start the VM thread: {e}"))?;
        self.running = Some(Running {
            exit,
            gate,
            ged,
            hotplug,
            vm,
            clock: None,
            stopping,
            thread,
        });
        Ok(())
    }

    fn shutdown(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stopping.store(true, Ordering::Release);
        running.exit.request(ExitReason::Api);
        // The thread tears the machine down in order before it ends.
        if running.thread.join().is_err() {
            log::error!("the VM thread panicked during teardown");
        }
    }

    fn pause(&mut self) -> Result<(), String> {
        let running = self.running.as_mut().ok_or("no VM runs")?;
        running
            .gate
            .pause(SIGRTMIN(), PAUSE_TIMEOUT)
            .map_err(|e| e.to_string())?;
        // Without the clock saved, the guest sees the pause as time that
        // passed; it still runs correctly.
        running.clock = running
            .vm
            .get_clock()
            .inspect_err(|e| log::warn!("pause: cannot read the guest clock: {e}"))
            .ok();
        log::info!("API: the VM is paused");
        Ok(())
    }

    fn resume(&mut self) -> Result<(), String> {
        let running = self.running.as_mut().ok_or("no VM runs")?;
        if let Some(mut clock) = running.clock.take() {
            // Flags 0: the clock resumes where it stopped (KVM_CLOCK_REALTIME
            // would add the time spent paused).
            clock.flags = 0;
            if let Err(e) = running.vm.set_clock(&clock) {
                log::warn!("resume: cannot restore the guest clock: {e}");
            }
        }
        running.gate.resume().map_err(|e| e.to_string())?;
        log::info!("API: the VM is resumed");
        Ok(())
    }

    fn power_button(&mut self) -> Result<(), String> {
        let running = self.running.as_ref().ok_or("no VM runs")?;
        running
            .ged
            .power_button()
            .map_err(|e| format!("cannot raise the ACPI event interrupt: {e}"))?;
        log::info!("API: ACPI power button pressed");
        Ok(())
    }

    fn add_device(&mut self, device: &DeviceConfig, id: &str) -> Result<String, (u16, String)> {
        let running = self
            .running
            .as_ref()
            .ok_or((404, "no VM runs".to_string()))?;
        let started = Instant::now();
        let address = running
            .hotplug
            .add_device(device, id)
            .map_err(|e| (hotplug_status(&e), e.to_string()))?;
        log::info!(
            "API: {} hot-plugged as {id} at {address} in {} ms",
            device.bdf,
            started.elapsed().as_millis()
        );
        Ok(format!("0000:{address}"))
    }

    fn add_disk(&mut self, disk: &DiskConfig, id: &str) -> Result<String, (u16, String)> {
        let running = self
            .running
            .as_ref()
            .ok_or((404, "no VM runs".to_string()))?;
        let address = running
            .hotplug
            .add_disk(disk, id)
            .map_err(|e| (hotplug_status(&e), e.to_string()))?;
        Ok(format!("0000:{address}"))
    }

    fn add_net(
        &mut self,
        net: &NetConfig,
        id: &str,
        fds: &[OwnedFd],
    ) -> Result<String, (u16, String)> {
        let running = self
            .running
            .as_ref()
            .ok_or((404, "no VM runs".to_string()))?;
        if let Some(fd) = fds.first() {
            adopt_tap(net, id, fd, fds.len()).map_err(|e| (400, e))?;
        }
        let address = running
            .hotplug
            .add_net(net, id)
            .map_err(|e| (hotplug_status(&e), e.to_string()))?;
        Ok(format!("0000:{address}"))
    }

    fn remove_device(&mut self, id: &str) -> Result<EjectWait, (u16, String)> {
        let running = self
            .running
            .as_ref()
            .ok_or((404, "no VM runs".to_string()))?;
        let hotplug = running.hotplug.clone();
        let slot = hotplug
            .request_removal(id)
            .map_err(|e| (hotplug_status(&e), e.to_string()))?;
        let id = id.to_string();
        let started = Instant::now();
        Ok(Box::new(move || {
            hotplug
                .wait_removed(&id, slot, EJECT_TIMEOUT)
                .map_err(|e| (hotplug_status(&e), e.to_string()))?;
            log::info!(
                "API: {id} ejected by the guest and released in {} ms",
                started.elapsed().as_millis()
            );
            Ok(())
        }))
    }

    fn take_ejected(&mut self) -> Vec<String> {
        self.running
            .as_ref()
            .map(|r| r.hotplug.take_ejected())
            .unwrap_or_default()
    }

    fn counters(&self) -> Counters {
        let Some(running) = &self.running else {
            return Counters::new();
        };
        let vfio = running.hotplug.vfio().lock();
        vfio.unwrap_or_else(|p| p.into_inner())
            .stats()
            .iter()
            .map(|(bdf, stats)| (bdf.clone(), device_counters(stats)))
            .collect()
    }
}

/// Hands each NIC's first passed descriptor (a duplicate: the controller
/// keeps them for the next boot) to the tap layer, which the NIC then uses
/// instead of opening its tap. vfio-vmm's virtio-net has one queue pair, so
/// further descriptors (queues) are not used.
fn adopt_taps(config: &VmConfig, taps: &TapFds) -> Result<(), String> {
    for (id, fds) in taps {
        let Some(fd) = fds.first() else { continue };
        match config.net.iter().find(|n| n.id.as_deref() == Some(id)) {
            Some(nic) => adopt_tap(nic, id, fd, fds.len())?,
            None => {
                let dup = fd
                    .try_clone()
                    .map_err(|e| format!("NIC {id}: cannot duplicate its tap descriptor: {e}"))?;
                Tap::adopt(dup).map_err(|e| format!("NIC {id}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Hands a duplicate of `fd` (the first of `count` passed for NIC `id`) to
/// the tap layer, checking that it is `nic`'s tap.
fn adopt_tap(nic: &NetConfig, id: &str, fd: &OwnedFd, count: usize) -> Result<(), String> {
    if count > 1 {
        log::warn!("NIC {id}: {count} tap descriptors passed; one queue pair uses the first");
    }
    let dup = fd
        .try_clone()
        .map_err(|e| format!("NIC {id}: cannot duplicate its tap descriptor: {e}"))?;
    let name = Tap::adopt(dup).map_err(|e| format!("NIC {id}: {e}"))?;
    if nic.tap != name {
        return Err(format!(
            "NIC {id}: its descriptor is tap {name}, not {}",
            nic.tap
        ));
    }
    Ok(())
}

/// The HTTP status of a refused hotplug or unplug.
fn hotplug_status(e: &HotplugError) -> u16 {
    match e {
        HotplugError::UnknownId(_) => 404,
        HotplugError::IdTaken(_) | HotplugError::NoEject { .. } => 409,
        HotplugError::Notify(_) => 500,
        HotplugError::Vfio(_) | HotplugError::Virtio(_) | HotplugError::Bus(_) => 400,
    }
}

/// The exit report's numbers as named counters.
fn device_counters(stats: &VfioStats) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for bar in (0..pci::NUM_BARS).chain([ROM_BAR]) {
        let (reads, writes) = stats.trapped(bar);
        let label = match bar {
            ROM_BAR => "rom".to_string(),
            _ => format!("bar{bar}"),
        };
        out.insert(format!("{label}_trapped_reads"), reads);
        out.insert(format!("{label}_trapped_writes"), writes);
    }
    out.insert("relayed_interrupts".into(), stats.relayed_interrupts());
    out.insert("irq_mode_switches".into(), stats.irq_switches());
    out.insert("msix_table_accesses".into(), stats.msix_accesses());
    out
}
