//! Validation of raw records at the front door: the contract in DESIGN.md, checked once.
//!
//! A record that fails gets a machine-readable reason code and a message naming the field;
//! ingest sends it to the dead-letter topic with its original bytes. Validation checks the
//! contract and physical possibility only; implausible-but-possible values (a speed spike)
//! pass, because finding those is the anomaly model's job.

use std::collections::HashMap;

use super::record::RawRecord;

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Reason codes (stable: dashboards and alerts key on them).
pub mod reason {
    pub const MALFORMED_JSON: &str = "malformed_json";
    pub const SCHEMA: &str = "schema";
    pub const INVALID_ICAO24: &str = "invalid_icao24";
    pub const MISSING_POSITION: &str = "missing_position";
    pub const OUT_OF_RANGE: &str = "out_of_range";
    pub const NON_FINITE: &str = "non_finite";
    pub const INVALID_SQUAWK: &str = "invalid_squawk";
    pub const TOO_LARGE: &str = "too_large";
}

/// Parses and checks one raw record. `icao24` comes back lower-cased.
///
/// Records written the way ingest writes them are parsed by a hand-written parser
/// ([`RawRecord::from_json_fast`]); anything else by serde_json, which parses it or says
/// why not. The answer is [`validate_with_serde`]'s either way (`tests/fuzz.rs`).
pub fn validate(payload: &[u8]) -> Result<RawRecord, Rejection> {
    validate_by(payload, true)
}

/// [`validate`] with serde_json's parser alone: the reference the fast parser is held to.
pub fn validate_with_serde(payload: &[u8]) -> Result<RawRecord, Rejection> {
    validate_by(payload, false)
}

fn validate_by(payload: &[u8], fast: bool) -> Result<RawRecord, Rejection> {
    if payload.len() > crate::schema::MAX_RECORD_BYTES {
        return Err(Rejection::new(
            reason::TOO_LARGE,
            format!(
                "{} bytes is over the {}-byte limit of a raw record",
                payload.len(),
                crate::schema::MAX_RECORD_BYTES
            ),
        ));
    }
    let fast = fast
        .then(|| std::str::from_utf8(payload).ok())
        .flatten()
        .and_then(RawRecord::from_json_fast);
    let mut record = match fast {
        Some(record) => record,
        None => parse_with_serde(payload)?,
    };
    check(&mut record)?;
    Ok(record)
}

fn parse_with_serde(payload: &[u8]) -> Result<RawRecord, Rejection> {
    serde_json::from_slice(payload).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Rejection::new(reason::MALFORMED_JSON, e.to_string())
            }
            Category::Data => Rejection::new(reason::SCHEMA, e.to_string()),
        }
    })
}

/// Checks a record that is already typed (from a source) and normalises `icao24`.
pub fn check(r: &mut RawRecord) -> Result<(), Rejection> {
    if r.icao24.len() != 6 || !r.icao24.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Rejection::new(
            reason::INVALID_ICAO24,
            format!("icao24 {:?} is not 6 hexadecimal digits", r.icao24),
        ));
    }
    r.icao24.make_ascii_lowercase();
    let (Some(lat), Some(lon)) = (r.latitude, r.longitude) else {
        return Err(Rejection::new(
            reason::MISSING_POSITION,
            "latitude or longitude is null",
        ));
    };
    range("latitude", Some(lat), -90.0, 90.0)?;
    range("longitude", Some(lon), -180.0, 180.0)?;
    range("velocity", r.velocity, 0.0, 3_000.0)?;
    range("baro_altitude", r.baro_altitude, -2_000.0, 100_000.0)?;
    range("geo_altitude", r.geo_altitude, -2_000.0, 100_000.0)?;
    range("vertical_rate", r.vertical_rate, -1_000.0, 1_000.0)?;
    range("heading", r.heading, 0.0, 360.0)?;
    if !(0..=3).contains(&r.position_source) {
        return Err(out_of_range("position_source", r.position_source, "0..=3"));
    }
    if let Some(c) = r.category.filter(|c| !(0..=20).contains(c)) {
        return Err(out_of_range("category", c, "0..=20"));
    }
    if r.last_contact <= 0 {
        return Err(out_of_range("last_contact", r.last_contact, "> 0"));
    }
    if let Some(s) = &r.squawk
        && (s.len() != 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)))
    {
        return Err(Rejection::new(
            reason::INVALID_SQUAWK,
            format!("squawk {s:?} is not 4 octal digits"),
        ));
    }
    Ok(())
}

