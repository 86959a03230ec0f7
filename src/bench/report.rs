//! Statistics over the benchmark's repetitions and the JSON and Markdown
//! renderings of the result.
//!
//! Per repetition: throughput in Mbit/s (receiver bytes over receiver
//! seconds), ping RTT p50 and p99 (nearest rank), and CPU seconds per
//! gigabyte (10^9 bytes) moved by the two iperf3 runs. Per configuration:
//! the median over repetitions and the spread (min–max).
//!
//! `net.json` schema (`"schema": "vfio-vmm-bench-net/1"`):
//!
//! ```text
//! { "schema": "vfio-vmm-bench-net/1",
//!   "setup": { "<key>": "<value>", ... },          // from setup.txt, as written
//!   "configurations": [ {
//!       "name": "passthrough", "vmm": "vfio-vmm" | "qemu" | null,
//!       "status": "ok" | "skipped" | "failed", "reason": null | "<text>",
//!       "runs": 3,
//!       "metrics": {                                 // null where no run had the data
//!         "tx_mbit_s" | "rx_mbit_s" | "rtt_p50_us" | "rtt_p99_us" | "vmm_cpu_s_per_gb"
//!         | "vmm_nonguest_cpu_s_per_gb" | "host_cpu_s_per_gb":
//!             { "median": f64, "min": f64, "max": f64, "n": usize } | null },
//!       "per_run": [ { "rep": 1, "tx_mbit_s": f64, ... same keys, f64 | null } ] } ] }
//! ```
//!
//! `tx` is guest to host, `rx` host to guest. `vmm_cpu` counts all VMM
//! threads, guest execution included; `vmm_nonguest_cpu` leaves the guest's
//! own execution out; `host_cpu` is the busy time of every host CPU.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{BenchError, Record, RunRecord};

/// The configurations in the order the report shows them; others follow by name.
pub const CONFIG_ORDER: [&str; 5] = [
    "passthrough",
    "virtio-net",
    "qemu-virtio",
    "qemu-e1000e",
    "qemu-passthrough",
];

/// Errors in the statistics' inputs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StatsError {
    /// A percentile outside 0–100.
    #[error("percentile {0} is outside 0..=100")]
    BadPercentile(f64),
}

/// Median and spread of one metric over repetitions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

/// Summarizes the finite values; `None` if there are none.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// The nearest-rank percentile `p` (0–100) of `values`: the smallest value
/// with at least p% of the values at or below it. `None` for no values.
pub fn percentile(values: &[u64], p: f64) -> Result<Option<u64>, StatsError> {
    if !(0.0..=100.0).contains(&p) {
        return Err(StatsError::BadPercentile(p));
    }
    if values.is_empty() {
        return Ok(None);
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Ok(Some(v[rank.clamp(1, v.len()) - 1]))
}

/// The seven metrics, one `T` each: `Option<f64>` for one repetition
/// ([`RunMetrics`]), `Option<Summary>` for a configuration ([`Metrics`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MetricSet<T> {
    /// Guest to host, Mbit/s.
    pub tx_mbit_s: T,
    /// Host to guest, Mbit/s.
    pub rx_mbit_s: T,
    /// Median ping RTT, µs.
    pub rtt_p50_us: T,
    /// 99th percentile ping RTT, µs.
    pub rtt_p99_us: T,
    /// VMM CPU seconds (all threads) per GB moved.
    pub vmm_cpu_s_per_gb: T,
    /// VMM CPU seconds per GB, guest execution left out.
    pub vmm_nonguest_cpu_s_per_gb: T,
    /// Host CPU seconds (all CPUs) per GB moved.
    pub host_cpu_s_per_gb: T,
}

impl<T> MetricSet<T> {
    /// The values in table order (the order of the fields).
    pub fn values(&self) -> [&T; 7] {
        [
            &self.tx_mbit_s,
            &self.rx_mbit_s,
            &self.rtt_p50_us,
            &self.rtt_p99_us,
            &self.vmm_cpu_s_per_gb,
            &self.vmm_nonguest_cpu_s_per_gb,
            &self.host_cpu_s_per_gb,
        ]
    }

