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
        HostCommand::Check { memory, devices } => {
            let options = CheckOptions {
                memory,
                devices,
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
        HostCommand::Bind { group, devices } => report(bind(&host, &devices, group)),
        HostCommand::Unbind { group, devices } => report(unbind(&host, &devices, group)),
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
