//! A virtio-net NIC as asked for: `--net tap=NAME[,mac=MAC][,id=ID]`, MAC
//! addresses and tap interface names.

use std::fmt;
use std::str::FromStr;

use super::{check_id, ConfigError};

/// Longest interface name Linux takes (IFNAMSIZ less the NUL).
pub const MAX_TAP_NAME_LEN: usize = 15;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// The default address of the `index`th NIC: locally administered,
    /// unicast, the same for the same index on every run.
    pub fn default_for(index: usize) -> Self {
        // Truncations intended: the low 24 bits of the index.
        MacAddress([
            0x02,
            0x76,
            0x66,
            (index >> 16) as u8,
            (index >> 8) as u8,
            index as u8,
        ])
    }
}

impl FromStr for MacAddress {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadMac(s.to_string());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() || bytes[0] & 1 != 0 || bytes == [0; 6] {
            return Err(bad());
        }
        Ok(MacAddress(bytes))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Tap interface name.
    pub tap: String,
    /// MAC address given with `mac=`, if any.
    pub mac: Option<MacAddress>,
    /// A name for the NIC, unique in the VM.
    pub id: Option<String>,
}

impl NetConfig {
    /// A NIC on `tap` with the default MAC address.
    pub fn new(tap: &str) -> Result<Self, ConfigError> {
        check_tap_name(tap)?;
        Ok(NetConfig {
            tap: tap.to_string(),
            mac: None,
            id: None,
        })
    }

    /// Parses `tap=NAME[,mac=MAC][,id=ID]`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let syntax = |why: String| ConfigError::BadNet {
            text: text.to_string(),
            why,
        };
        let (mut tap, mut mac, mut id) = (None, None, None);
        for item in text.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| syntax(format!("{item:?} is not key=value")))?;
            match key {
                "tap" if tap.is_none() => tap = Some(NetConfig::new(value)?.tap),
                "mac" if mac.is_none() => mac = Some(value.parse()?),
                "id" if id.is_none() => {
                    check_id(value)?;
                    id = Some(value.to_string());
                }
                "tap" | "mac" | "id" => return Err(syntax(format!("{key} given twice"))),
                _ => return Err(syntax(format!("unknown key {key:?}"))),
            }
        }
        let tap = tap.ok_or_else(|| syntax("tap=NAME is missing".into()))?;
        Ok(NetConfig { tap, mac, id })
    }

    /// The MAC of this NIC when it is the `index`th `--net`.
    pub fn mac_for(&self, index: usize) -> MacAddress {
        self.mac.unwrap_or_else(|| MacAddress::default_for(index))
    }
}

impl FromStr for NetConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        NetConfig::parse(s)
    }
}

/// Checks that `name` is a usable interface name.
pub fn check_tap_name(name: &str) -> Result<(), ConfigError> {
    let bad = name.is_empty()
        || name.len() > MAX_TAP_NAME_LEN
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace() || c == ',');
    if bad {
        Err(ConfigError::BadTapName(name.to_string()))
    } else {
        Ok(())
    }
}

/// No two NICs share a tap or a MAC address (default MACs included).
pub fn check_distinct(nets: &[NetConfig]) -> Result<(), ConfigError> {
    for (i, n) in nets.iter().enumerate() {
        let dup = |what, value| ConfigError::DuplicateNet { what, value };
        if nets[..i].iter().any(|o| o.tap == n.tap) {
            return Err(dup("tap", n.tap.clone()));
        }
        let mac = n.mac_for(i);
        if nets[..i]
            .iter()
            .enumerate()
            .any(|(j, o)| o.mac_for(j) == mac)
        {
            return Err(dup("MAC address", mac.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tap_mac_and_id() {
        let c = NetConfig::parse("tap=vnet0,mac=02:aa:BB:cc:dd:0e,id=n0").unwrap();
        assert_eq!(c.tap, "vnet0");
        assert_eq!(c.mac, Some(MacAddress([2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e])));
        assert_eq!(c.mac_for(5).to_string(), "02:aa:bb:cc:dd:0e");
        assert_eq!(c.id.as_deref(), Some("n0"));
        let c: NetConfig = "tap=t1".parse().unwrap();
        assert_eq!(c, NetConfig::new("t1").unwrap());
    }

    #[test]
    fn malformed_macs_are_errors() {
        for mac in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02-00-00-00-00-01",
            "0g:00:00:00:00:01",
            "2:00:00:00:00:01",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:00:00:00:00:+1",
        ] {
            let err = NetConfig::parse(&format!("tap=t,mac={mac}")).unwrap_err();
            assert!(matches!(err, ConfigError::BadMac(_)), "{mac:?}: {err}");
        }
    }

    #[test]
    fn bad_option_text_is_an_error() {
        for text in [
            "",
            "mac=02:00:00:00:00:01",
            "tap",
            "tap=a,tap=b",
            "tap=a,speed=10",
            "tap=a,",
        ] {
            assert!(
                matches!(NetConfig::parse(text), Err(ConfigError::BadNet { .. })),
                "{text:?}"
            );
        }
        for name in ["a/b", "x y", "this-name-is-too-long", "", ".", "a:b"] {
            assert_eq!(
                NetConfig::parse(&format!("tap={name}")),
                Err(ConfigError::BadTapName(name.into())),
                "{name:?}"
            );
        }
    }

    #[test]
    fn default_macs_are_deterministic_local_unicast_and_distinct() {
        let a = MacAddress::default_for(0);
        assert_eq!(a, MacAddress::default_for(0));
        assert_ne!(a, MacAddress::default_for(1));
        assert_eq!(a.0[0] & 0x03, 0x02, "locally administered, unicast");
        assert_eq!(
            MacAddress::default_for(0x0102).to_string(),
            "02:76:66:00:01:02"
        );
        let c = NetConfig::parse("tap=t").unwrap();
        assert_eq!(c.mac_for(3), MacAddress::default_for(3));
    }

    #[test]
    fn two_nics_never_share_a_tap_or_a_mac() {
        let a = NetConfig::parse("tap=a").unwrap();
        let b = NetConfig::parse("tap=b,mac=02:76:66:00:00:00").unwrap();
        assert!(check_distinct(&[a.clone(), NetConfig::new("c").unwrap()]).is_ok());
        assert!(check_distinct(&[a.clone(), a.clone()]).is_err());
        let err = check_distinct(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("MAC address 02:76:66:00:00:00"), "{err}");
    }
}
