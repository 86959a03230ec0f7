//! `vfio-vmm host check|list|bind|unbind`: the command line for preparing a host for
//! passthrough. The logic and the wording live in the `iommu` crate's `host` module; this
//! file only parses arguments, prints results and chooses the exit status.
//!
//! Every command reads sysfs/procfs under one root: `--sysfs-root DIR`, else
//! `$VFIO_VMM_SYSFS_ROOT`, else `/`. `host bind` remembers previous drivers in
//! `$VFIO_VMM_STATE_DIR` (default `ROOT/run/vfio-vmm`); pci.ids comes from
//! `$VFIO_VMM_PCI_IDS` or the system copy.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Subcommand;
use iommu::pciids::PciNames;
use iommu::setup::bind::{bind, unbind, BindError, Outcome};
use iommu::setup::check::{check, CheckOptions};
use iommu::setup::list::list;
use iommu::setup::owner::{give_nodes, Account};
use iommu::setup::user_check::UserOptions;
use iommu::setup::Host;
use iommu::Bdf;
use vfio_vmm::config::{ConfigError, MemoryConfig};

/// Host preparation commands.
#[derive(Debug, Clone, Subcommand)]
pub enum HostCommand {
    /// Check that this host can pass devices through: one ok/warn/fail line per finding,
    /// with the fix. Exits 0 only when nothing fails (and the given devices are ready).
    Check {
        /// Guest RAM to check RLIMIT_MEMLOCK and hugepages against, as given to
        /// `run --memory` (same grammar): MiB, or with a K/M/G/T suffix (4096, 8G).
        #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
        memory: Option<u64>,
        /// Check for this user (name or uid) instead of the caller: its access to
        /// /dev/vfio/vfio, the devices' /dev/vfio/N and /dev/kvm, its memlock limit, its taps.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// With --user: read the memlock limit of this process of the user
        /// (/proc/PID/limits), e.g. its login shell.
        #[arg(long, value_name = "PID", requires = "user")]
        pid: Option<u32>,
        /// With --user: a tap the guest will use (`run --net tap=NAME`); repeatable.
        #[arg(long = "tap", value_name = "NAME", requires = "user")]
        taps: Vec<String>,
        /// Devices to check for assignment, as 0000:01:00.0 or 01:00.0.
        #[arg(value_name = "BDF")]
        devices: Vec<Bdf>,
    },
    /// List every PCI device with its IDs, names, class, driver, grouped by IOMMU group.
    List {
        /// Print JSON (schema version 1, documented in the README) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Bind devices to vfio-pci, remembering their drivers for `host unbind`. Refuses
    /// when other members of a device's IOMMU group are on host drivers.
    Bind {
        /// Bind every member of the devices' IOMMU groups (bridges excepted).
        #[arg(long)]
        group: bool,
        /// Then give the devices' /dev/vfio/N to this user (name or uid; mode 0600), so
        /// it can run the guest without root, as libvirt does.
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
        /// Devices to bind, as 0000:01:00.0 or 01:00.0.
        #[arg(value_name = "BDF", required = true)]
        devices: Vec<Bdf>,
    },
    /// Return devices from vfio-pci to the drivers they had before `host bind` (or let
    /// the kernel probe them). Refuses while a running guest holds a device.
    Unbind {
        /// Unbind every member of the devices' IOMMU groups that is on vfio-pci.
        #[arg(long)]
        group: bool,
        /// Devices to unbind, as 0000:01:00.0 or 01:00.0.
        #[arg(value_name = "BDF", required = true)]
        devices: Vec<Bdf>,
    },
}

/// A `run --memory` value, parsed by `run`'s own parser; only its size matters here.
fn parse_memory(text: &str) -> Result<u64, ConfigError> {
    MemoryConfig::parse(text).map(|m| m.size)
}

/// Runs `cmd`, printing results to stdout and errors to stderr; returns the exit status
/// (0 success / ready, 1 failure / not ready).
pub fn run(cmd: HostCommand, sysfs_root: Option<PathBuf>) -> i32 {
    let host = Host::from_env(sysfs_root);
    match cmd {
        HostCommand::Check {
            memory,
            user,
            pid,
            taps,
            devices,
        } => {
            let user = match user.as_deref().map(Account::resolve).transpose() {
                Ok(account) => account.map(|account| UserOptions { account, pid, taps }),
                Err(e) => return fail(&e),
            };
            let options = CheckOptions {
                memory,
                devices,
                user,
                ..CheckOptions::default()
            };
            let report = check(&host, &options);
            out(&report.to_string());
            report.exit_code()
        }
        HostCommand::List { json } => {
            let names = match PciNames::discover(None) {
                Ok(names) => names,
                Err(e) => return fail(&e),
            };
            let listing = match list(&host.sysfs, &names) {
                Ok(listing) => listing,
                Err(e) => return fail(&e),
            };
            if !json {
                out(&listing.to_string());
                return 0;
            }
            match listing.to_json() {
                Ok(text) => {
                    out(&format!("{text}\n"));
                    0
                }
                Err(e) => fail(&e),
            }
        }
        HostCommand::Bind {
            group,
            owner,
            devices,
        } => bind_command(&host, &devices, group, owner.as_deref()),
        HostCommand::Unbind { group, devices } => report(unbind(&host, &devices, group)),
    }
}

/// `host bind [--owner USER]`: the user is resolved before anything changes; its nodes are
/// handed over after every device is bound (also those already on vfio-pci).
fn bind_command(host: &Host, devices: &[Bdf], group: bool, owner: Option<&str>) -> i32 {
    let account = match owner.map(Account::resolve).transpose() {
        Ok(account) => account,
        Err(e) => return fail(&e),
    };
    let status = report(bind(host, devices, group));
    let Some(account) = account else {
        return status;
    };
    if status != 0 {
        return status;
    }
    match give_nodes(host, devices, &account) {
        Ok(nodes) => {
            out(&nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: owned by {}, mode 0600\n",
                        n.display(),
                        account.describe()
                    )
                })
                .collect::<String>());
            0
        }
        Err(e) => fail(&e),
    }
}

fn report(result: Result<Vec<Outcome>, BindError>) -> i32 {
    match result {
        Ok(outcomes) => {
            out(&outcomes
                .iter()
                .map(|o| format!("{o}\n"))
                .collect::<String>());
            0
        }
        Err(e) => fail(&e),
    }
}

/// Prints to stdout. A closed pipe (`host list | head`) is not an error worth a panic:
/// the reader has what it wanted, so the rest is dropped.
fn out(text: &str) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() != io::ErrorKind::BrokenPipe {
            let _ = writeln!(io::stderr(), "error: cannot write to stdout: {e}");
        }
    }
}

fn fail(error: &dyn std::error::Error) -> i32 {
    let _ = writeln!(io::stderr(), "error: {error}");
    1
}
