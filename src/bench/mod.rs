//! `vfio-vmm bench report`: turn the raw results of the network benchmark
//! (`scripts/bench/net.sh`) into `net.json`, `net.md` and `net.svg`, and
//! those of the storage benchmark (`scripts/bench/blk.sh`: `blk` and `cpu`
//! records, see [`storage`]) into `blk.json`, `blk.md` and `blk.svg`.
//!
//! The benchmark's shell side writes one small `key=value` file per record
//! into a directory (see `scripts/bench/net-run.sh`):
//!
//! * `record=setup`: what was measured (host, guest size, durations); free-form.
//! * `record=run`: one repetition of one configuration: `config`, `vmm`, `rep`,
//!   `tx_bytes`, `tx_seconds` (guest to host), `rx_bytes`, `rx_seconds` (host
//!   to guest), `rtt_us` (comma-separated ping round trips in microseconds),
//!   `clk_tck` and, when sampled, `vmm_cpu_ticks`, `vmm_guest_ticks` and
//!   `host_cpu_ticks` (CPU time over the two iperf3 runs).
//! * `record=skip` / `record=fail`: a configuration that could not run or
//!   failed, with its `reason`.
//!
//! This module parses those records; [`report`] computes the statistics and
//! renders JSON and Markdown; [`chart`] draws the SVG.

pub mod chart;
pub mod report;
pub mod storage;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use report::Report;
pub use storage::StorageReport;

/// Errors reading the raw results or writing the report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line that is not `key=value`.
    #[error("{file}:{line}: expected key=value, got '{text}'")]
    BadLine {
        /// The record file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// A required key is missing from a record.
    #[error("{file}: missing key '{key}'")]
    MissingKey {
        /// The record file.
        file: String,
        /// The key.
        key: &'static str,
    },
    /// A value that does not parse as the number the key needs.
    #[error("{file}: {key}={value} is not a valid {what}")]
    BadValue {
        /// The record file.
        file: String,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What was expected ("non-negative integer", ...).
        what: &'static str,
    },
    /// A `record=` kind this version does not know.
    #[error("{file}: unknown record kind '{kind}' (expected setup, run, blk, cpu, skip or fail)")]
    UnknownRecord {
        /// The record file.
        file: String,
        /// The kind as written.
        kind: String,
    },
    /// The input directory holds no run, skip or fail record.
    #[error("{0}: no benchmark records (*.txt with record=run|skip|fail)")]
    Empty(PathBuf),
    /// `--strict`: some configuration did not produce usable numbers.
    #[error("incomplete results: {}", .0.join("; "))]
    Incomplete(Vec<String>),
    /// The chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
    /// The JSON could not be serialized.
    #[error("cannot serialize the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// `vfio-vmm bench ...`
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Turn raw benchmark results (a directory of key=value files) into
    /// net.json, net.md and net.svg (network) or blk.json, blk.md and blk.svg
    /// (storage: the directory holds blk or cpu records).
    Report(ReportArgs),
}

/// Arguments of `vfio-vmm bench report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Directory with the raw records (*.txt), as written by scripts/bench/net-run.sh
    /// or scripts/bench/blk-run.sh.
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,
    /// Where net.json, net.md and net.svg (or blk.json, blk.md and blk.svg) go.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub out: PathBuf,
    /// Fail unless every configuration in --require ran at least --min-reps
    /// times with non-zero throughput and finite numbers.
    #[arg(long)]
    pub strict: bool,
    /// Configurations that --strict requires (comma-separated). Default: all
    /// five of the benchmark (network: passthrough, virtio-net, qemu-virtio,
    /// qemu-e1000e, qemu-passthrough; storage: nvme-passthrough, virtio-blk,
    /// qemu-virtio-blk, qemu-nvme, qemu-nvme-passthrough).
    #[arg(long, value_delimiter = ',')]
    pub require: Vec<String>,
    /// Repetitions per configuration that --strict requires.
    #[arg(long, default_value_t = 3)]
    pub min_reps: usize,
}

