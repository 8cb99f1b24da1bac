//! The malformed-input corpus: payloads a raw topic or a replay file can hold that are not
//! a raw record, each named for what is wrong with it. Built from one valid record so each
//! case is broken in exactly one way.

use serde_json::{Value, json};

/// A valid raw record, as ingest publishes it (ingest replaces `ingest_timestamp`).
pub fn valid_record(i: usize) -> Value {
    json!({
        "timestamp": format!("2026-11-25T09:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        "icao24": format!("c0{:04x}", i),
        "callsign": format!("TST{:04} ", i % 10_000),
        "origin_country": "Germany",
        "latitude": 50.0 + (i % 100) as f64 * 0.01,
        "longitude": 8.0 + (i % 50) as f64 * 0.01,
        "velocity": 220.5,
        "baro_altitude": 10_668.0,
        "geo_altitude": 10_900.0,
        "vertical_rate": 0.0,
        "heading": 90.0,
        "on_ground": false,
        "squawk": "1000",
        "spi": false,
        "position_source": 0,
        "category": 6,
        "sensors": null,
        "last_contact": 1_795_597_200 + i as i64,
        "ingest_timestamp": "2026-11-25T10:00:00Z"
    })
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut v = valid_record(9_999);
    v[field] = value;
    serde_json::to_vec(&v).unwrap()
}

fn without(field: &str) -> Vec<u8> {
    let mut v = valid_record(9_999);
    v.as_object_mut().unwrap().remove(field);
    serde_json::to_vec(&v).unwrap()
}

/// Replaces the JSON text of one field's value: for values serde_json cannot write
/// (NaN, Infinity, numbers beyond f64, raw bytes).
fn raw_value(field: &str, text: &[u8]) -> Vec<u8> {
    let mut v = valid_record(9_999);
    v[field] = json!("@@HOLE@@");
    let s = serde_json::to_vec(&v).unwrap();
    let at = s.windows(10).position(|w| w == b"\"@@HOLE@@\"").unwrap();
    [&s[..at], text, &s[at + 10..]].concat()
}

/// (name, payload). None of them is a valid raw record, and none holds a newline (so each
/// is one line of a replay file). The process stage's JSON decoder (arrow-json) reads a
/// number written as a string and an integral float as the number they spell: those two
/// cases are in [`LENIENT`].
/// Cases the process stage takes as valid, with the value it reads: (case, field, value).
pub const LENIENT: [(&str, &str, f64); 2] = [
    ("latitude_as_string", "latitude", 50.1),
    ("last_contact_as_float", "last_contact", 1.5e9),
];

pub fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let good = serde_json::to_vec(&valid_record(9_999)).unwrap();
    let mut huge = valid_record(9_999);
    huge["callsign"] = json!("X".repeat(1 << 20));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    vec![
        ("empty", Vec::new()),
        ("truncated_half", good[..good.len() / 2].to_vec()),
        ("truncated_last_brace", good[..good.len() - 1].to_vec()),
        ("null", b"null".to_vec()),
        ("array", b"[]".to_vec()),
        ("number", b"42".to_vec()),
        ("string", b"\"abc\"".to_vec()),
        ("empty_object", b"{}".to_vec()),
        ("two_objects", [good.clone(), good.clone()].concat()),
        ("latitude_as_string", with("latitude", json!("50.1"))),
        ("icao24_as_number", with("icao24", json!(123456))),
        ("on_ground_as_string", with("on_ground", json!("yes"))),
        ("sensors_as_string", with("sensors", json!("1,2"))),
        ("last_contact_as_float", with("last_contact", json!(1.5e9))),
        (
            "timestamp_not_a_time",
            with("timestamp", json!("yesterday")),
        ),
        ("latitude_nan", raw_value("latitude", b"NaN")),
        ("velocity_infinity", raw_value("velocity", b"Infinity")),
        (
            "vertical_rate_minus_infinity",
            raw_value("vertical_rate", b"-Infinity"),
        ),
        ("velocity_1e400", raw_value("velocity", b"1e400")),
        (
            "last_contact_beyond_i64",
            raw_value("last_contact", b"99999999999999999999999"),
        ),
        ("velocity_nan_as_string", with("velocity", json!("NaN"))),
        ("baro_altitude_1e308", raw_value("baro_altitude", b"1e308")),
        (
            "position_source_beyond_i32",
            raw_value("position_source", b"4294967296"),
        ),
        ("one_megabyte", serde_json::to_vec(&huge).unwrap()),
        ("missing_icao24", without("icao24")),
        ("missing_last_contact", without("last_contact")),
        ("extra_field", with("extra", json!(1))),
        (
            "velocity_twice",
            [&b"{\"velocity\":1,"[..], &good[1..]].concat(),
        ),
        (
            "invalid_utf8_callsign",
            raw_value("callsign", b"\"\xff\xfe\xfd  \""),
        ),
        ("invalid_utf8_alone", b"\xc3\x28\xa0\xa1".to_vec()),
        ("latitude_91", with("latitude", json!(91.0))),
        ("longitude_minus_181", with("longitude", json!(-181.0))),
        (
            "latitude_just_below_minus_90",
            with("latitude", json!(-90.000_001)),
        ),
        ("latitude_null", with("latitude", Value::Null)),
        ("icao24_not_hex", with("icao24", json!("zzzzzz"))),
        ("squawk_not_octal", with("squawk", json!("9999"))),
        ("heading_400", with("heading", json!(400.0))),
        ("deep_nesting", deep.into_bytes()),
        ("byte_order_mark", [&b"\xef\xbb\xbf"[..], &good].concat()),
        ("nul_bytes", vec![0u8; 64]),
    ]
}
