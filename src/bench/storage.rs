//! The storage benchmark's records (`scripts/bench/blk-run.sh`) and their
//! report: `blk.json`, the Markdown of `blk.md` (storage table, CPU row,
//! vfio-vmm / QEMU ratios); `chart::render_blk_svg` draws `blk.svg`.
//!
//! Records: `record=blk` (one repetition: fio's `rr_iops`, `rr_p50_us`,
//! `rr_p99_us` for 4 KiB random reads, `sr_kib_s` and `sw_kib_s` for 1 MiB
//! sequential reads and writes), `record=cpu` (`mib`, `seconds`: the CPU loop
//! in a guest, or natively with `config=native`), and the shared `setup`,
//! `skip` and `fail` records. MB/s are 10^6 bytes per second.
//!
//! `blk.json` schema (`"schema": "vfio-vmm-bench-blk/1"`):
//!
//! ```text
//! { "schema": "vfio-vmm-bench-blk/1", "setup": { "<key>": "<value>", ... },
//!   "native_cpu_seconds": f64 | null,
//!   "configurations": [ { "name", "vmm", "status", "reason", "runs",
//!       "metrics": { "rr_iops" | "rr_p50_us" | "rr_p99_us" | "seq_read_mb_s"
//!                    | "seq_write_mb_s": { "median", "min", "max", "n" } | null },
//!       "cpu_seconds": f64 | null, "cpu_vs_native": f64 | null } ],
//!   "ratios": [ { "name", "numerator", "denominator",
//!       "rr_iops" | "seq_read_mb_s" | "seq_write_mb_s": f64 | null } ] }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::report::{num, summarize, Status, Summary};
use super::{BenchError, Fields, Record};

/// The configurations in the order the report shows them; others follow by name.
pub const BLK_ORDER: [&str; 5] = [
    "nvme-passthrough",
    "virtio-blk",
    "qemu-virtio-blk",
    "qemu-nvme",
    "qemu-nvme-passthrough",
];

/// The pairs whose ratios the report prints: (name, vfio-vmm config, QEMU config).
pub const RATIOS: [(&str, &str, &str); 2] = [
    ("virtio-blk", "virtio-blk", "qemu-virtio-blk"),
    (
        "NVMe passthrough",
        "nvme-passthrough",
        "qemu-nvme-passthrough",
    ),
];

/// One repetition of the three fio jobs in one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BlkRecord {
    /// Configuration name (virtio-blk, ...).
    pub config: String,
    /// The VMM that ran the guest.
    pub vmm: String,
    /// Repetition number, from 1.
    pub rep: u32,
    /// 4 KiB random reads per second.
    pub rr_iops: f64,
    /// Their median completion latency, µs.
    pub rr_p50_us: f64,
    /// Their 99th percentile completion latency, µs.
    pub rr_p99_us: f64,
    /// 1 MiB sequential reads, KiB/s.
    pub sr_kib_s: f64,
    /// 1 MiB sequential writes, KiB/s.
    pub sw_kib_s: f64,
}

/// The CPU loop's time in one guest, or natively (`config` = `native`).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuRecord {
    /// Configuration name, or `native`.
    pub config: String,
    /// MiB the loop hashed.
    pub mib: u64,
    /// Seconds it took.
    pub seconds: f64,
}

impl Fields<'_> {
    /// A finite, non-negative number.
    fn num(&self, key: &'static str) -> Result<f64, BenchError> {
        match self.str(key)?.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(self.bad(key, "non-negative number")),
        }
    }
}

/// Parses the keys of a `record=blk` file.
pub(super) fn parse_blk(f: &Fields<'_>) -> Result<Record, BenchError> {
    Ok(Record::Blk(BlkRecord {
        config: f.str("config")?.into(),
        vmm: f.str("vmm")?.into(),
        rep: f
            .int("rep")?
            .try_into()
            .map_err(|_| f.bad("rep", "repetition number"))?,
        rr_iops: f.num("rr_iops")?,
        rr_p50_us: f.num("rr_p50_us")?,
        rr_p99_us: f.num("rr_p99_us")?,
        sr_kib_s: f.num("sr_kib_s")?,
        sw_kib_s: f.num("sw_kib_s")?,
    }))
}