/// Runs a `bench` subcommand; prints errors to stderr. For `main`.
pub fn run(cmd: BenchCommand) -> ExitCode {
    match cmd {
        BenchCommand::Report(args) => match write_report(&args) {
            Ok(paths) => {
                for p in paths {
                    println!("{}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vfio-vmm: bench report: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Reads `args.input`, writes net.json, net.md and net.svg into `args.out`
/// and returns their paths. With `--strict`, the files are still written
/// before an incomplete result is reported as an error.
pub fn write_report(args: &ReportArgs) -> Result<Vec<PathBuf>, BenchError> {
    let records = load_dir(&args.input)?;
    std::fs::create_dir_all(&args.out).map_err(io(&args.out))?;
    if records
        .iter()
        .any(|r| matches!(r, Record::Blk(_) | Record::Cpu(_)))
    {
        return write_storage(args, &records);
    }
    let report = Report::build(&records)?;
    let json = args.out.join("net.json");
    let md = args.out.join("net.md");
    let svg = args.out.join("net.svg");
    std::fs::write(&json, report.to_json()? + "\n").map_err(io(&json))?;
    std::fs::write(&md, report.to_markdown()).map_err(io(&md))?;
    std::fs::write(&svg, chart::render_svg(&report)?).map_err(io(&svg))?;
    if args.strict {
        let require = required(&args.require, &report::CONFIG_ORDER);
        let problems = report.problems(&require, args.min_reps);
        if !problems.is_empty() {
            return Err(BenchError::Incomplete(problems));
        }
    }
    Ok(vec![json, md, svg])
}

/// [`write_report`] for the storage benchmark: blk.json, blk.md, blk.svg.
fn write_storage(args: &ReportArgs, records: &[Record]) -> Result<Vec<PathBuf>, BenchError> {
    let report = StorageReport::build(records);
    let json = args.out.join("blk.json");
    let md = args.out.join("blk.md");
    let svg = args.out.join("blk.svg");
    std::fs::write(&json, report.to_json()? + "\n").map_err(io(&json))?;
    std::fs::write(&md, report.to_markdown()).map_err(io(&md))?;
    std::fs::write(&svg, chart::render_blk_svg(&report)?).map_err(io(&svg))?;
    if args.strict {
        let require = required(&args.require, &storage::BLK_ORDER);
        let problems = report.problems(&require, args.min_reps);
        if !problems.is_empty() {
            return Err(BenchError::Incomplete(problems));
        }
    }
    Ok(vec![json, md, svg])
}

/// `--require`, or every configuration of the benchmark when it is empty.
fn required(given: &[String], all: &[&str]) -> Vec<String> {
    if given.is_empty() {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        given.to_vec()
    }
}

/// Maps an I/O error to [`BenchError::Io`] naming `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError {
    let path = path.to_path_buf();
    move |source| BenchError::Io { path, source }
}

/// One repetition of one configuration, as measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Configuration name (passthrough, virtio-net, ...).
    pub config: String,
    /// The VMM that ran the guest (vfio-vmm, qemu).
    pub vmm: String,
    /// Repetition number, from 1.
    pub rep: u32,
    /// Bytes received by the host, guest to host.
    pub tx_bytes: u64,
    /// Receiver-side duration of the guest-to-host test.
    pub tx_seconds: f64,
    /// Bytes received by the guest, host to guest.
    pub rx_bytes: u64,
    /// Receiver-side duration of the host-to-guest test.
    pub rx_seconds: f64,
    /// Ping round-trip times in microseconds.
    pub rtt_us: Vec<u64>,
    /// Clock ticks per second of the CPU times below.
    pub clk_tck: u64,
    /// VMM process CPU time (all threads, guest time included) over tx + rx.
    pub vmm_cpu_ticks: Option<u64>,
    /// The part of `vmm_cpu_ticks` spent running guest code.
    pub vmm_guest_ticks: Option<u64>,
    /// Busy CPU time of the whole host over tx + rx.
    pub host_cpu_ticks: Option<u64>,
}

/// A parsed record file.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Free-form description of the setup.
    Setup(BTreeMap<String, String>),
    /// One measured repetition.
    Run(RunRecord),
    /// A configuration that could not run here.
    Skip {
        /// Configuration name.
        config: String,
        /// Why it was skipped.
        reason: String,
    },
    /// A configuration that failed.
    Fail {
        /// Configuration name.
        config: String,
        /// What went wrong.
        reason: String,
    },
    /// One repetition of the storage benchmark.
    Blk(storage::BlkRecord),
    /// The storage benchmark's CPU loop, in a guest or natively.
    Cpu(storage::CpuRecord),
}

impl Record {
    /// The configuration a record belongs to, if any.
    pub fn config(&self) -> Option<&str> {
        match self {
            Record::Setup(_) => None,
            Record::Run(r) => Some(&r.config),
            Record::Skip { config, .. } | Record::Fail { config, .. } => Some(config),
            Record::Blk(b) => Some(&b.config),
            Record::Cpu(c) => Some(&c.config),
        }
    }
}

/// Reads every `*.txt` in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Record>, BenchError> {
    let io = |source| BenchError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "txt") {
            files.push(path);
        }
    }
    files.sort();
    let mut records = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        records.push(parse_record(&name, &text)?);
    }
    if !records.iter().any(|r| r.config().is_some()) {
        return Err(BenchError::Empty(dir.to_path_buf()));
    }
    Ok(records)
}