fn range(field: &str, value: Option<f64>, min: f64, max: f64) -> Result<(), Rejection> {
    match value {
        Some(v) if !v.is_finite() => Err(Rejection::new(
            reason::NON_FINITE,
            format!("{field} is {v}"),
        )),
        Some(v) if v < min || v > max => Err(out_of_range(field, v, format!("{min}..={max}"))),
        _ => Ok(()),
    }
}

fn out_of_range(
    field: &str,
    value: impl std::fmt::Display,
    allowed: impl std::fmt::Display,
) -> Rejection {
    Rejection::new(
        reason::OUT_OF_RANGE,
        format!("{field} = {value} outside {allowed}"),
    )
}

/// Drops exact repeats: the same aircraft with the same `last_contact` carries no new
/// information. Remembers one `last_contact` per aircraft.
#[derive(Debug, Default)]
pub struct Dedupe {
    last_contact: HashMap<String, i64>,
}

impl Dedupe {
    /// True when this (icao24, last_contact) was the aircraft's previous state too.
    pub fn is_repeat(&mut self, icao24: &str, last_contact: i64) -> bool {
        match self.last_contact.get_mut(icao24) {
            Some(prev) if *prev == last_contact => true,
            Some(prev) => {
                *prev = last_contact;
                false
            }
            None => {
                self.last_contact.insert(icao24.to_string(), last_contact);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "timestamp": "2026-11-25T10:00:00Z", "icao24": "4CA1FA", "callsign": "RYR12AB ",
            "origin_country": "Ireland", "latitude": 53.4, "longitude": -6.2, "velocity": 120,
            "baro_altitude": 1500.5, "geo_altitude": null, "vertical_rate": 5.2, "heading": 270.0,
            "on_ground": false, "squawk": "2000", "spi": false, "position_source": 0,
            "category": 4, "sensors": null, "last_contact": 1795600800,
            "ingest_timestamp": null
        })
    }

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut v = good();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn accepts_a_good_record_and_lowercases_icao24() {
        let r = validate(&serde_json::to_vec(&good()).unwrap()).unwrap();
        assert_eq!(r.icao24, "4ca1fa");
        assert_eq!(
            r.velocity,
            Some(120.0),
            "integer-valued floats are accepted"
        );
    }

