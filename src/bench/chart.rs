//! `net.svg`: throughput (guest to host and host to guest) and ping p99 per
//! configuration; `blk.svg`: sequential MB/s and random read IOPS per
//! configuration. Bars at the median with min–max whiskers, drawn with
//! plotters' SVG backend.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Report, Status, Summary};
use super::storage::StorageReport;

/// Errors drawing the chart.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// plotters failed to lay out or draw an element.
    #[error("cannot draw the chart: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 720;
const TX: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const RX: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const RTT: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

const READ: RGBColor = RGBColor(0x94, 0x67, 0xbd);
const WRITE: RGBColor = RGBColor(0x8c, 0x56, 0x4b);
const IOPS: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// One group of bars: a configuration's label and its series' summaries.
struct Group {
    label: String,
    values: Vec<Option<Summary>>,
}

/// Renders the report's chart as an SVG document.
pub fn render_svg(report: &Report) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let title = match report.setup.get("host") {
            Some(h) => format!("Network benchmark, median with min–max ({h})"),
            None => "Network benchmark, median with min–max".to_string(),
        };
        let root = root.titled(&title, ("sans-serif", 16)).map_err(draw_err)?;
        let (top, bottom) = root.split_vertically((HEIGHT - 30) / 2);
        let throughput: Vec<Group> = report
            .configurations
            .iter()
            .map(|c| Group {
                label: label(&c.name, c.status),
                values: vec![c.metrics.tx_mbit_s, c.metrics.rx_mbit_s],
            })
            .collect();
        let latency: Vec<Group> = report
            .configurations
            .iter()
            .map(|c| Group {
                label: label(&c.name, c.status),
                values: vec![c.metrics.rtt_p99_us],
            })
            .collect();
        bars(
            &top,
            "TCP throughput",
            "Mbit/s",
            &[("guest → host", TX), ("host → guest", RX)],
            &throughput,
        )?;
        bars(
            &bottom,
            "ping round trip, p99",
            "µs",
            &[("p99", RTT)],
            &latency,
        )?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// A configuration's label under its bars.
fn label(name: &str, status: Status) -> String {
    match status {
        Status::Ok => name.to_string(),
        Status::Skipped => format!("{name} (skipped)"),
        Status::Failed => format!("{name} (failed)"),
    }
}

/// Renders the storage report's chart as an SVG document.
pub fn render_blk_svg(report: &StorageReport) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let title = match report.setup.get("host") {
            Some(h) => format!("Storage benchmark, median with min–max ({h})"),
            None => "Storage benchmark, median with min–max".to_string(),
        };
        let root = root.titled(&title, ("sans-serif", 16)).map_err(draw_err)?;
        let (top, bottom) = root.split_vertically((HEIGHT - 30) / 2);
        let groups = |f: fn(&super::storage::BlkMetrics) -> Vec<Option<Summary>>| -> Vec<Group> {
            report
                .configurations
                .iter()
                .map(|c| Group {
                    label: label(&c.name, c.status),
                    values: f(&c.metrics),
                })
                .collect()
        };
        let seq = groups(|m| vec![m.seq_read_mb_s, m.seq_write_mb_s]);
        let iops = groups(|m| vec![m.rr_iops]);
        let series = [("1 MiB read", READ), ("1 MiB write", WRITE)];
        bars(&top, "sequential throughput", "MB/s", &series, &seq)?;
        bars(
            &bottom,
            "4 KiB random reads",
            "IOPS",
            &[("IOPS", IOPS)],
            &iops,
        )?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The chart's coordinates: group index across, the series' unit up.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws grouped bars with whiskers into `area`: one group per configuration,
