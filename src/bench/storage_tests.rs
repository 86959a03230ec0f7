use super::super::{parse_record, BenchError};
use super::*;

const BLK: &str = "record=blk\nconfig=virtio-blk\nvmm=vfio-vmm\nrep=1\nrr_iops=2000\n\
    rr_p50_us=400\nrr_p99_us=1500\nsr_kib_s=195312.5\nsw_kib_s=97656.25\n";

fn blk(config: &str, vmm: &str, rep: u32, rr_iops: f64, sr_kib_s: f64) -> Record {
    Record::Blk(BlkRecord {
        config: config.into(),
        vmm: vmm.into(),
        rep,
        rr_iops,
        rr_p50_us: 400.0,
        rr_p99_us: 1500.0,
        sr_kib_s,
        sw_kib_s: 97_656.25,
    })
}

fn cpu(config: &str, seconds: f64) -> Record {
    Record::Cpu(CpuRecord {
        config: config.into(),
        mib: 32,
        seconds,
    })
}

fn sample() -> StorageReport {
    StorageReport::build(&[
        Record::Setup([("host".to_string(), "h".to_string())].into()),
        blk("qemu-virtio-blk", "qemu", 1, 4000.0, 195_312.5),
        blk("virtio-blk", "vfio-vmm", 2, 3000.0, 97_656.25),
        blk("virtio-blk", "vfio-vmm", 1, 1000.0, 195_312.5),
        blk("virtio-blk", "vfio-vmm", 3, 2000.0, 390_625.0),
        cpu("native", 2.0),
        cpu("virtio-blk", 2.5),
        cpu("qemu-virtio-blk", 3.0),
        Record::Fail {
            config: "nvme-passthrough".into(),
            reason: "vfio-vmm exited with status 1 | no BAR".into(),
        },
        blk("qemu-nvme-passthrough", "qemu", 1, 9000.0, 1.0),
    ])
}

#[test]
fn parses_blk_and_cpu_records() {
    let Record::Blk(b) = parse_record("virtio-blk-1.txt", BLK).unwrap() else {
        panic!("not a blk record")
    };
    assert_eq!((b.rep, b.rr_iops, b.sr_kib_s), (1, 2000.0, 195_312.5));
    let r = parse_record(
        "native-cpu.txt",
        "record=cpu\nconfig=native\nvmm=none\nmib=32\nseconds=1.25\n",
    );
    assert_eq!(r.unwrap(), cpu("native", 1.25));
}

#[test]
fn bad_values_name_the_key() {
    for (from, to, key) in [
        ("rr_iops=2000", "rr_iops=-1", "rr_iops"),
        ("sr_kib_s=195312.5", "sr_kib_s=NaN", "sr_kib_s"),
        ("rr_p99_us=1500", "rr_p99_us=", "rr_p99_us"),
    ] {
        let e = parse_record("a.txt", &BLK.replace(from, to)).unwrap_err();
        assert!(
            matches!(e, BenchError::BadValue { key: ref k, .. } if k == key),
            "{e}"
        );
    }
    let e = parse_record("a.txt", &BLK.replace("sw_kib_s=97656.25\n", "")).unwrap_err();
    assert_eq!(e.to_string(), "a.txt: missing key 'sw_kib_s'");
    let e = parse_record("c.txt", "record=cpu\nconfig=x\nmib=1\nseconds=0\n").unwrap_err();
    assert!(
        matches!(e, BenchError::BadValue { key: ref k, .. } if k == "seconds"),
        "{e}"
    );
}

#[test]
fn report_orders_configurations_and_converts_units() {
    let r = sample();
    let names: Vec<&str> = r.configurations.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nvme-passthrough",
            "virtio-blk",
            "qemu-virtio-blk",
            "qemu-nvme-passthrough"
        ]
    );
    let v = &r.configurations[1];
    assert_eq!((v.status, v.runs), (Status::Ok, 3));
    let iops = v.metrics.rr_iops.unwrap();
    assert_eq!(
        (iops.median, iops.min, iops.max, iops.n),
        (2000.0, 1000.0, 3000.0, 3)
    );
    // 195312.5 KiB/s = 200 MB/s (10^6 B).
    assert_eq!(v.metrics.seq_read_mb_s.unwrap().median, 200.0);
    assert_eq!(v.metrics.seq_write_mb_s.unwrap().median, 100.0);
    assert_eq!((v.cpu_seconds, v.cpu_vs_native), (Some(2.5), Some(1.25)));
    assert_eq!(r.native_cpu_seconds, Some(2.0));
    assert_eq!(r.configurations[0].status, Status::Failed);
}

#[test]
fn ratios_are_vfio_vmm_over_qemu_and_missing_without_both() {
    let r = sample();
    let v = &r.ratios[0];
    assert_eq!(
        (v.numerator, v.denominator),
        ("virtio-blk", "qemu-virtio-blk")
    );
    assert_eq!(v.rr_iops, Some(0.5));
    assert_eq!(v.seq_read_mb_s, Some(1.0));
    // nvme-passthrough failed: no ratio rather than zero.
    assert_eq!(r.ratios[1].rr_iops, None);
}

#[test]
fn markdown_has_the_table_the_cpu_row_and_the_ratios() {
    let md = sample().to_markdown();
    assert!(
        md.contains(
            "| nvme-passthrough | – | 0 | FAILED: vfio-vmm exited with status 1 \\| no BAR |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| virtio-blk | vfio-vmm | 3 | 2000 (1000–3000) | 400 (400–400) | 1500 (1500–1500) | 200 (100–400) | 100 (100–100) |"),
        "{md}"
    );
    assert!(
        md.contains("| CPU loop s | 2.00 | – | 2.50 (×1.25) | 3.00 (×1.50) | – |"),
        "{md}"
    );
    assert!(
        md.contains("| virtio-blk (virtio-blk / qemu-virtio-blk) | 0.50 | 1.00 | 1.00 |"),
        "{md}"
    );
}

#[test]
fn strict_check_allows_what_is_not_required() {
    let r = sample();
    let all: Vec<String> = BLK_ORDER.map(String::from).into();
    let p = r.problems(&all, 1);
    assert_eq!(
        p,
        [
            "nvme-passthrough: FAILED: vfio-vmm exited with status 1 | no BAR",
            "qemu-nvme: no result",
            "qemu-nvme-passthrough: no CPU loop time",
        ]
    );
    assert!(r.problems(&["virtio-blk".to_string()], 3).is_empty());
    assert_eq!(
        r.problems(&["qemu-virtio-blk".to_string()], 2),
        ["qemu-virtio-blk: 1 of 2 repetitions"]
    );
}

#[test]
fn json_and_svg_render() {
    let r = sample();
    let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(v["schema"], "vfio-vmm-bench-blk/1");
    assert_eq!(
        v["configurations"][1]["metrics"]["rr_iops"]["median"],
        2000.0
    );
    assert_eq!(v["ratios"][0]["rr_iops"], 0.5);
    assert!(v["ratios"][1]["rr_iops"].is_null());
    let svg = super::super::chart::render_blk_svg(&r).unwrap();
    for label in [
        "nvme-passthrough (failed)",
        "qemu-virtio-blk",
        "MB/s",
        "IOPS",
    ] {
        assert!(svg.contains(label), "missing {label}");
    }
}