/// Parses one record file; `file` names it in errors. Blank lines and lines
/// starting with `#` are ignored, unknown keys are kept (setup) or ignored.
pub fn parse_record(file: &str, text: &str) -> Result<Record, BenchError> {
    let mut kv = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(BenchError::BadLine {
                file: file.into(),
                line: i + 1,
                text: line.into(),
            });
        };
        kv.insert(k.trim().to_string(), v.trim().to_string());
    }
    let f = Fields { file, kv: &kv };
    match f.str("record")? {
        "setup" => Ok(Record::Setup(kv.clone())),
        "skip" => Ok(Record::Skip {
            config: f.str("config")?.into(),
            reason: f.str("reason")?.into(),
        }),
        "fail" => Ok(Record::Fail {
            config: f.str("config")?.into(),
            reason: f.str("reason")?.into(),
        }),
        "run" => Ok(Record::Run(RunRecord {
            config: f.str("config")?.into(),
            vmm: f.str("vmm")?.into(),
            rep: f
                .int("rep")?
                .try_into()
                .map_err(|_| f.bad("rep", "repetition number"))?,
            tx_bytes: f.int("tx_bytes")?,
            tx_seconds: f.secs("tx_seconds")?,
            rx_bytes: f.int("rx_bytes")?,
            rx_seconds: f.secs("rx_seconds")?,
            rtt_us: f.list("rtt_us")?,
            clk_tck: match f.int("clk_tck")? {
                0 => return Err(f.bad("clk_tck", "positive integer")),
                n => n,
            },
            vmm_cpu_ticks: f.opt_int("vmm_cpu_ticks")?,
            vmm_guest_ticks: f.opt_int("vmm_guest_ticks")?,
            host_cpu_ticks: f.opt_int("host_cpu_ticks")?,
        })),
        "blk" => storage::parse_blk(&f),
        "cpu" => storage::parse_cpu(&f),
        other => Err(BenchError::UnknownRecord {
            file: file.into(),
            kind: other.into(),
        }),
    }
}

/// Typed access to one record's keys, with errors naming file and key.
struct Fields<'a> {
    file: &'a str,
    kv: &'a BTreeMap<String, String>,
}

impl Fields<'_> {
    fn str(&self, key: &'static str) -> Result<&str, BenchError> {
        self.kv
            .get(key)
            .map(String::as_str)
            .ok_or(BenchError::MissingKey {
                file: self.file.into(),
                key,
            })
    }

    fn bad(&self, key: &str, what: &'static str) -> BenchError {
        let value = self.kv.get(key).cloned().unwrap_or_default();
        BenchError::BadValue {
            file: self.file.into(),
            key: key.into(),
            value,
            what,
        }
    }

    fn int(&self, key: &'static str) -> Result<u64, BenchError> {
        self.str(key)?
            .parse()
            .map_err(|_| self.bad(key, "non-negative integer"))
    }

    fn opt_int(&self, key: &'static str) -> Result<Option<u64>, BenchError> {
        match self.kv.get(key) {
            None => Ok(None),
            Some(_) => self.int(key).map(Some),
        }
    }

    /// A duration: finite and positive (it divides the bytes).
    fn secs(&self, key: &'static str) -> Result<f64, BenchError> {
        match self.str(key)?.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
            _ => Err(self.bad(key, "positive number of seconds")),
        }
    }

    fn list(&self, key: &'static str) -> Result<Vec<u64>, BenchError> {
        let v = self.str(key)?;
        if v.is_empty() {
            return Ok(Vec::new());
        }
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .map_err(|_| self.bad(key, "comma-separated list of integers"))
            })
            .collect()
    }
}

