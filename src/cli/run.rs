//! `vfio-vmm run`: its options, or a JSON file with `--config`, become a
//! validated `VmConfig` (all grammar lives in `vfio_vmm::config`); then the
//! builder assembles the machine and the vmm runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vfio_vmm::api::{self, backend::MachineBackend, http::Limits};
use vfio_vmm::builder::{self, BuildError};
use vfio_vmm::config::payload::DEFAULT_CMDLINE;
use vfio_vmm::config::{
    check_cpus, ConfigError, DeviceConfig, MemoryConfig, NetConfig, PayloadConfig, PitConfig,
    RngConfig, SerialConfig, VmConfig,
};
use vfio_vmm::config::{DiskConfig, VsockConfig};
use vfio_vmm::vmm::VmmError;

use crate::terminal;

/// Options of `vfio-vmm run`.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Read the whole VM from a JSON file (cloud-hypervisor's VmConfig, see the README)
    /// instead of the options below, which may then not be given.
    #[arg(long, value_name = "FILE.json")]
    config: Option<PathBuf>,
    /// Serve the control API (cloud-hypervisor's) on this UNIX socket; alone, wait for
    /// vm.create; with a VM given, boot it at once and serve it.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// The guest kernel: a bzImage, or an uncompressed ELF vmlinux with a PVH note.
    #[arg(long, required_unless_present_any = ["config", "api_socket"])]
    kernel: Option<PathBuf>,
    /// An initramfs for the guest.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// The kernel command line [default: console=ttyS0].
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs [default: 1].
    #[arg(long)]
    cpus: Option<u64>,
    /// Guest RAM: SIZE[,hugepages=on][,mergeable=on], SIZE with K, M, G or T (bare numbers are MiB) [default: 512M].
    #[arg(long)]
    memory: Option<String>,
    /// Serial console: stdio, null (discard), off (no port) or file=PATH [default: stdio].
    #[arg(long)]
    serial: Option<String>,
    /// A virtio-net NIC on a tap (created if missing); repeat for more NICs.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC][,id=ID]")]
    net: Vec<String>,
    /// A host PCI device to pass through (BDF or /sys/bus/pci/devices/BDF, `,rombar=off` hides its ROM); repeatable.
    #[arg(long = "device", value_name = "BDF[,rombar=off][,id=ID]")]
    device: Vec<String>,
    /// A virtio-blk disk: a raw or qcow2 image or a block device, locked while the VM runs; repeatable.
    /// Give format= to open it as that format without probing (safe writes to block 0 of a raw image).
    #[arg(
        long = "disk",
        value_name = "path=FILE[,readonly=on][,direct=on][,id=ID][,serial=S][,format=raw|qcow2]"
    )]
    disk: Vec<String>,
    /// A virtio-vsock device: guest CID N (3 or more); hosts connect to the UNIX socket PATH.
    #[arg(long = "vsock", value_name = "cid=N,socket=PATH[,id=ID]")]
    vsock: Vec<String>,
    /// A virtio-rng entropy device reading SRC [default SRC: /dev/urandom].
    #[arg(long, value_name = "src=SRC", num_args = 0..=1, default_missing_value = "")]
    rng: Option<String>,
    /// KVM's policy for PIT ticks the guest missed: reinject them (on) or drop them [default: reinject=on].
    #[arg(long, value_name = "reinject=on|off")]
    pit: Option<String>,
}

/// Why `run` did not get to run the guest.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The options do not make a valid VM.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--config` given with VM options.
    #[error("--config cannot be combined with {0}: put these settings in the JSON file, or drop --config")]
    Mixed(String),
    /// The JSON file cannot be read.
    #[error("cannot read --config {path}: {err}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// The JSON file does not make a valid VM.
    #[error("--config {path}: {err}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        err: ConfigError,
    },
    /// The machine could not be assembled.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The vCPUs could not be started.
    #[error(transparent)]
    Vmm(#[from] VmmError),
}