    /// The set whose metric `i` is `f(i)`, in the order of [`MetricSet::values`].
    fn from_fn(mut f: impl FnMut(usize) -> T) -> Self {
        MetricSet {
            tx_mbit_s: f(0),
            rx_mbit_s: f(1),
            rtt_p50_us: f(2),
            rtt_p99_us: f(3),
            vmm_cpu_s_per_gb: f(4),
            vmm_nonguest_cpu_s_per_gb: f(5),
            host_cpu_s_per_gb: f(6),
        }
    }
}

/// The metrics of one repetition; `None` where the data is missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunMetrics {
    /// Repetition number.
    pub rep: u32,
    /// Its metrics, serialized beside `rep`.
    #[serde(flatten)]
    pub m: MetricSet<Option<f64>>,
}

/// Finite or nothing: the report never carries NaN or infinity.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl RunMetrics {
    /// Derives the metrics of one measured repetition.
    pub fn from_run(r: &RunRecord) -> Self {
        let mbit = |bytes: u64, secs: f64| finite(bytes as f64 * 8.0 / secs / 1e6);
        let gb = (r.tx_bytes + r.rx_bytes) as f64 / 1e9;
        let per_gb = |ticks: Option<u64>| {
            let ticks = ticks?;
            (gb > 0.0)
                .then(|| ticks as f64 / r.clk_tck as f64 / gb)
                .and_then(finite)
        };
        let nonguest = match (r.vmm_cpu_ticks, r.vmm_guest_ticks) {
            (Some(all), Some(guest)) => Some(all.saturating_sub(guest)),
            _ => None,
        };
        let pct = |p| percentile(&r.rtt_us, p).ok().flatten().map(|v| v as f64);
        let m = MetricSet {
            tx_mbit_s: mbit(r.tx_bytes, r.tx_seconds),
            rx_mbit_s: mbit(r.rx_bytes, r.rx_seconds),
            rtt_p50_us: pct(50.0),
            rtt_p99_us: pct(99.0),
            vmm_cpu_s_per_gb: per_gb(r.vmm_cpu_ticks),
            vmm_nonguest_cpu_s_per_gb: per_gb(nonguest),
            host_cpu_s_per_gb: per_gb(r.host_cpu_ticks),
        };
        RunMetrics { rep: r.rep, m }
    }
}

/// Per-metric median and spread over a configuration's repetitions.
pub type Metrics = MetricSet<Option<Summary>>;

impl Metrics {
    fn from_runs(runs: &[RunMetrics]) -> Self {
        Metrics::from_fn(|i| {
            summarize(
                &runs
                    .iter()
                    .filter_map(|r| *r.m.values()[i])
                    .collect::<Vec<_>>(),
            )
        })
    }
}

/// Whether a configuration produced numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// At least one repetition was measured and nothing failed.
    Ok,
    /// It could not run here (reason given).
    Skipped,
    /// It failed (reason given).
    Failed,
}

/// One configuration's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigResult {
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
    pub metrics: Metrics,
    /// Each repetition's metrics, in repetition order.
    pub per_run: Vec<RunMetrics>,
}

/// The whole report: what `net.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Schema identifier.
    pub schema: &'static str,
    /// Free-form setup description.
    pub setup: BTreeMap<String, String>,
    /// One entry per configuration, in [`CONFIG_ORDER`] then by name.
    pub configurations: Vec<ConfigResult>,
}

impl Report {
    /// Groups the records by configuration and summarizes them.
    pub fn build(records: &[Record]) -> Result<Self, BenchError> {
        let mut setup = BTreeMap::new();
        let mut by_config: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for r in records {
            match r {
                Record::Setup(kv) => setup.extend(
                    kv.iter()
                        .filter(|(k, _)| *k != "record")
                        .map(|(k, v)| (k.clone(), v.clone())),
                ),
                // The storage benchmark's records: see super::storage.
                Record::Blk(_) | Record::Cpu(_) => {}
                _ => by_config
                    .entry(r.config().unwrap_or_default())
                    .or_default()
                    .push(r),
            }
        }
        let rank = |name: &str| {
            CONFIG_ORDER
                .iter()
                .position(|c| *c == name)
                .unwrap_or(CONFIG_ORDER.len())
        };
        let mut names: Vec<&str> = by_config.keys().copied().collect();
        names.sort_by_key(|n| (rank(n), *n));
        let configurations = names
            .into_iter()
            .map(|name| config_result(name, &by_config[name]))
            .collect();
        Ok(Report {
            schema: "vfio-vmm-bench-net/1",
            setup,
            configurations,
        })
    }

