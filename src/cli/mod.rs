//! The `vfio-vmm` command line: `run` boots a guest (`run.rs` turns its
//! options or a JSON file into a `VmConfig`), `host` prepares a host for
//! passthrough (`host.rs`), `bench` reports benchmark results.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod host;
mod run;

/// A small KVM virtual machine monitor for PCI passthrough through VFIO.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// Read sysfs, procfs and /dev under DIR instead of / (also $VFIO_VMM_SYSFS_ROOT).
    #[arg(long, global = true, value_name = "DIR")]
    sysfs_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Linux guest.
    Run(run::RunArgs),
    /// Benchmarks: turn raw results into reports.
    Bench {
        #[command(subcommand)]
        cmd: vfio_vmm::bench::BenchCommand,
    },
    /// Prepare this host for passthrough: check, list, bind, unbind.
    Host {
        #[command(subcommand)]
        cmd: host::HostCommand,
    },
}

/// Parses the command line and runs the command; returns the exit status.
pub fn main() -> ExitCode {
    // vfio-ioctls warns about every IRQ index a device lacks; only its errors matter to users.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,vfio_ioctls=error"),
    )
    .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args, cli.sysfs_root),
        Command::Bench { cmd } => vfio_vmm::bench::run(cmd),
        Command::Host { cmd } => ExitCode::from(host::run(cmd, cli.sysfs_root) as u8),
    }
}
