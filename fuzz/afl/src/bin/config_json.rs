//! AFL target: the bytes are a JSON VmConfig; it is accepted and
//! round-trips through `to_json`, or refused with a one-line error.

use vfio_vmm::config::VmConfig;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        match VmConfig::from_json(&text) {
            Ok(c) => assert_eq!(VmConfig::from_json(&c.to_json()), Ok(c)),
            Err(e) => assert!(!e.to_string().contains('\n'), "{e:?}"),
        }
    });
}