    /// `net.json`, pretty-printed.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// What keeps this report from being complete for `--strict`: a required
    /// configuration that is missing, skipped, failed, has fewer than
    /// `min_reps` repetitions, or lacks a positive throughput, an RTT or a CPU figure.
    pub fn problems(&self, require: &[String], min_reps: usize) -> Vec<String> {
        let mut out = Vec::new();
        for name in require {
            let Some(c) = self.configurations.iter().find(|c| &c.name == name) else {
                out.push(format!("{name}: no result"));
                continue;
            };
            if c.status != Status::Ok {
                let word = if c.status == Status::Skipped {
                    "skipped"
                } else {
                    "failed"
                };
                out.push(format!(
                    "{name}: {word}: {}",
                    c.reason.as_deref().unwrap_or("no reason given")
                ));
                continue;
            }
            if c.runs < min_reps {
                out.push(format!("{name}: {} of {min_reps} repetitions", c.runs));
            }
            for r in &c.per_run {
                let checks = [
                    ("guest->host throughput", r.m.tx_mbit_s.filter(|v| *v > 0.0)),
                    ("host->guest throughput", r.m.rx_mbit_s.filter(|v| *v > 0.0)),
                    ("RTT p99", r.m.rtt_p99_us),
                    ("VMM CPU", r.m.vmm_cpu_s_per_gb),
                    ("host CPU", r.m.host_cpu_s_per_gb),
                ];
                for (what, v) in checks {
                    if v.is_none() {
                        out.push(format!("{name} rep {}: no {what}", r.rep));
                    }
                }
            }
        }
        out
    }

    /// `net.md`: a header saying what was measured and one table row per configuration.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("# Network benchmark\n\n");
        let get = |k: &str| self.setup.get(k).map(String::as_str);
        if let Some(host) = get("host") {
            let _ = writeln!(s, "Host: {host}.");
        }
        let mut what = Vec::new();
        if let (Some(c), Some(m)) = (get("guest_cpus"), get("guest_memory_mib")) {
            what.push(format!("guest with {c} vCPU(s) and {m} MiB"));
        }
        if let Some(t) = get("iperf3_seconds") {
            what.push(format!(
                "iperf3 TCP for {t} s each way ({})",
                get("iperf3").unwrap_or("iperf3")
            ));
        }
        if let Some(p) = get("pings") {
            what.push(format!(
                "{p} pings at {} ms intervals",
                get("ping_interval_ms").unwrap_or("?")
            ));
        }
        if !what.is_empty() {
            let _ = writeln!(s, "Each configuration: {}.", what.join(", "));
        }
        s.push_str(
            "Numbers are the median over repetitions with the spread (min–max) in brackets; \
             tx is guest to host, rx host to guest; CPU is seconds per GB moved by iperf3.\n\n",
        );
        s.push_str(&self.table());
        s
    }

    /// The Markdown table alone.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| configuration | VMM | runs | tx Mbit/s | rx Mbit/s | RTT p50 µs | RTT p99 µs \
             | VMM CPU s/GB | VMM CPU w/o guest s/GB | host CPU s/GB |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for c in &self.configurations {
            let vmm = c.vmm.as_deref().unwrap_or("–");
            if c.status != Status::Ok && c.runs == 0 {
                let word = if c.status == Status::Skipped {
                    "skipped"
                } else {
                    "FAILED"
                };
                let reason = escape(c.reason.as_deref().unwrap_or(""));
                let _ = writeln!(
                    s,
                    "| {} | {vmm} | 0 | {word}: {reason} | | | | | | |",
                    c.name
                );
                continue;
            }
            let cells = c
                .metrics
                .values()
                .map(|x| x.map_or_else(|| "–".to_string(), |x| cell(&x)));
            let name = match (c.status, &c.reason) {
                (Status::Failed, Some(r)) => format!("{} (FAILED: {})", c.name, escape(r)),
                _ => c.name.clone(),
            };
            let _ = writeln!(s, "| {name} | {vmm} | {} | {} |", c.runs, cells.join(" | "));
        }
        s
    }
}