/// Parses the keys of a `record=cpu` file.
pub(super) fn parse_cpu(f: &Fields<'_>) -> Result<Record, BenchError> {
    Ok(Record::Cpu(CpuRecord {
        config: f.str("config")?.into(),
        mib: f.int("mib")?,
        seconds: match f.secs("seconds")? {
            s if s > 0.0 => s,
            _ => return Err(f.bad("seconds", "positive number of seconds")),
        },
    }))
}

/// Per-metric median and spread over a configuration's repetitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BlkMetrics {
    /// 4 KiB random reads per second.
    pub rr_iops: Option<Summary>,
    /// Their p50 completion latency, µs.
    pub rr_p50_us: Option<Summary>,
    /// Their p99 completion latency, µs.
    pub rr_p99_us: Option<Summary>,
    /// 1 MiB sequential reads, MB/s.
    pub seq_read_mb_s: Option<Summary>,
    /// 1 MiB sequential writes, MB/s.
    pub seq_write_mb_s: Option<Summary>,
}

impl BlkMetrics {
    fn from_runs(runs: &[&BlkRecord]) -> Self {
        let of =
            |f: fn(&BlkRecord) -> f64| summarize(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        BlkMetrics {
            rr_iops: of(|r| r.rr_iops),
            rr_p50_us: of(|r| r.rr_p50_us),
            rr_p99_us: of(|r| r.rr_p99_us),
            seq_read_mb_s: of(|r| r.sr_kib_s * 1024.0 / 1e6),
            seq_write_mb_s: of(|r| r.sw_kib_s * 1024.0 / 1e6),
        }
    }

    /// The values in table order.
    pub fn values(&self) -> [Option<Summary>; 5] {
        [
            self.rr_iops,
            self.rr_p50_us,
            self.rr_p99_us,
            self.seq_read_mb_s,
            self.seq_write_mb_s,
        ]
    }
}

/// One configuration's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlkConfig {
    /// Configuration name.
    pub name: String,
    /// The VMM that ran it, if it ran.
    pub vmm: Option<String>,
    /// Outcome.
    pub status: Status,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Number of measured repetitions.
    pub runs: usize,
    /// Median and spread per metric.
    pub metrics: BlkMetrics,
    /// The CPU loop's seconds in this guest.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` over the native time (1.0: no overhead).
    pub cpu_vs_native: Option<f64>,
}

/// vfio-vmm's median over QEMU's for one pair of configurations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratio {
    /// What is compared ("virtio-blk").
    pub name: &'static str,
    /// The vfio-vmm configuration.
    pub numerator: &'static str,
    /// The QEMU configuration.
    pub denominator: &'static str,
    /// Random read IOPS ratio.
    pub rr_iops: Option<f64>,
    /// Sequential read MB/s ratio.
    pub seq_read_mb_s: Option<f64>,
    /// Sequential write MB/s ratio.
    pub seq_write_mb_s: Option<f64>,
}

/// The whole storage report: what `blk.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StorageReport {
    /// Schema identifier.
    pub schema: &'static str,
    /// Free-form setup description.
    pub setup: BTreeMap<String, String>,
    /// The CPU loop's seconds natively (on the host of the guests).
    pub native_cpu_seconds: Option<f64>,
    /// One entry per configuration, in [`BLK_ORDER`] then by name.
    pub configurations: Vec<BlkConfig>,
    /// vfio-vmm / QEMU, per [`RATIOS`] pair.
    pub ratios: Vec<Ratio>,
}

impl StorageReport {
    /// Groups the records by configuration and summarizes them.
    pub fn build(records: &[Record]) -> Self {
        let mut setup = BTreeMap::new();
        let mut by_config: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        let mut native = None;
        for r in records {
            match r {
                Record::Setup(kv) => setup.extend(
                    kv.iter()
                        .filter(|(k, _)| *k != "record")
                        .map(|(k, v)| (k.clone(), v.clone())),
                ),
                Record::Cpu(c) if c.config == "native" => native = Some(c.seconds),
                Record::Run(_) => {}
                _ => by_config
                    .entry(r.config().unwrap_or_default())
                    .or_default()
                    .push(r),
            }
        }
        let rank = |n: &str| {
            BLK_ORDER
                .iter()
                .position(|c| *c == n)
                .unwrap_or(BLK_ORDER.len())
        };
        let mut names: Vec<&str> = by_config.keys().copied().collect();
        names.sort_by_key(|n| (rank(n), *n));
        let configurations: Vec<BlkConfig> = names
            .into_iter()
            .map(|n| blk_config(n, &by_config[n], native))
            .collect();
        let ratios = RATIOS
            .iter()
            .map(|&(name, a, b)| ratio(name, a, b, &configurations))
            .collect();
        StorageReport {
            schema: "vfio-vmm-bench-blk/1",
            setup,
            native_cpu_seconds: native,
            configurations,
            ratios,
        }
    }

