//! Fuzz target of [`VmConfig::from_json`]: a valid cloud-hypervisor
//! `VmConfig` with every section, mutated structurally (values replaced by
//! values of other types and edge numbers, keys dropped or added) and as
//! text (bytes flipped, cut short). A seeded structured random test (see
//! `pci/src/tests/fuzz_support.rs`).

use arbitrary::Unstructured;
use serde_json::{json, Value};

use super::tests::fake_bzimage;
use super::VmConfig;
use crate::fuzz_support::run;

/// A config with every section, its files made in the temp directory.
fn seed(kernel: &std::path::Path, disk: &std::path::Path) -> Value {
    let dir = std::env::temp_dir();
    json!({
        "payload": {"kernel": kernel, "cmdline": "console=ttyS0", "initramfs": null},
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
        "memory": {"size": 268435456u64, "hugepages": false, "mergeable": false},
        "serial": {"mode": "File", "file": dir.join("fuzz-serial.log")},
        "console": {"mode": "Off"},
        "devices": [{"path": "/sys/bus/pci/devices/0000:01:00.0", "id": "nic0", "rombar": false}],
        "net": [{"tap": "tap0", "mac": "02:00:00:00:00:01", "id": "net0"}],
        "disks": [{"path": disk, "readonly": true, "direct": false, "id": "root", "serial": "root"}],
        "vsock": {"cid": 3, "socket": dir.join("fuzz.vsock"), "id": "vsock0"},
        "rng": {"src": "/dev/urandom"},
        "pit": {"reinject": false}
    })
}

/// A value a client might send where another was expected.
fn odd_value(u: &mut Unstructured) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<u64>()?),
        4 => json!(u
            .arbitrary::<f64>()
            .map(|f| if f.is_finite() { f } else { 0.5 })?),
        5 => json!([0, 1, 2, 3, 255, 256, 65536, 1u64 << 32, u64::MAX][u.choose_index(9)?]),
        6 => Value::String(u.arbitrary()?),
        7 => json!(
            ["", "Off", "Tty", "File", "Null", "Raw", "Qcow2", "01:00.0", "a,b=c", "\n"]
                [u.choose_index(10)?]
        ),
        8 => json!([]),
        _ => json!({}),
    })
}

/// Replaces, drops or adds one field somewhere in `v`.
fn mutate(v: &mut Value, u: &mut Unstructured) -> arbitrary::Result<()> {
    match v {
        Value::Object(map) if !map.is_empty() && u.ratio(3u8, 4)? => {
            let key = map
                .keys()
                .nth(u.choose_index(map.len())?)
                .cloned()
                .unwrap_or_default();
            match u.int_in_range(0u8..=3)? {
                0 => drop(map.remove(&key)),
                1 => drop(map.insert(key, odd_value(u)?)),
                _ => mutate(map.get_mut(&key).unwrap_or(&mut Value::Null), u)?,
            }
        }
        Value::Object(map) => drop(map.insert(u.arbitrary()?, odd_value(u)?)),
        Value::Array(items) if !items.is_empty() && u.arbitrary()? => {
            let i = u.choose_index(items.len())?;
            mutate(&mut items[i], u)?;
        }
        Value::Array(items) => items.push(odd_value(u)?),
        other => *other = odd_value(u)?,
    }
    Ok(())
}

/// Any JSON text gives a config that round-trips through `to_json`, or an
/// error whose message is one line.
#[test]
fn fuzz_config_json() {
    let kernel = fake_bzimage("fuzz");
    let disk = kernel.with_extension("disk");
    std::fs::write(&disk, vec![0u8; 1 << 16]).unwrap();
    let base = seed(&kernel, &disk);
    assert!(
        VmConfig::from_json(&base.to_string()).is_ok(),
        "the seed is valid"
    );
    let mut accepted = 0u64;
    run("fuzz_config_json", 3000, |u: &mut Unstructured| {
        let mut v = base.clone();
        for _ in 0..u.int_in_range(1u8..=4)? {
            mutate(&mut v, u)?;
        }
        let mut text = v.to_string().into_bytes();
        if u.ratio(1u8, 4)? {
            let at = u.choose_index(text.len())?;
            text[at] = u.arbitrary()?;
            text.truncate(text.len() - u.choose_index(text.len() / 8 + 1)?);
        }
        let text = String::from_utf8_lossy(&text);
        match VmConfig::from_json(&text) {
            Ok(c) => {
                accepted += 1;
                assert_eq!(VmConfig::from_json(&c.to_json()), Ok(c), "{text}");
            }
            Err(e) => assert!(
                !e.to_string().contains('\n'),
                "two lines: {e:?} from {text}"
            ),
        }
        Ok(())
    });
    assert!(accepted > 0, "some mutations stay valid");
    std::fs::remove_file(kernel).unwrap();
    std::fs::remove_file(disk).unwrap();
}