fn config_result(name: &str, records: &[&Record]) -> ConfigResult {
    let mut runs: Vec<&RunRecord> = records
        .iter()
        .filter_map(|r| match r {
            Record::Run(run) => Some(run),
            _ => None,
        })
        .collect();
    runs.sort_by_key(|r| r.rep);
    let reason_of = |want_fail: bool| {
        records.iter().find_map(|r| match r {
            Record::Fail { reason, .. } if want_fail => Some(reason.clone()),
            Record::Skip { reason, .. } if !want_fail => Some(reason.clone()),
            _ => None,
        })
    };
    let (status, reason) = if let Some(r) = reason_of(true) {
        (Status::Failed, Some(r))
    } else if runs.is_empty() {
        (Status::Skipped, reason_of(false))
    } else {
        (Status::Ok, None)
    };
    let per_run: Vec<RunMetrics> = runs.iter().map(|r| RunMetrics::from_run(r)).collect();
    ConfigResult {
        name: name.to_string(),
        vmm: runs.first().map(|r| r.vmm.clone()),
        status,
        reason,
        runs: runs.len(),
        metrics: Metrics::from_runs(&per_run),
        per_run,
    }
}

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// "median (min–max)", or the median alone for a single value.
fn cell(s: &Summary) -> String {
    if s.n < 2 {
        num(s.median)
    } else {
        format!("{} ({}–{})", num(s.median), num(s.min), num(s.max))
    }
}

