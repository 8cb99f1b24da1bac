//! The `flight-raw-data` record as a Rust value: what sources produce and what validation
//! parses. Field order and units follow DESIGN.md (OpenSky's own SI units).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::json_cursor::{Cursor, timestamp_parts};
use crate::json_write::{write_float, write_lexical, write_rfc3339, write_str};
use crate::schema::RAW_KEYS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    /// OpenSky `time_position`, else `last_contact`.
    pub timestamp: DateTime<Utc>,
    pub icao24: String,
    pub callsign: Option<String>,
    pub origin_country: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// m/s over ground.
    pub velocity: Option<f64>,
    /// metres.
    pub baro_altitude: Option<f64>,
    /// metres.
    pub geo_altitude: Option<f64>,
    /// m/s, positive = climbing.
    pub vertical_rate: Option<f64>,
    /// degrees clockwise from north (OpenSky `true_track`).
    pub heading: Option<f64>,
    pub on_ground: bool,
    pub squawk: Option<String>,
    pub spi: bool,
    pub position_source: i32,
    pub category: Option<i32>,
    pub sensors: Option<Vec<i32>>,
    /// Unix seconds of the last message of any kind.
    pub last_contact: i64,
    /// Set by ingest when the record is published.
    pub ingest_timestamp: Option<DateTime<Utc>>,
}

/// Fields serde requires (the ones that are not `Option`s), as bits of
/// positions in [`RAW_KEYS`]: the raw schema's positions, which are `RawRecord`'s order.
const REQUIRED: u32 = 1 << 0 | 1 << 1 | 1 << 3 | 1 << 11 | 1 << 13 | 1 << 14 | 1 << 17;

impl RawRecord {
    /// The record as JSON: byte for byte what `serde_json::to_vec` writes for it
    /// (`tests/fuzz.rs` checks), without serde's machinery per field. Ingest writes every
    /// record it publishes with this.
    pub fn to_json(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(b"{\"timestamp\":");
        timestamp(&mut buf, &self.timestamp);
        buf.extend_from_slice(b",\"icao24\":");
        write_str(&mut buf, &self.icao24);
        buf.extend_from_slice(b",\"callsign\":");
        nullable(&mut buf, self.callsign.as_deref(), write_str);
        buf.extend_from_slice(b",\"origin_country\":");
        write_str(&mut buf, &self.origin_country);
        for (key, value) in [
            (&b",\"latitude\":"[..], self.latitude),
            (b",\"longitude\":", self.longitude),
            (b",\"velocity\":", self.velocity),
            (b",\"baro_altitude\":", self.baro_altitude),
            (b",\"geo_altitude\":", self.geo_altitude),
            (b",\"vertical_rate\":", self.vertical_rate),
            (b",\"heading\":", self.heading),
        ] {
            buf.extend_from_slice(key);
            nullable(&mut buf, value, write_float);
        }
        buf.extend_from_slice(b",\"on_ground\":");
        boolean(&mut buf, self.on_ground);
        buf.extend_from_slice(b",\"squawk\":");
        nullable(&mut buf, self.squawk.as_deref(), write_str);
        buf.extend_from_slice(b",\"spi\":");
        boolean(&mut buf, self.spi);
        buf.extend_from_slice(b",\"position_source\":");
        write_lexical(&mut buf, self.position_source);
        buf.extend_from_slice(b",\"category\":");
        nullable(&mut buf, self.category, write_lexical);
        buf.extend_from_slice(b",\"sensors\":");
        nullable(&mut buf, self.sensors.as_deref(), |buf, sensors| {
            buf.push(b'[');
            for (i, &s) in sensors.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_lexical(buf, s);
            }
            buf.push(b']');
        });
        buf.extend_from_slice(b",\"last_contact\":");
        write_lexical(&mut buf, self.last_contact);
        buf.extend_from_slice(b",\"ingest_timestamp\":");
        nullable(&mut buf, self.ingest_timestamp.as_ref(), timestamp);
        buf.push(b'}');
        buf
    }

    /// Parses a record written the way [`Self::to_json`] writes it (keys in any order,
    /// JSON whitespace anywhere, strings without escapes, UTC timestamps written
    /// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` with `Z` or `+00:00`) into what serde_json parses from
    /// it. `None` for anything else (an escape, an unknown or repeated key, a missing field,
    /// a value of the wrong kind, ...): the caller hands that to serde_json, which parses
    /// it or says why not. `tests/fuzz.rs` checks the two agree.
    pub(crate) fn from_json_fast(text: &str) -> Option<Self> {
        let mut r = RawRecord {
            timestamp: DateTime::UNIX_EPOCH,
            icao24: String::new(),
            callsign: None,
            origin_country: String::new(),
            latitude: None,
            longitude: None,
            velocity: None,
            baro_altitude: None,
            geo_altitude: None,
            vertical_rate: None,
            heading: None,
            on_ground: false,
            squawk: None,
            spi: false,
            position_source: 0,
            category: None,
            sensors: None,
            last_contact: 0,
            ingest_timestamp: None,
        };
        let mut seen = 0u32;
        let string = |c: &mut Cursor| c.string().map(str::to_owned);
        let optional_string =
            |c: &mut Cursor| c.nullable(Cursor::string).map(|s| s.map(str::to_owned));
        Cursor::new(text).object_keyed(&RAW_KEYS, |c, field| {
            let field = field?;
            if seen & 1 << field != 0 {
                return None;
            }
            seen |= 1 << field;
            match field {
                0 => r.timestamp = utc(c)?,
                1 => r.icao24 = string(c)?,
                2 => r.callsign = optional_string(c)?,
                3 => r.origin_country = string(c)?,
                4 => r.latitude = c.nullable(Cursor::f64)?,
                5 => r.longitude = c.nullable(Cursor::f64)?,
                6 => r.velocity = c.nullable(Cursor::f64)?,
                7 => r.baro_altitude = c.nullable(Cursor::f64)?,
                8 => r.geo_altitude = c.nullable(Cursor::f64)?,
                9 => r.vertical_rate = c.nullable(Cursor::f64)?,
                10 => r.heading = c.nullable(Cursor::f64)?,
                11 => r.on_ground = c.bool()?,
                12 => r.squawk = optional_string(c)?,
                13 => r.spi = c.bool()?,
                14 => r.position_source = integer(c)?.try_into().ok()?,
                15 => r.category = c.nullable(|c| integer(c)?.try_into().ok())?,
                16 => r.sensors = c.nullable(sensors)?,
                17 => r.last_contact = integer(c)?,
                _ => r.ingest_timestamp = c.nullable(utc)?,
            }
            Some(())
        })?;
        (seen & REQUIRED == REQUIRED).then_some(r)
    }
}

