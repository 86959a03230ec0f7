//! The `vfio-vmm` command line: `run` boots a guest, `host` prepares a host
//! for passthrough, `bench` reports benchmark results.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vfio_vmm::config::{self, MemoryConfig, SerialConfig, VmConfig};
use vfio_vmm::vmm;

mod host;
mod terminal;

/// A small KVM virtual machine monitor for PCI passthrough through VFIO.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Read sysfs, procfs and /dev under DIR instead of / (also $VFIO_VMM_SYSFS_ROOT).
    #[arg(long, global = true, value_name = "DIR")]
    sysfs_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Linux guest.
    Run(RunArgs),
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

#[derive(clap::Args)]
struct RunArgs {
    /// The guest kernel (bzImage).
    #[arg(long)]
    kernel: PathBuf,
    /// An initramfs for the guest.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, default_value = "console=ttyS0")]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest RAM: SIZE[,hugepages=on][,mergeable=on], SIZE with K, M or G (bare numbers are MiB).
    #[arg(long, default_value = "512M")]
    memory: String,
    /// Serial console: stdio or file=PATH.
    #[arg(long, default_value = "stdio")]
    serial: String,
    /// A virtio-net NIC on a tap (created if missing); repeat for more NICs.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]")]
    net: Vec<vfio_vmm::devices::virtio::NetConfig>,
    /// A host PCI device to pass through (BDF or /sys/bus/pci/devices/BDF, `,rombar=off` hides its ROM); repeatable.
    #[arg(long = "device", value_name = "BDF[,rombar=off]", value_parser = parse_device)]
    device: Vec<vfio_vmm::devices::vfio::VfioDeviceSpec>,
}

fn parse_device(s: &str) -> Result<vfio_vmm::devices::vfio::VfioDeviceSpec, String> {
    vfio_vmm::devices::vfio::VfioDeviceSpec::parse(s).map_err(|e| e.to_string())
}

impl RunArgs {
    fn into_config(self) -> Result<VmConfig, config::ConfigError> {
        Ok(VmConfig {
            kernel: self.kernel,
            initramfs: self.initramfs,
            cmdline: self.cmdline,
            cpus: config::check_cpus(self.cpus)?,
            memory: MemoryConfig::parse(&self.memory)?,
            serial: SerialConfig::parse(&self.serial)?,
            net: self.net,
            devices: self.device,
        })
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let _tty = (config.serial == SerialConfig::Stdio)
        .then(terminal::RawStdin::enter)
        .flatten();
    match vmm::run(&config) {
        Ok(reason) => {
            let status = reason.status();
            if status == 0 {
                log::info!("{}", reason.describe());
            } else {
                eprintln!("vfio-vmm: {}", reason.describe());
            }
            ExitCode::from(status as u8)
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("vfio-vmm: error: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // vfio-ioctls warns about every IRQ index a device lacks; only its errors matter to users.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,vfio_ioctls=error"),
    )
    .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Bench { cmd } => vfio_vmm::bench::run(cmd),
        Command::Host { cmd } => ExitCode::from(host::run(cmd, cli.sysfs_root) as u8),
    }
}