    #[test]
    fn rejects_with_reason_codes() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{\"timestamp\": \"2026-".to_vec(), reason::MALFORMED_JSON),
            (b"\xff\xfe".to_vec(), reason::MALFORMED_JSON),
            (with("velocity", "fast".into()), reason::SCHEMA),
            (with("extra_field", 1.into()), reason::SCHEMA),
            (with("icao24", "zz12".into()), reason::INVALID_ICAO24),
            (
                with("latitude", serde_json::Value::Null),
                reason::MISSING_POSITION,
            ),
            (with("latitude", 91.0.into()), reason::OUT_OF_RANGE),
            (with("longitude", (-180.5).into()), reason::OUT_OF_RANGE),
            (with("velocity", (-1.0).into()), reason::OUT_OF_RANGE),
            (with("baro_altitude", 1e308.into()), reason::OUT_OF_RANGE),
            (with("position_source", 9.into()), reason::OUT_OF_RANGE),
            (with("squawk", "7800".into()), reason::INVALID_SQUAWK),
        ];
        for (payload, expected) in cases {
            let got = validate(&payload).expect_err(&String::from_utf8_lossy(&payload));
            assert_eq!(
                got.reason,
                expected,
                "{}: {}",
                String::from_utf8_lossy(&payload),
                got.message
            );
        }
        let missing = {
            let mut v = good();
            v.as_object_mut().unwrap().remove("on_ground");
            serde_json::to_vec(&v).unwrap()
        };
        assert_eq!(validate(&missing).unwrap_err().reason, reason::SCHEMA);
    }

    /// Payloads at the edges of what the hand-written parser takes: each gets serde_json's
    /// answer (`tests/fuzz.rs` does this for generated ones).
    #[test]
    fn the_fast_parser_gives_serdes_answer_at_its_edges() {
        let text = String::from_utf8(serde_json::to_vec(&good()).unwrap()).unwrap();
        let edits: &[(&str, &str)] = &[
            ("\"position_source\":0", "\"position_source\":-0"),
            ("\"position_source\":0", "\"position_source\":0.0"),
            ("\"position_source\":0", "\"position_source\":1e0"),
            ("\"category\":4", "\"category\":-0"),
            ("\"category\":4", "\"category\":2147483648"),
            ("\"last_contact\":1795600800", "\"last_contact\":-0"),
            (
                "\"last_contact\":1795600800",
                "\"last_contact\":9223372036854775808",
            ),
            ("\"sensors\":null", "\"sensors\":[1,-0]"),
            ("\"sensors\":null", "\"sensors\":[1,null]"),
            ("\"sensors\":null", "\"sensors\":[ 1 , 2 ]"),
            ("\"velocity\":120", "\"velocity\":-0"),
            ("\"velocity\":120", "\"velocity\":1e400"),
            ("\"velocity\":120", "\"velocity\":18446744073709551617"),
            (
                "\"icao24\":\"4CA1FA\"",
                "\"icao24\":\"4CA1FA\",\"icao24\":\"4ca1fb\"",
            ),
            ("\"icao24\":\"4CA1FA\"", "\"icao24\":\"4CA1F\\u0041\""),
            ("\"icao24\":\"4CA1FA\"", "\"\\u0069cao24\":\"4CA1FA\""),
            ("\"callsign\":\"RYR12AB \"", "\"callsign\":\"R\tY\""),
            ("\"spi\":false", "\"spi\":null"),
            ("\"on_ground\":false,", ""),
            ("\"geo_altitude\":null,", ""),
            (
                "2026-11-25T10:00:00Z",
                "2026-11-25T10:00:00.123456789+00:00",
            ),
            ("2026-11-25T10:00:00Z", "2026-11-25T10:00:00.1234567891Z"),
            ("2026-11-25T10:00:00Z", "2026-11-25T10:00:00+01:00"),
            ("2026-11-25T10:00:00Z", "2026-11-25t10:00:00z"),
            ("2026-11-25T10:00:00Z", "2016-12-31T23:59:60Z"),
            ("2026-11-25T10:00:00Z", "0000-01-01T00:00:00Z"),
            ("2026-11-25T10:00:00Z", "2026-02-29T00:00:00Z"),
            (
                "\"ingest_timestamp\":null",
                "\"ingest_timestamp\":\"2026-11-25T10:00:01.5Z\"",
            ),
            ("{", " { "),
            ("}", "} x"),
        ];
        for (from, to) in edits {
            assert!(text.contains(from), "{from}");
            let payload = text.replacen(from, to, 1);
            assert_eq!(
                validate(payload.as_bytes()),
                validate_with_serde(payload.as_bytes()),
                "{payload}"
            );
        }
        let fast = validate(text.as_bytes()).unwrap();
        assert_eq!(fast, validate_with_serde(text.as_bytes()).unwrap());
        // The comparisons above would also hold if the fast parser gave up on everything:
        // it must take what ingest publishes (nanosecond stamps included) and what sources
        // write.
        let mut published = fast.clone();
        published.ingest_timestamp = DateTime::from_timestamp(1_795_600_801, 123_456_789);
        let published = String::from_utf8(published.to_json()).unwrap();
        for taken in [text.as_str(), &published, &text.replace(',', " ,\n\t")] {
            let parsed = RawRecord::from_json_fast(taken).expect(taken);
            assert_eq!(
                parsed,
                parse_with_serde(taken.as_bytes()).unwrap(),
                "{taken}"
            );
        }
    }

    #[test]
    fn non_finite_values_from_typed_sources_are_rejected() {
        let mut r = validate(&serde_json::to_vec(&good()).unwrap()).unwrap();
        r.velocity = Some(f64::NAN);
        assert_eq!(check(&mut r).unwrap_err().reason, reason::NON_FINITE);
    }

    #[test]
    fn dedupe_drops_only_exact_repeats() {
        let mut d = Dedupe::default();
        assert!(!d.is_repeat("abc123", 10));
        assert!(d.is_repeat("abc123", 10));
        assert!(!d.is_repeat("abc123", 11));
        assert!(!d.is_repeat("def456", 10));
        assert!(
            !d.is_repeat("abc123", 10),
            "an older state after a newer one is new information"
        );
    }
}