/// A timestamp string as serde (chrono) parses it, for the forms the cursor reads.
fn utc(c: &mut Cursor) -> Option<DateTime<Utc>> {
    let (secs, nanos) = timestamp_parts(c.string()?.as_bytes())?;
    DateTime::from_timestamp(secs, nanos)
}

/// An integer as serde_json parses it into an integer field: not `-0`, which it reads as a
/// float.
fn integer(c: &mut Cursor) -> Option<i64> {
    let number = c.number()?;
    (number.text != b"-0").then(|| number.i64())?
}

/// An array of `i32`s (serde refuses a `null` in one).
fn sensors(c: &mut Cursor) -> Option<Vec<i32>> {
    let mut values = Vec::new();
    c.array(|c| {
        values.push(integer(c)?.try_into().ok()?);
        Some(())
    })?;
    Some(values)
}

fn nullable<T>(buf: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(v) => write(buf, v),
        None => buf.extend_from_slice(b"null"),
    }
}

fn boolean(buf: &mut Vec<u8>, value: bool) {
    buf.extend_from_slice(if value { b"true" } else { b"false" });
}

fn timestamp(buf: &mut Vec<u8>, t: &DateTime<Utc>) {
    let start = buf.len();
    buf.push(b'"');
    if write_rfc3339(buf, t.timestamp(), t.timestamp_subsec_nanos()) {
        buf.push(b'"');
    } else {
        // A year chrono writes with a sign, or a leap second: chrono's own text.
        buf.truncate(start);
        serde_json::to_writer(buf, t).expect("writing to a Vec");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::RAW_SCHEMA;

    /// `from_json_fast` keys its fields by their raw-schema positions: the record's fields
    /// (as serde writes them) must be in that order.
    #[test]
    fn fields_are_in_the_raw_schemas_order() {
        let text = r#"{"timestamp":"2026-11-25T10:00:00Z","icao24":"abc123","callsign":null,"origin_country":"Germany","latitude":50.0,"longitude":8.0,"velocity":null,"baro_altitude":null,"geo_altitude":null,"vertical_rate":null,"heading":null,"on_ground":false,"squawk":null,"spi":false,"position_source":0,"category":null,"sensors":[1],"last_contact":1795600800,"ingest_timestamp":null}"#;
        let r = RawRecord::from_json_fast(text).expect("parsed");
        let written = String::from_utf8(serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(written, text);
        let at = |name: &str| written.find(&format!("\"{name}\":")).expect(name);
        let names: Vec<&str> = RAW_SCHEMA
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names.len(), 19);
        for pair in names.windows(2) {
            assert!(at(pair[0]) < at(pair[1]), "{pair:?}");
        }
    }
}
