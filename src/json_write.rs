//! Writers of JSON text for the hot paths' hand-written encoders (the processed records'
//! row encoder, ingest's raw records): strings escaped as serde_json escapes them, integers
//! by lexical-core, floats by Żmij as serde_json writes them, UTC timestamps as RFC 3339 by
//! hand. The other half of [`crate::json_cursor`].

use lexical_core::{FormattedSize, ToLexical};

/// An integer, by lexical-core (floats go through [`write_float`]).
pub(crate) fn write_lexical<N: Integer>(buf: &mut Vec<u8>, value: N) {
    // Room for any integer lexical-core writes (i64's and u64's, 20 bytes, are the largest),
    // written in place.
    const ROOM: usize = i64::FORMATTED_SIZE_DECIMAL;
    const _: () = assert!(u64::FORMATTED_SIZE_DECIMAL <= ROOM);
    let start = buf.len();
    buf.extend_from_slice(&[0; ROOM]);
    let written = value.to_lexical(&mut buf[start..]).len();
    buf.truncate(start + written);
}

/// A float as serde_json writes it: the shortest text that reads back as the same value, by
/// the formatter serde_json uses (Żmij: `0.1`, `1.0`, `1e-7`, `1.5e+20`), and `null` when it
/// is not finite. Faster than lexical-core: `stage/encode` 21.7-22.1 ms per 20,000 rows
/// against 24.3-24.9.
pub(crate) fn write_float<F: Float>(buf: &mut Vec<u8>, value: F) {
    if value.is_finite() {
        buf.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    } else {
        buf.extend_from_slice(b"null");
    }
}

/// The integer types [`write_lexical`] takes.
pub(crate) trait Integer: ToLexical + Copy {}

impl Integer for i8 {}
impl Integer for i16 {}
impl Integer for i32 {}
impl Integer for i64 {}
impl Integer for u8 {}
impl Integer for u16 {}
impl Integer for u32 {}
impl Integer for u64 {}

/// `f32` and `f64`, as [`write_float`] takes them.
pub(crate) trait Float: zmij::Float + Copy {
    fn is_finite(self) -> bool;
}

impl Float for f32 {
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl Float for f64 {
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}

/// A JSON string, escaped as serde_json (and so arrow-json) escapes it.
pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[(b >> 4) as usize]);
            buf.push(HEX[(b & 0xf) as usize]);
        } else {
            buf.extend_from_slice(escape);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Seconds and nanoseconds since the epoch as RFC 3339 in UTC with `Z`, the fraction as
/// chrono writes it (`SecondsFormat::AutoSi`, and chrono's serde format of a `DateTime`):
/// none, 3, 6 or 9 digits. `false`, and nothing written, for what chrono writes otherwise:
/// a year outside 0..=9999 (with a sign) or a leap second (`nanos` >= 10^9).
pub(crate) fn write_rfc3339(buf: &mut Vec<u8>, secs: i64, nanos: u32) -> bool {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return false;
    }
    // `YYYY-MM-DDTHH:MM:SS.fffffffffZ` at most: written on the stack, appended as one block.
    let mut text = [0u8; 32];
    text[..20].copy_from_slice(b"0000-00-00T00:00:00.");
    let digits = |text: &mut [u8; 32], at: usize, width: usize, mut n: u32| {
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(&mut text, 0, 4, year as u32);
    digits(&mut text, 5, 2, month);
    digits(&mut text, 8, 2, day);
    digits(&mut text, 11, 2, sod / 3600);
    digits(&mut text, 14, 2, sod / 60 % 60);
    digits(&mut text, 17, 2, sod % 60);
    let len = if nanos == 0 {
        19
    } else if nanos.is_multiple_of(1_000_000) {
        digits(&mut text, 20, 3, nanos / 1_000_000);
        23
    } else if nanos.is_multiple_of(1_000) {
        digits(&mut text, 20, 6, nanos / 1_000);
        26
    } else {
        digits(&mut text, 20, 9, nanos);
        29
    };
    text[len] = b'Z';
    buf.extend_from_slice(&text[..=len]);
    true
}

/// (year, month, day) of a day count from 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, SecondsFormat};

    #[test]
    fn timestamps_as_chrono_writes_them() {
        let secs = [
            0,
            -1,
            951_782_400,        // 2000-02-29
            1_795_600_800,      // 2026-11-25T10:00:00Z
            -62_167_219_200,    // 0000-01-01
            253_402_300_799,    // 9999-12-31T23:59:59
            -62_167_219_201,    // -0001-12-31T23:59:59: chrono's
            253_402_300_800,    // +10000-01-01: chrono's
            4_107_542_399,      // 2100-02-28T23:59:59
            -2_203_891_200 - 1, // 1900-02-28T23:59:59
        ];
        let nanos = [
            0,
            1,
            999_999_999,
            5_000_000,
            123_456_000,
            100,
            1_000_000_000,
        ];
        for s in secs {
            for n in nanos {
                // (A leap second, `n` >= 10^9, exists only at a minute's 59th second.)
                let Some(t) = DateTime::from_timestamp(s, n) else {
                    continue;
                };
                let mut buf = Vec::new();
                if write_rfc3339(&mut buf, s, n) {
                    let chrono = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
                    assert_eq!(String::from_utf8(buf).unwrap(), chrono, "{s} {n}");
                    let serde = serde_json::to_string(&t).unwrap();
                    assert_eq!(format!("\"{chrono}\""), serde);
                } else {
                    assert!(buf.is_empty());
                    assert!(
                        !(0..=9999).contains(&chrono::Datelike::year(&t)) || n >= 1_000_000_000,
                        "{t:?} refused"
                    );
                }
            }
        }
    }

    #[test]
    fn strings_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "Côte d’Ivoire",
        ] {
            let mut buf = Vec::new();
            write_str(&mut buf, s);
            assert_eq!(buf, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
