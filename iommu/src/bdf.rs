//! PCI addresses (`DOMAIN:BUS:DEVICE.FUNCTION`, "BDF"): parsing what users type and
//! printing the canonical form sysfs uses (`0000:01:00.0`).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Why a PCI address given by the user could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BdfError {
    /// The text does not have the `[DOMAIN:]BUS:DEVICE.FUNCTION` shape or holds non-hex digits.
    #[error(
        "malformed PCI address '{0}': expected [DOMAIN:]BUS:DEVICE.FUNCTION in hex, \
         like 0000:01:00.0 or 01:00.0 (`vfio-vmm host list` shows the addresses on this host)"
    )]
    Malformed(String),
    /// A field is well-formed hex but out of the range PCI allows.
    #[error("PCI address '{text}': {field} {value:#x} is out of range (at most {max:#x})")]
    OutOfRange {
        /// The address as given.
        text: String,
        /// Which field is out of range ("bus", "device" or "function").
        field: &'static str,
        /// The value given.
        value: u32,
        /// The largest value allowed.
        max: u32,
    },
}

/// A PCI function address. Ordering is by domain, bus, device, function, as `lspci` sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// PCI segment (domain). Usually 0; VMD controllers use values above 0xffff.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl Bdf {
    /// Builds an address, rejecting device numbers above 31 and function numbers above 7.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Result<Self, BdfError> {
        let text = format!("{domain:04x}:{bus:02x}:{device:02x}.{function:x}");
        check_range(&text, "device", u32::from(device), 0x1f)?;
        check_range(&text, "function", u32::from(function), 0x7)?;
        Ok(Bdf {
            domain,
            bus,
            device,
            function,
        })
    }
}

fn check_range(text: &str, field: &'static str, value: u32, max: u32) -> Result<(), BdfError> {
    if value > max {
        return Err(BdfError::OutOfRange {
            text: text.to_string(),
            field,
            value,
            max,
        });
    }
    Ok(())
}

fn hex_field(part: &str, max_digits: usize, whole: &str) -> Result<u32, BdfError> {
    let malformed = || BdfError::Malformed(whole.to_string());
    if part.is_empty() || part.len() > max_digits || !part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    u32::from_str_radix(part, 16).map_err(|_| malformed())
}

impl FromStr for Bdf {
    type Err = BdfError;

    /// Accepts `DOMAIN:BUS:DEVICE.FUNCTION` and `BUS:DEVICE.FUNCTION` (domain 0), in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let malformed = || BdfError::Malformed(s.to_string());
        let (head, function) = text.rsplit_once('.').ok_or_else(malformed)?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => (0, *bus, *device),
            [domain, bus, device] => (hex_field(domain, 8, s)?, *bus, *device),
            _ => return Err(malformed()),
        };
        let bus = hex_field(bus, 2, s)?;
        let device = hex_field(device, 2, s)?;
        let function = hex_field(function, 1, s)?;
        check_range(s, "device", device, 0x1f)?;
        check_range(s, "function", function, 0x7)?;
        // The range checks above (and the two-digit limit on the bus) make these casts lossless.
        Ok(Bdf {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for Bdf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_means_domain_zero() {
        let bdf: Bdf = "01:00.0".parse().unwrap();
        assert_eq!(bdf.to_string(), "0000:01:00.0");
    }

    #[test]
    fn full_form_round_trips_and_ignores_case() {
        let bdf: Bdf = "0000:AF:1f.7".parse().unwrap();
        assert_eq!(bdf, Bdf::new(0, 0xaf, 0x1f, 7).unwrap());
        assert_eq!(bdf.to_string(), "0000:af:1f.7");
    }

    #[test]
    fn vmd_domains_above_ffff_are_accepted() {
        let bdf: Bdf = "10000:e1:00.0".parse().unwrap();
        assert_eq!(bdf.to_string(), "10000:e1:00.0");
    }

    #[test]
    fn malformed_addresses_are_rejected_with_a_hint() {
        for bad in [
            "",
            "01:00",
            "1:2:3:4.0",
            "0000:01:00.x",
            "zz:00.0",
            "001:00.0",
            "01:00.0.1",
        ] {
            let err = bad.parse::<Bdf>().unwrap_err();
            assert!(matches!(err, BdfError::Malformed(_)), "{bad}: {err}");
            assert!(err.to_string().contains("0000:01:00.0"), "{err}");
        }
    }

    #[test]
    fn device_and_function_ranges_are_enforced() {
        let err = "00:20.0".parse::<Bdf>().unwrap_err();
        assert!(
            matches!(
                err,
                BdfError::OutOfRange {
                    field: "device",
                    ..
                }
            ),
            "{err}"
        );
        let err = "00:00.8".parse::<Bdf>().unwrap_err();
        assert!(
            matches!(
                err,
                BdfError::OutOfRange {
                    field: "function",
                    ..
                }
            ),
            "{err}"
        );
    }
}