    /// `blk.json`, pretty-printed.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// What keeps the report from being complete for `--strict`: a required
    /// configuration missing, skipped, failed, with fewer than `min_reps`
    /// repetitions, a zero IOPS or bandwidth, or no CPU loop time.
    pub fn problems(&self, require: &[String], min_reps: usize) -> Vec<String> {
        let mut out = Vec::new();
        if self.native_cpu_seconds.is_none() {
            out.push("native: no CPU loop time".to_string());
        }
        for name in require {
            let Some(c) = self.configurations.iter().find(|c| &c.name == name) else {
                out.push(format!("{name}: no result"));
                continue;
            };
            if c.status != Status::Ok {
                let why = c.reason.as_deref().unwrap_or("no reason given");
                out.push(format!("{name}: {}: {why}", status_word(c.status)));
                continue;
            }
            if c.runs < min_reps {
                out.push(format!("{name}: {} of {min_reps} repetitions", c.runs));
            }
            let m = &c.metrics;
            for (what, s) in [
                ("random read IOPS", m.rr_iops),
                ("sequential read MB/s", m.seq_read_mb_s),
                ("sequential write MB/s", m.seq_write_mb_s),
            ] {
                if s.is_none_or(|s| s.min <= 0.0) {
                    out.push(format!("{name}: a repetition with no {what}"));
                }
            }
            if c.cpu_seconds.is_none() {
                out.push(format!("{name}: no CPU loop time"));
            }
        }
        out
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Skipped => "skipped",
        Status::Failed => "FAILED",
    }
}

fn blk_config(name: &str, records: &[&Record], native: Option<f64>) -> BlkConfig {
    let mut runs: Vec<&BlkRecord> = records
        .iter()
        .filter_map(|r| match r {
            Record::Blk(b) => Some(b),
            _ => None,
        })
        .collect();
    runs.sort_by_key(|r| r.rep);
    let reason = |fail: bool| {
        records.iter().find_map(|r| match r {
            Record::Fail { reason, .. } if fail => Some(reason.clone()),
            Record::Skip { reason, .. } if !fail => Some(reason.clone()),
            _ => None,
        })
    };
    let (status, reason) = match reason(true) {
        Some(r) => (Status::Failed, Some(r)),
        None if runs.is_empty() => (Status::Skipped, reason(false)),
        None => (Status::Ok, None),
    };
    let cpu_seconds = records.iter().find_map(|r| match r {
        Record::Cpu(c) => Some(c.seconds),
        _ => None,
    });
    BlkConfig {
        name: name.to_string(),
        vmm: runs.first().map(|r| r.vmm.clone()),
        status,
        reason,
        runs: runs.len(),
        metrics: BlkMetrics::from_runs(&runs),
        cpu_seconds,
        cpu_vs_native: cpu_seconds.zip(native).map(|(c, n)| c / n),
    }
}

fn ratio(name: &'static str, a: &'static str, b: &'static str, cs: &[BlkConfig]) -> Ratio {
    let get = |n: &str| cs.iter().find(|c| c.name == n && c.status == Status::Ok);
    let (ca, cb) = (get(a), get(b));
    let r = |f: fn(&BlkMetrics) -> Option<Summary>| {
        let (x, y) = (f(&ca?.metrics)?.median, f(&cb?.metrics)?.median);
        (y > 0.0).then(|| x / y).filter(|v| v.is_finite())
    };
    Ratio {
        name,
        numerator: a,
        denominator: b,
        rr_iops: r(|m| m.rr_iops),
        seq_read_mb_s: r(|m| m.seq_read_mb_s),
        seq_write_mb_s: r(|m| m.seq_write_mb_s),
    }
}