impl fmt::Display for RunRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rep {} ({})", self.config, self.rep, self.vmm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "record=run\nconfig=virtio-net\nvmm=vfio-vmm\nrep=2\ntx_bytes=250000000\n\
        tx_seconds=2.0\nrx_bytes=125000000\nrx_seconds=2.5\nrtt_us=120,80,100\nclk_tck=100\n\
        vmm_cpu_ticks=150\nvmm_guest_ticks=50\nhost_cpu_ticks=300\n";

    #[test]
    fn parses_a_run_record_with_optional_cpu_fields() {
        let Record::Run(r) = parse_record("virtio-net-2.txt", RUN).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(
            (r.rep, r.tx_bytes, r.rx_bytes, r.clk_tck),
            (2, 250_000_000, 125_000_000, 100)
        );
        assert_eq!(r.rtt_us, vec![120, 80, 100]);
        assert_eq!(
            (r.vmm_cpu_ticks, r.vmm_guest_ticks, r.host_cpu_ticks),
            (Some(150), Some(50), Some(300))
        );

        let no_cpu: String = RUN
            .lines()
            .filter(|l| !l.contains("_ticks"))
            .map(|l| format!("{l}\n"))
            .collect();
        let Record::Run(r) = parse_record("x.txt", &no_cpu).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(r.vmm_cpu_ticks, None);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e =
            parse_record("a.txt", &RUN.replace("tx_bytes=250000000", "tx_bytes=12MB")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.txt: tx_bytes=12MB is not a valid non-negative integer"
        );
        let e = parse_record("a.txt", &RUN.replace("rx_seconds=2.5", "rx_seconds=0")).unwrap_err();
        assert!(
            matches!(e, BenchError::BadValue { ref key, .. } if key == "rx_seconds"),
            "{e}"
        );
        let e =
            parse_record("a.txt", &RUN.replace("rx_seconds=2.5", "rx_seconds=NaN")).unwrap_err();
        assert!(
            matches!(e, BenchError::BadValue { ref key, .. } if key == "rx_seconds"),
            "{e}"
        );
        let e = parse_record("b.txt", &RUN.replace("vmm=vfio-vmm\n", "")).unwrap_err();
        assert_eq!(e.to_string(), "b.txt: missing key 'vmm'");
        let e = parse_record("c.txt", "record=run\nno equals sign\n").unwrap_err();
        assert!(matches!(e, BenchError::BadLine { line: 2, .. }), "{e}");
        let e = parse_record("d.txt", "record=bogus\n").unwrap_err();
        assert!(matches!(e, BenchError::UnknownRecord { .. }), "{e}");
        let e = parse_record(
            "e.txt",
            &RUN.replace("rtt_us=120,80,100", "rtt_us=120,,100"),
        )
        .unwrap_err();
        assert!(
            matches!(e, BenchError::BadValue { ref key, .. } if key == "rtt_us"),
            "{e}"
        );
    }

    #[test]
    fn skip_and_setup_records_keep_their_text() {
        let r = parse_record(
            "q.txt",
            "record=skip\nconfig=qemu-virtio\nreason=qemu-system-x86_64 is not installed\n",
        );
        assert_eq!(
            r.unwrap(),
            Record::Skip {
                config: "qemu-virtio".into(),
                reason: "qemu-system-x86_64 is not installed".into()
            }
        );
        let Record::Setup(kv) = parse_record("setup.txt", "record=setup\nhost=rig: a=b\n").unwrap()
        else {
            panic!("not setup")
        };
        // Only the first '=' splits: values may contain '='.
        assert_eq!(kv["host"], "rig: a=b");
    }

    #[test]
    fn load_dir_reads_only_txt_files_and_rejects_an_empty_directory() {
        let dir = std::env::temp_dir().join(format!("vfio-vmm-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("setup.txt"), "record=setup\nhost=h\n").unwrap();
        assert!(matches!(load_dir(&dir), Err(BenchError::Empty(_))));
        std::fs::write(dir.join("virtio-net-2.txt"), RUN).unwrap();
        std::fs::write(dir.join("notes.log"), "not a record").unwrap();
        let records = load_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].config(), Some("virtio-net"));
    }
}