/// one bar per series.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    unit: &str,
    series: &[(&str, RGBColor)],
    groups: &[Group],
) -> Result<(), ChartError> {
    let mut chart = axes(area, caption, unit, groups)?;
    let width = 0.7 / series.len() as f64;
    for (j, (name, color)) in series.iter().enumerate() {
        let x0 = |i: usize| i as f64 - 0.35 + j as f64 * width;
        let values: Vec<(f64, Summary)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.values.get(j).copied().flatten().map(|s| (x0(i), s)))
            .collect();
        series_bars(&mut chart, name, *color, width, &values)?;
        whiskers(&mut chart, width, &values)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The chart in `area` with its caption, axes and group labels, tall enough
/// for the highest whisker.
fn axes<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    unit: &str,
    groups: &[Group],
) -> Result<Chart<'a, 'b>, ChartError> {
    let n = groups.len().max(1);
    let top = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().map(|s| s.max))
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(draw_err)?;
    let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
    let name_at = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            labels
                .get(i as usize)
                .map_or_else(String::new, |s| s.to_string())
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&name_at)
        .x_label_style(("sans-serif", 12))
        .y_label_formatter(&|y| super::report::num(*y))
        .y_desc(unit)
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// One series' bars at the medians (`values` are the bars' left edges and
/// summaries), with its legend entry.
fn series_bars(
    chart: &mut Chart<'_, '_>,
    name: &str,
    color: RGBColor,
    width: f64,
    values: &[(f64, Summary)],
) -> Result<(), ChartError> {
    chart
        .draw_series(
            values.iter().map(|&(x, s)| {
                Rectangle::new([(x, 0.0), (x + width * 0.9, s.median)], color.filled())
            }),
        )
        .map_err(draw_err)?
        .label(name)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    Ok(())
}

/// Whiskers from min to max, capped at both ends, on the bars of `values`
/// measured more than once.
fn whiskers(
    chart: &mut Chart<'_, '_>,
    width: f64,
    values: &[(f64, Summary)],
) -> Result<(), ChartError> {
    let repeated = || {
        values
            .iter()
            .filter(|(_, s)| s.n > 1)
            .map(move |&(x, s)| (x + width * 0.45, s))
    };
    chart
        .draw_series(
            repeated().map(|(x, s)| {
                PathElement::new(vec![(x, s.min), (x, s.max)], BLACK.stroke_width(1))
            }),
        )
        .map_err(draw_err)?;
    for cap in [|s: &Summary| s.min, |s: &Summary| s.max] {
        chart
            .draw_series(repeated().map(|(x, s)| {
                PathElement::new(
                    vec![(x - width * 0.2, cap(&s)), (x + width * 0.2, cap(&s))],
                    BLACK.stroke_width(1),
                )
            }))
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Record, RunRecord};
    use super::*;

    fn report() -> Report {
        let run = |config: &str, rep, tx_bytes| {
            Record::Run(RunRecord {
                config: config.into(),
                vmm: "qemu".into(),
                rep,
                tx_bytes,
                tx_seconds: 1.0,
                rx_bytes: tx_bytes / 2,
                rx_seconds: 1.0,
                rtt_us: vec![100, 200, 900],
                clk_tck: 100,
                vmm_cpu_ticks: None,
                vmm_guest_ticks: None,
                host_cpu_ticks: None,
            })
        };
        Report::build(&[
            run("passthrough", 1, 100_000_000),
            run("passthrough", 2, 120_000_000),
            run("qemu-virtio", 1, 50_000_000),
            Record::Skip {
                config: "qemu-e1000e".into(),
                reason: "no qemu".into(),
            },
        ])
        .unwrap()
    }

    #[test]
    fn svg_has_one_bar_per_measured_value_and_labels_every_configuration() {
        let svg = render_svg(&report()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for label in [
            "passthrough",
            "qemu-virtio",
            "qemu-e1000e (skipped)",
            "guest → host",
            "Mbit/s",
        ] {
            assert!(svg.contains(label), "missing {label}");
        }
        // Bars are filled rects in the series colours: 2 configurations x (tx, rx)
        // plus 2 p99 bars, plus one legend swatch per series.
        let count = |c: RGBColor| {
            svg.matches(&format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2))
                .count()
        };
        assert_eq!((count(TX), count(RX), count(RTT)), (2 + 1, 2 + 1, 2 + 1));
    }

    #[test]
    fn an_all_skipped_report_still_renders() {
        let r = Report::build(&[Record::Skip {
            config: "passthrough".into(),
            reason: "no NIC".into(),
        }])
        .unwrap();
        let svg = render_svg(&r).unwrap();
        assert!(svg.contains("passthrough (skipped)"));
    }
}
