//! Memory sizes as people write and read them: one grammar for every size a
//! user gives (`run --memory`, `host check --memory`) and one way of printing
//! sizes in messages and reports. It sits at the bottom of the workspace so
//! that the VMM, the VFIO runtime, the host tooling and the pci crate share it.

/// Why a size given by the user could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text is not a number with an optional K/M/G/T suffix.
    #[error(
        "invalid size '{0}': use a number of MiB or a number with a K, M, G or T suffix, like 4096, 512M, 8G or 1T"
    )]
    Malformed(String),
    /// The size does not fit in 64 bits.
    #[error("size '{0}' is too large")]
    TooLarge(String),
}

const UNITS: [(&str, u64); 6] = [
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

/// Parses a size: a bare number is MiB (as QEMU's `-m`); suffixes K, M, G and T
/// (in either case, optionally followed by `B` or `iB`) are binary multiples,
/// so `8G` = `8GiB` = `8192` = 8 GiB.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let malformed = || SizeError::Malformed(text.to_string());
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let number: u64 = digits.parse().map_err(|_| malformed())?;
    let unit: u64 = match suffix.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => 1 << 20,
        "K" | "KB" | "KIB" => 1 << 10,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(malformed()),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

/// Prints a byte count with the largest binary unit that divides it exactly,
/// else with one decimal (`16 GiB`, `1.5 GiB`, `128 B`).
pub fn format_size(bytes: u64) -> String {
    for (name, unit) in UNITS {
        if bytes >= unit {
            if bytes.is_multiple_of(unit) {
                return format!("{} {name}", bytes / unit);
            }
            return format!("{:.1} {name}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_mib_by_default_and_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4 << 30));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("65536K"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size(" 2g "), Ok(2 << 30));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for s in ["", "M", "lots", "8X", "-1G", "1.5G", "G1"] {
            assert_eq!(parse_size(s), Err(SizeError::Malformed(s.into())), "{s}");
        }
        assert_eq!(
            parse_size("99999999999T"),
            Err(SizeError::TooLarge("99999999999T".into()))
        );
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(format_size(16 << 30), "16 GiB");
        assert_eq!(format_size(256 << 20), "256 MiB");
        assert_eq!(format_size(0x1000), "4 KiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1 << 60), "1 EiB");
        assert_eq!(format_size(128), "128 B");
    }
}
