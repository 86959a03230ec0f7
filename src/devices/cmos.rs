//! The CMOS real-time clock at ports 0x70/0x71: the host's UTC time in BCD,
//! never "update in progress", and 128 bytes of CMOS RAM. Without it Linux
//! polls a floating port for seconds at boot. Written by hand: vm-superio has
//! only the ARM PL031 RTC.

use std::time::{SystemTime, UNIX_EPOCH};

use super::BusDevice;

const REG_SECONDS: usize = 0x00;
const REG_MINUTES: usize = 0x02;
const REG_HOURS: usize = 0x04;
const REG_WEEKDAY: usize = 0x06;
const REG_DAY: usize = 0x07;
const REG_MONTH: usize = 0x08;
const REG_YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const REG_CENTURY: usize = 0x32;
/// Register B: 24-hour mode; data mode binary when bit 2 is set.
const B_24H: u8 = 1 << 1;
const B_BINARY: u8 = 1 << 2;

/// Calendar fields of a UTC time.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: u64,
    month: u8,
    day: u8,
    weekday: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

/// Converts seconds since 1970 to a UTC calendar date (proleptic Gregorian).
fn civil(secs: u64) -> Civil {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Days since 0000-03-01, then eras of 400 years.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        weekday: ((days + 4) % 7 + 1) as u8, // 1970-01-01 was a Thursday; Sunday = 1
        hour: (rem / 3600) as u8,
        minute: (rem / 60 % 60) as u8,
        second: (rem % 60) as u8,
    }
}

fn bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// The RTC and its RAM.
pub struct Cmos {
    index: usize,
    ram: [u8; 128],
}

impl Default for Cmos {
    fn default() -> Self {
        let mut ram = [0u8; 128];
        ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz rate, UIP clear
        ram[REG_B] = B_24H;
        ram[REG_D] = 0x80; // battery good, RAM valid
        Cmos { index: 0, ram }
    }
}

impl Cmos {
    fn clock_register(&self, reg: usize, now: &Civil) -> Option<u8> {
        let v = match reg {
            REG_SECONDS => now.second,
            REG_MINUTES => now.minute,
            REG_HOURS => now.hour,
            REG_WEEKDAY => now.weekday,
            REG_DAY => now.day,
            REG_MONTH => now.month,
            REG_YEAR => (now.year % 100) as u8,
            REG_CENTURY => (now.year / 100 % 100) as u8,
            _ => return None,
        };
        Some(if self.ram[REG_B] & B_BINARY != 0 {
            v
        } else {
            bcd(v)
        })
    }

    fn read_register(&self, reg: usize) -> u8 {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.clock_register(reg, &civil(secs))
            .unwrap_or(self.ram[reg])
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (1, Some(b)) = (offset, data.first_mut()) {
            *b = self.read_register(self.index);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            // Bit 7 of the index port masks NMIs; the index is 7 bits.
            0 => self.index = usize::from(v & 0x7f),
            // Time writes are ignored: the guest always reads host time.
            1 if !matches!(self.index, REG_A | REG_C | REG_D) && self.index > REG_YEAR => {
                self.ram[self.index] = v
            }
            1 if self.index == REG_B => self.ram[REG_B] = v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &mut Cmos, reg: u8) -> u8 {
        c.write(0, &[reg | 0x80]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(
            civil(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                weekday: 5,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2026-11-22 00:41:28 UTC, a Sunday.
        assert_eq!(
            civil(1_795_308_088),
            Civil {
                year: 2026,
                month: 11,
                day: 22,
                weekday: 1,
                hour: 0,
                minute: 41,
                second: 28
            }
        );
        // 2024-02-29 23:59:59, a Thursday.
        assert_eq!(
            civil(1_709_251_199),
            Civil {
                year: 2024,
                month: 2,
                day: 29,
                weekday: 5,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
    }

    #[test]
    fn the_clock_is_valid_never_updating_and_in_bcd_unless_asked() {
        let mut c = Cmos::default();
        assert_eq!(read(&mut c, 0x0a) & 0x80, 0, "UIP must be clear");
        assert_eq!(read(&mut c, 0x0d), 0x80);
        let century = read(&mut c, 0x32);
        assert_eq!(century, 0x20, "BCD 20");
        c.write(0, &[0x0b]);
        c.write(1, &[B_24H | B_BINARY]);
        assert_eq!(read(&mut c, 0x32), 20);
        let month = read(&mut c, 0x08);
        assert!((1..=12).contains(&month));
    }

    #[test]
    fn ram_keeps_what_the_guest_writes_but_not_the_clock() {
        let mut c = Cmos::default();
        c.write(0, &[0x40]);
        c.write(1, &[0xab]);
        assert_eq!(read(&mut c, 0x40), 0xab);
        c.write(0, &[0x0d]);
        c.write(1, &[0]);
        assert_eq!(read(&mut c, 0x0d), 0x80);
    }
}