/// Keeps free text from breaking a table row.
fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &str, rep: u32, tx_bytes: u64, rtt_us: Vec<u64>) -> Record {
        Record::Run(RunRecord {
            config: config.into(),
            vmm: "vfio-vmm".into(),
            rep,
            tx_bytes,
            tx_seconds: 2.0,
            rx_bytes: 500_000_000,
            rx_seconds: 4.0,
            rtt_us,
            clk_tck: 100,
            vmm_cpu_ticks: Some(300),
            vmm_guest_ticks: Some(100),
            host_cpu_ticks: Some(450),
        })
    }

    #[test]
    fn median_takes_the_middle_of_unsorted_values_and_averages_an_even_pair() {
        let s = summarize(&[9.0, 1.0, 5.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (5.0, 1.0, 9.0, 3));
        assert_eq!(summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
        // NaN and infinity are dropped, not propagated.
        let s = summarize(&[f64::NAN, 2.0, f64::INFINITY]).unwrap();
        assert_eq!((s.median, s.n), (2.0, 1));
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&v, 50.0), Ok(Some(50)));
        assert_eq!(percentile(&v, 99.0), Ok(Some(99)));
        assert_eq!(percentile(&v, 100.0), Ok(Some(100)));
        assert_eq!(percentile(&v, 0.0), Ok(Some(1)));
        // With 10 samples, p99 is the largest; p50 the 5th smallest.
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000];
        assert_eq!(percentile(&v, 99.0), Ok(Some(1000)));
        assert_eq!(percentile(&v, 50.0), Ok(Some(50)));
        assert_eq!(percentile(&[], 50.0), Ok(None));
        assert_eq!(percentile(&v, 101.0), Err(StatsError::BadPercentile(101.0)));
    }

    #[test]
    fn run_metrics_convert_units() {
        let Record::Run(r) = run("x", 1, 250_000_000, vec![100, 300, 200]) else {
            unreachable!()
        };
        let m = RunMetrics::from_run(&r).m;
        // 250 MB in 2 s = 1000 Mbit/s; 500 MB in 4 s = 1000 Mbit/s.
        assert_eq!((m.tx_mbit_s, m.rx_mbit_s), (Some(1000.0), Some(1000.0)));
        assert_eq!((m.rtt_p50_us, m.rtt_p99_us), (Some(200.0), Some(300.0)));
        // 0.75 GB moved; 3 s of VMM CPU, 1 s of it guest, 4.5 s of host CPU.
        assert_eq!(m.vmm_cpu_s_per_gb, Some(4.0));
        assert_eq!(m.vmm_nonguest_cpu_s_per_gb, Some(2.0 / 0.75));
        assert_eq!(m.host_cpu_s_per_gb, Some(6.0));
    }

    #[test]
    fn nothing_moved_gives_no_cpu_per_gb_rather_than_infinity() {
        let Record::Run(mut r) = run("x", 1, 0, vec![]) else {
            unreachable!()
        };
        r.rx_bytes = 0;
        let m = RunMetrics::from_run(&r);
        assert_eq!(
            (m.m.tx_mbit_s, m.m.vmm_cpu_s_per_gb, m.m.rtt_p99_us),
            (Some(0.0), None, None)
        );
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
    }

    fn sample() -> Report {
        Report::build(&[
            Record::Skip {
                config: "qemu-virtio".into(),
                reason: "qemu-system-x86_64 is not installed".into(),
            },
            run("virtio-net", 2, 500_000_000, vec![90]),
            run("virtio-net", 1, 250_000_000, vec![100]),
            run("virtio-net", 3, 1_000_000_000, vec![110]),
            run("passthrough", 1, 250_000_000, vec![50]),
            Record::Fail {
                config: "qemu-e1000e".into(),
                reason: "L2 scenario script exited 1 | boom".into(),
            },
        ])
        .unwrap()
    }

    #[test]
    fn report_orders_configurations_and_summarizes_repetitions() {
        let r = sample();
        let names: Vec<&str> = r.configurations.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["passthrough", "virtio-net", "qemu-virtio", "qemu-e1000e"]
        );
        let v = &r.configurations[1];
        assert_eq!((v.status, v.runs), (Status::Ok, 3));
        assert_eq!(
            v.per_run.iter().map(|p| p.rep).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // tx: 1000, 2000, 4000 Mbit/s.
        assert_eq!(
            v.metrics.tx_mbit_s,
            Some(Summary {
                median: 2000.0,
                min: 1000.0,
                max: 4000.0,
                n: 3
            })
        );
        assert_eq!(r.configurations[2].status, Status::Skipped);
        assert_eq!(r.configurations[3].status, Status::Failed);
    }

    #[test]
    fn table_shows_median_spread_and_reasons_in_their_columns() {
        let t = sample().table();
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 2 + 4);
        let cols = |row: &str| {
            row.split(" | ")
                .map(str::trim)
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let header = cols(rows[0]);
        let virtio = cols(rows[3]);
        assert_eq!(header.len(), virtio.len());
        let at = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(virtio[at("tx Mbit/s")], "2000 (1000–4000)");
        assert_eq!(virtio[at("RTT p50 µs")], "100 (90.0–110)");
        assert_eq!(virtio[at("runs")], "3");
        // A single repetition has no spread to show.
        assert_eq!(cols(rows[2])[at("tx Mbit/s")], "1000");
        assert_eq!(
            (num(0.0), num(0.1234), num(5.678), num(56.78), num(5678.9)),
            (
                "0".into(),
                "0.123".into(),
                "5.68".into(),
                "56.8".into(),
                "5679".into()
            )
        );
        assert!(
            rows[4].contains("skipped: qemu-system-x86_64 is not installed"),
            "{}",
            rows[4]
        );
        // The reason's '|' must not open a new column.
        assert!(
            rows[5].contains("FAILED: L2 scenario script exited 1 \\| boom"),
            "{}",
            rows[5]
        );
    }

    #[test]
    fn strict_check_lists_every_gap() {
        let r = sample();
        let require: Vec<String> = [
            "passthrough",
            "virtio-net",
            "qemu-virtio",
            "qemu-passthrough",
        ]
        .map(String::from)
        .into();
        let p = r.problems(&require, 3);
        assert_eq!(
            p,
            [
                "passthrough: 1 of 3 repetitions",
                "qemu-virtio: skipped: qemu-system-x86_64 is not installed",
                "qemu-passthrough: no result"
            ]
        );
        assert!(r.problems(&["virtio-net".to_string()], 3).is_empty());
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        assert_eq!(v["schema"], "vfio-vmm-bench-net/1");
        let c = &v["configurations"][1];
        assert_eq!(c["name"], "virtio-net");
        assert_eq!(c["status"], "ok");
        assert_eq!(c["metrics"]["tx_mbit_s"]["median"], 2000.0);
        assert_eq!(c["per_run"][0]["rep"], 1);
        // Each repetition's metrics sit beside "rep", not in an object of their own.
        assert_eq!(c["per_run"][0]["tx_mbit_s"], 1000.0);
        assert!(c["per_run"][0].get("m").is_none());
        assert_eq!(v["configurations"][2]["status"], "skipped");
        assert!(v["configurations"][2]["metrics"]["tx_mbit_s"].is_null());
    }
}