impl RunArgs {
    /// The VM these options describe, validated.
    pub fn into_config(self) -> Result<VmConfig, RunError> {
        if let Some(path) = self.config.clone() {
            return self.read_config_file(path);
        }
        let config = VmConfig {
            payload: PayloadConfig {
                kernel: self.kernel.unwrap_or_default(),
                initramfs: self.initramfs,
                cmdline: self.cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.into()),
            },
            cpus: check_cpus(self.cpus.unwrap_or(1))?,
            memory: self
                .memory
                .as_deref()
                .map_or(Ok(MemoryConfig::default()), MemoryConfig::parse)?,
            serial: self
                .serial
                .as_deref()
                .map_or(Ok(SerialConfig::Stdio), SerialConfig::parse)?,
            devices: self
                .device
                .iter()
                .map(|d| DeviceConfig::parse(d))
                .collect::<Result<_, _>>()?,
            net: self
                .net
                .iter()
                .map(|n| NetConfig::parse(n))
                .collect::<Result<_, _>>()?,
            disks: self
                .disk
                .iter()
                .map(|d| DiskConfig::parse(d))
                .collect::<Result<_, _>>()?,
            vsock: match self.vsock.as_slice() {
                [] => None,
                [one] => Some(VsockConfig::parse(one)?),
                more => return Err(ConfigError::TooManyVsocks(more.len()).into()),
            },
            rng: self.rng.as_deref().map(RngConfig::parse).transpose()?,
            pit: self
                .pit
                .as_deref()
                .map_or(Ok(PitConfig::default()), PitConfig::parse)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// `--config FILE`, refusing any VM option beside it.
    fn read_config_file(self, path: PathBuf) -> Result<VmConfig, RunError> {
        let given: Vec<&str> = [
            ("--kernel", self.kernel.is_some()),
            ("--initramfs", self.initramfs.is_some()),
            ("--cmdline", self.cmdline.is_some()),
            ("--cpus", self.cpus.is_some()),
            ("--memory", self.memory.is_some()),
            ("--serial", self.serial.is_some()),
            ("--net", !self.net.is_empty()),
            ("--device", !self.device.is_empty()),
            ("--disk", !self.disk.is_empty()),
            ("--vsock", !self.vsock.is_empty()),
            ("--rng", self.rng.is_some()),
            ("--pit", self.pit.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();
        if !given.is_empty() {
            return Err(RunError::Mixed(given.join(", ")));
        }
        let text = std::fs::read_to_string(&path).map_err(|err| RunError::ReadConfig {
            path: path.clone(),
            err,
        })?;
        VmConfig::from_json(&text).map_err(|err| RunError::Json { path, err })
    }
}

/// Builds and runs the VM; passthrough devices are looked up under
/// `sysfs_root` (else `$VFIO_VMM_SYSFS_ROOT`, else `/`).
pub fn run(mut args: RunArgs, sysfs_root: Option<PathBuf>) -> ExitCode {
    if let Some(socket) = args.api_socket.take() {
        let config = match args.kernel.is_some() || args.config.is_some() {
            true => match args.into_config() {
                Ok(c) => Some(c),
                Err(e) => return fail(&e),
            },
            false if args.has_vm_options() => {
                return fail(&"--api-socket with VM options needs --kernel or --config")
            }
            false => None,
        };
        return serve_api(&socket, config, sysfs_root);
    }
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let sysfs = iommu::sysfs::Sysfs::from_env(sysfs_root);
    let _tty = (config.serial == SerialConfig::Stdio)
        .then(terminal::RawStdin::enter)
        .flatten();
    let result = builder::build(&config, &sysfs)
        .map_err(RunError::from)
        .and_then(|machine| Ok(machine.run()?));
    match result {
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

/// API mode: serves the control API on `socket` (booting `config` first if
/// given) until `vmm.shutdown`, a signal or the guest's end.
pub fn serve_api(socket: &Path, config: Option<VmConfig>, sysfs_root: Option<PathBuf>) -> ExitCode {
    let sysfs = iommu::sysfs::Sysfs::from_env(sysfs_root);
    let backend = Box::new(MachineBackend::new(sysfs));
    match api::serve(socket, config, backend, Limits::default()) {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => fail(&e),
    }
}

impl RunArgs {
    /// Whether any option describing a VM was given.
    fn has_vm_options(&self) -> bool {
        self.initramfs.is_some()
            || self.cmdline.is_some()
            || self.cpus.is_some()
            || self.memory.is_some()
            || self.serial.is_some()
            || !self.net.is_empty()
            || !self.device.is_empty()
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("vfio-vmm: error: {e}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// A file with a bzImage setup header, enough for validation.
    fn fake_bzimage(name: &str) -> PathBuf {
        let mut image = vec![0u8; 4096];
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x211] = 1;
        image[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        let path = std::env::temp_dir().join(format!("vfio-vmm-run-{}-{name}", std::process::id()));
        std::fs::write(&path, image).unwrap();
        path
    }

    fn args(argv: &[&str]) -> RunArgs {
        let mut all = vec!["vfio-vmm", "run"];
        all.extend_from_slice(argv);
        match Cli::try_parse_from(all).unwrap().command {
            Some(Command::Run(args)) => *args,
            _ => unreachable!("parsed run"),
        }
    }

    #[test]
    fn the_command_line_and_json_give_the_same_config() {
        let k = fake_bzimage("same");
        let k = k.to_str().unwrap();
        let img = fake_bzimage("same-disk");
        let img = img.to_str().unwrap();
        let disk = format!("path={img},readonly=on,direct=off,id=root,serial=SN 7");
        let from_cli = args(&[
            "--kernel",
            k,
            "--cmdline",
            "console=ttyS0 quiet",
            "--cpus",
            "2",
            "--memory",
            "1G,hugepages=on",
            "--serial",
            "file=/tmp/vfio-vmm-serial.log",
            "--device",
            "01:00.0,rombar=off,id=gpu",
            "--device",
            "/sys/bus/pci/devices/0000:02:00.0",
            "--net",
            "tap=tap0,mac=02:00:00:00:00:01,id=net0",
            "--net",
            "tap=tap1",
            "--disk",
            &disk,
            "--vsock",
            "cid=3,socket=/tmp/vfio-vmm-run-same.sock,id=vsock0",
            "--rng",
            "--pit",
            "reinject=off",
        ])
        .into_config()
        .unwrap();
        let json = format!(
            r#"{{
              "payload": {{"kernel": "{k}", "cmdline": "console=ttyS0 quiet"}},
              "cpus": {{"boot_vcpus": 2, "max_vcpus": 2}},
              "memory": {{"size": 1073741824, "hugepages": true}},
              "serial": {{"mode": "File", "file": "/tmp/vfio-vmm-serial.log"}},
              "devices": [{{"path": "/sys/bus/pci/devices/0000:01:00.0", "id": "gpu", "rombar": false}},
                          {{"path": "/sys/bus/pci/devices/0000:02:00.0"}}],
              "net": [{{"tap": "tap0", "mac": "02:00:00:00:00:01", "id": "net0"}}, {{"tap": "tap1"}}],
              "disks": [{{"path": "{img}", "readonly": true, "id": "root", "serial": "SN 7"}}],
              "vsock": {{"cid": 3, "socket": "/tmp/vfio-vmm-run-same.sock", "id": "vsock0"}},
              "rng": {{"src": "/dev/urandom"}},
              "pit": {{"reinject": false}}
            }}"#
        );
        assert_eq!(VmConfig::from_json(&json), Ok(from_cli.clone()));
        let file = PathBuf::from(format!("{k}.json"));
        std::fs::write(&file, from_cli.to_json()).unwrap();
        let from_file = args(&["--config", file.to_str().unwrap()]).into_config();
        assert_eq!(from_file.unwrap(), from_cli);
        std::fs::remove_file(file).unwrap();
        std::fs::remove_file(k).unwrap();
        std::fs::remove_file(img).unwrap();
    }

    #[test]
    fn a_vm_has_at_most_one_vsock() {
        let vsock = "cid=3,socket=/tmp/v.sock";
        let err = args(&["--kernel", "/k", "--vsock", vsock, "--vsock", vsock])
            .into_config()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--vsock is given 2 times: a VM has at most one vsock device"
        );
    }

    #[test]
    fn rng_and_pit_options_parse_or_say_what_to_write() {
        let k = fake_bzimage("rng-pit");
        let k = k.to_str().unwrap();
        let c = args(&["--rng", "src=/dev/random", "--kernel", k])
            .into_config()
            .unwrap();
        assert_eq!(c.rng, Some(RngConfig::parse("src=/dev/random").unwrap()));
        assert_eq!(
            (
                c.pit.reinject,
                args(&["--kernel", k]).into_config().unwrap().rng
            ),
            (true, None)
        );
        for (argv, want) in [
            (
                &["--rng", "src=/nonexistent/rng"][..],
                "entropy source /nonexistent/rng",
            ),
            (
                &["--rng", "/dev/random"],
                "--rng \"/dev/random\": expected src=PATH",
            ),
            (
                &["--pit", "reinject=maybe"],
                "--pit \"reinject=maybe\": expected reinject=on|off",
            ),
        ] {
            let mut all = argv.to_vec();
            all.extend(["--kernel", k]);
            let err = args(&all).into_config().unwrap_err().to_string();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
        std::fs::remove_file(k).unwrap();
    }

    #[test]
    fn config_is_not_mixed_with_vm_options() {
        let err = args(&[
            "--config", "/x.json", "--memory", "1G", "--device", "01:00.0", "--disk", "path=/d",
        ])
        .into_config()
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "--config cannot be combined with --memory, --device, --disk: put these settings in the JSON file, or drop --config"
        );
        let err = args(&["--config", "/nonexistent.json"])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read --config /nonexistent.json"),
            "{err}"
        );
    }
}