/// "median (min–max)", or the median alone for a single value.
fn cell(s: &Option<Summary>) -> String {
    match s {
        None => "–".to_string(),
        Some(s) if s.n < 2 => num(s.median),
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
    }
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "–".to_string(), f)
}

impl StorageReport {
    /// `blk.md`: what was measured, the storage table, the CPU row, the ratios.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("# Storage benchmark\n\n");
        let get = |k: &str| self.setup.get(k).map(String::as_str).unwrap_or("?");
        if let Some(host) = self.setup.get("host") {
            let _ = writeln!(s, "Host: {host}.");
        }
        let _ = writeln!(
            s,
            "Each configuration: guest with {} vCPU(s) and {} MiB (host THP: {}), {} on the raw disk, \
             O_DIRECT, libaio, {} s per job, over its first {} MiB: 4 KiB random reads at queue depth {}, \
             1 MiB sequential reads and writes at queue depth 4; {} repetition(s). \
             Medians with the spread (min–max) in brackets; latencies are fio's completion latencies; MB/s is 10^6 B/s.\n",
            get("guest_cpus"),
            get("guest_memory_mib"),
            get("thp"),
            get("fio"),
            get("fio_seconds"),
            get("region_mib"),
            get("randread_qd"),
            get("reps"),
        );
        s.push_str(&self.table());
        let _ = writeln!(
            s,
            "\nCPU: sha256sum of {} MiB (a 4 MiB buffer in tmpfs, hashed repeatedly), seconds and × the native time:\n",
            get("cpu_mib")
        );
        s.push_str(&self.cpu_table());
        s.push_str("\nvfio-vmm / QEMU (medians; above 1 means vfio-vmm is faster):\n\n");
        s.push_str(&self.ratio_table());
        s
    }

    /// The storage table alone.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| configuration | VMM | runs | 4K rand read IOPS | p50 µs | p99 µs | seq read MB/s | seq write MB/s |\n\
             |---|---|--:|--:|--:|--:|--:|--:|\n",
        );
        for c in &self.configurations {
            let vmm = c.vmm.as_deref().unwrap_or("–");
            let reason = c
                .reason
                .as_deref()
                .unwrap_or("")
                .replace('|', "\\|")
                .replace('\n', " ");
            if c.runs == 0 {
                let word = status_word(c.status);
                let _ = writeln!(s, "| {} | {vmm} | 0 | {word}: {reason} | | | | |", c.name);
                continue;
            }
            let name = match c.status {
                Status::Failed => format!("{} (FAILED: {reason})", c.name),
                _ => c.name.clone(),
            };
            let cells: Vec<String> = c.metrics.values().iter().map(cell).collect();
            let _ = writeln!(s, "| {name} | {vmm} | {} | {} |", c.runs, cells.join(" | "));
        }
        s
    }

    /// The CPU row: native, then each configuration's seconds (× native).
    pub fn cpu_table(&self) -> String {
        let names: Vec<&str> = self
            .configurations
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let mut s = format!("| | native | {} |\n|---|--:|", names.join(" | "));
        s.push_str(&"--:|".repeat(names.len()));
        let cells: Vec<String> = self
            .configurations
            .iter()
            .map(|c| match (c.cpu_seconds, c.cpu_vs_native) {
                (Some(t), Some(r)) => format!("{} (×{r:.2})", num(t)),
                (Some(t), None) => num(t),
                _ => "–".to_string(),
            })
            .collect();
        let native = opt(self.native_cpu_seconds, num);
        let _ = write!(s, "\n| CPU loop s | {native} | {} |\n", cells.join(" | "));
        s
    }

    /// The ratios, one row per vfio-vmm / QEMU pair.
    pub fn ratio_table(&self) -> String {
        let mut s = String::from(
            "| vfio-vmm / QEMU | 4K rand read IOPS | seq read MB/s | seq write MB/s |\n|---|--:|--:|--:|\n",
        );
        let f = |x: Option<f64>| opt(x, |v| format!("{v:.2}"));
        for r in &self.ratios {
            let _ = writeln!(
                s,
                "| {} ({} / {}) | {} | {} | {} |",
                r.name,
                r.numerator,
                r.denominator,
                f(r.rr_iops),
                f(r.seq_read_mb_s),
                f(r.seq_write_mb_s)
            );
        }
        s
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
