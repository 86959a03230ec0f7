//! The `vfio-vmm` command line: `run` boots a guest (`run.rs` turns its
//! options or a JSON file into a `VmConfig`), `host` prepares a host for
//! passthrough (`host.rs`), `bench` reports benchmark results, `remote`
//! sends one control API request. With no subcommand, `--api-socket PATH`
//! serves the control API (the form Kata starts cloud-hypervisor with).

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
    /// Without a subcommand: serve the control API on this socket and wait for vm.create
    /// (cloud-hypervisor's form: `--api-socket PATH [-v] [--log-file FILE] [--seccomp true|false]`).
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short = 'v', action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Write the log to FILE instead of stderr.
    #[arg(long, value_name = "FILE", global = true)]
    log_file: Option<PathBuf>,
    /// Seccomp filters for `run` and API mode: true (a denied call ends vfio-vmm with a
    /// message), false (none), log (denied calls are allowed and logged by the kernel).
    #[arg(long, value_enum, global = true, default_value = "true")]
    seccomp: vfio_vmm::seccomp::Mode,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Linux guest.
    Run(Box<run::RunArgs>),
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
    /// Send one request to a vfio-vmm (or cloud-hypervisor) control API, like ch-remote.
    Remote {
        /// The API socket.
        #[arg(long, value_name = "PATH")]
        api_socket: PathBuf,
        /// ping, create FILE.json, boot, info, shutdown, reboot, delete, pause, resume,
        /// power-button, shutdown-vmm, add-device path=..[,id=..], remove-device ID,
        /// add-disk path=..[,readonly=on], add-net tap=NAME|fd=N[,mac=..], add-vsock cid=..,socket=.., counters
        #[arg(required = true, num_args = 1..=2, value_name = "COMMAND [ARG]")]
        command: Vec<String>,
    },
}

/// Parses the command line and runs the command; returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_log(cli.verbose, cli.log_file.as_deref()) {
        eprintln!("vfio-vmm: error: {e}");
        return ExitCode::FAILURE;
    }
    let runs_vm = matches!(cli.command, None | Some(Command::Run(_)));
    if runs_vm {
        if let Err(e) = vfio_vmm::seccomp::init(cli.seccomp, vfio_vmm::thread_filters::allowed) {
            eprintln!("vfio-vmm: error: {e}");
            return ExitCode::FAILURE;
        }
    }
    match (cli.command, cli.api_socket) {
        (Some(_), Some(_)) => {
            eprintln!(
                "vfio-vmm: error: --api-socket goes after `run` (or alone, without a subcommand)"
            );
            ExitCode::FAILURE
        }
        (None, Some(socket)) => run::serve_api(&socket, None, cli.sysfs_root),
        (None, None) => {
            eprintln!("vfio-vmm: error: give a subcommand (see --help) or --api-socket PATH");
            ExitCode::FAILURE
        }
        (Some(Command::Run(args)), None) => run::run(*args, cli.sysfs_root),
        (Some(Command::Bench { cmd }), None) => vfio_vmm::bench::run(cmd),
        (Some(Command::Host { cmd }), None) => ExitCode::from(host::run(cmd, cli.sysfs_root) as u8),
        (
            Some(Command::Remote {
                api_socket,
                command,
            }),
            None,
        ) => ExitCode::from(vfio_vmm::api::client::run(&api_socket, &command) as u8),
    }
}

/// Logs to stderr or `file`; `-v` raises the level (warn, info, debug, trace).
fn init_log(verbose: u8, file: Option<&std::path::Path>) -> std::io::Result<()> {
    // vfio-ioctls warns about every IRQ index a device lacks; only its errors matter to users.
    let level = ["warn", "info", "debug", "trace"][usize::from(verbose.min(3))];
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(format!("{level},vfio_ioctls=error")),
    );
    if let Some(path) = file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("--log-file {}: {e}", path.display()))
            })?;
        builder.target(env_logger::Target::Pipe(Box::new(file)));
    }
    builder.init();
    Ok(())
}
