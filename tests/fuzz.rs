//! Property tests of everything that parses outside input: ingest's `validate` (and its
//! writer of the records it publishes), the process
//! stage's JSON -> Arrow `decode`, the live store's reader of processed records, and the
//! OpenSky `/states/all` parser. They run on arbitrary bytes, on arbitrary JSON, and on
//! mutations of valid input (bytes flipped, inserted, deleted, cut), and check that nothing
//! panics and that the parsers keep their promises. (cargo-fuzz needs a nightly compiler; CI has stable, so this is proptest.)
//!
//! `PROPTEST_CASES` sets the cases per property (256 by default); the closing note of the
//! operations issue reports a 10-minute run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz`.

mod common;

use common::corpus::valid_record;
use contrail::bus::Message;
use contrail::ingest::opensky::parse_states;
use contrail::ingest::record::RawRecord;
use contrail::ingest::validate::{validate, validate_with_serde};
use contrail::pipeline::decode::{Decoded, decode, decode_with_arrow_json};
use contrail::query::store::{parse_state, parse_state_with_serde};
use proptest::prelude::*;
use serde_json::{Value, json};

fn message(i: usize, payload: Vec<u8>) -> Message {
    Message {
        topic: "raw".into(),
        partition: 0,
        offset: i as i64,
        key: None,
        payload: payload.into(),
    }
}

/// Decodes `messages`, and checks the answer is arrow-json's alone (the fast parser takes
/// only what arrow-json takes, and gives the same values).
fn decode_checked(messages: &[Message]) -> Result<Decoded, TestCaseError> {
    let d = decode(messages).unwrap();
    let reference = decode_with_arrow_json(messages).unwrap();
    prop_assert_eq!(&d.batch, &reference.batch);
    prop_assert_eq!(&d.rejected, &reference.rejected);
    Ok(d)
}

/// A timestamp as text: RFC 3339 with 0-10 fraction digits, mostly in UTC (`Z`, `+00:00`),
/// sometimes with another offset, none, or a lowercase `z`.
fn timestamp_text() -> impl Strategy<Value = String> {
    (
        -62_135_596_800i64..253_402_300_800,
        0u32..1_000_000_000,
        0usize..=10,
        prop_oneof![8 => Just("Z"), 4 => Just("+00:00"), 1 => Just("+01:00"), 1 => Just(""), 1 => Just("z")],
    )
        .prop_map(|(secs, nanos, digits, suffix)| {
            let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
            let fraction = format!(".{nanos:09}0");
            let fraction = if digits == 0 { "" } else { &fraction[..=digits] };
            format!("{}{fraction}{suffix}", t.format("%Y-%m-%dT%H:%M:%S"))
        })
}

/// A raw record with arbitrary values, mostly of the right kinds (any float, any integer,
/// printable or arbitrary strings), now and then null where null is not allowed or a
/// value of another kind; written compactly or pretty-printed.
fn raw_record() -> impl Strategy<Value = Vec<u8>> {
    fn float() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => any::<f64>().prop_map(|f| json!(f)),
            4 => (-1000i64..1000).prop_map(|i| json!(i)),
            1 => Just(Value::Null),
            1 => Just(json!("1.5")),
        ]
    }
    fn text() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => "[ -~]{0,12}".prop_map(Value::String),
            2 => any::<String>().prop_map(Value::String),
            1 => Just(Value::Null),
            1 => Just(json!(7)),
        ]
    }
    fn integer() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (-5i64..20).prop_map(|i| json!(i)),
            4 => any::<i32>().prop_map(|i| json!(i)),
            2 => any::<i64>().prop_map(|i| json!(i)),
            1 => Just(Value::Null),
            1 => Just(json!(2.0)),
        ]
    }
    fn boolean() -> impl Strategy<Value = Value> {
        prop_oneof![8 => any::<bool>().prop_map(Value::Bool), 1 => Just(Value::Null)]
    }
    fn sensors() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => prop::collection::vec(prop::option::of(any::<i32>()), 0..4).prop_map(|v| json!(v)),
            2 => Just(Value::Null),
            1 => prop::collection::vec(any::<i64>(), 1..3).prop_map(|v| json!(v)),
        ]
    }
    let timestamp =
        || prop_oneof![8 => timestamp_text().prop_map(Value::String), 1 => Just(Value::Null)];
    (
        (timestamp(), text(), text(), text(), timestamp()),
        (
            float(),
            float(),
            float(),
            float(),
            float(),
            float(),
            float(),
        ),
        (
            boolean(),
            boolean(),
            text(),
            integer(),
            integer(),
            integer(),
            sensors(),
        ),
        any::<bool>(),
    )
        .prop_map(|(strings, floats, rest, pretty)| {
            let (ts, icao24, callsign, country, ingest) = strings;
            let (lat, lon, velocity, baro, geo, vrate, heading) = floats;
            let (on_ground, spi, squawk, source, category, last_contact, sensors) = rest;
            let v = json!({
                "timestamp": ts, "icao24": icao24, "callsign": callsign,
                "origin_country": country, "latitude": lat, "longitude": lon,
                "velocity": velocity, "baro_altitude": baro, "geo_altitude": geo,
                "vertical_rate": vrate, "heading": heading, "on_ground": on_ground,
                "squawk": squawk, "spi": spi, "position_source": source, "category": category,
                "sensors": sensors, "last_contact": last_contact, "ingest_timestamp": ingest,
            });
            if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            }
        })
}

/// Any `RawRecord` value, the ones no validation lets through included: any strings
/// (control characters, quotes, any Unicode), any floats (NaN, infinities, subnormals), any
/// integers, timestamps in any year chrono holds, leap seconds included.
fn any_raw_record() -> impl Strategy<Value = RawRecord> {
    fn time() -> impl Strategy<Value = chrono::DateTime<chrono::Utc>> {
        let secs = prop_oneof![
            8 => 0i64..4_102_444_800,
            2 => -62_167_219_200i64..253_402_300_800,
            1 => -8_000_000_000_000i64..8_000_000_000_000,
        ];
        let nanos = prop_oneof![
            4 => Just(0u32),
            2 => (0u32..1_000).prop_map(|ms| ms * 1_000_000),
            2 => (0u32..1_000_000).prop_map(|us| us * 1_000),
            4 => 0u32..1_000_000_000,
        ];
        let leap = (0i64..70_000_000, 1_000_000_000u32..2_000_000_000)
            .prop_map(|(minute, nanos)| (minute * 60 + 59, nanos));
        prop_oneof![10 => (secs, nanos), 1 => leap]
            .prop_filter_map("a time chrono holds", |(s, n)| {
                chrono::DateTime::from_timestamp(s, n)
            })
    }
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[ -~]{0,12}", 2 => any::<String>(), 1 => "[\\\"\u{0}-\u{1f}\u{7f}]{0,4}"]
    }
    fn float() -> impl Strategy<Value = Option<f64>> {
        prop::option::of(prop_oneof![
            4 => any::<f64>(),
            2 => -1_000.0f64..1_000.0,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(-0.0),
        ])
    }
    (
        (
            time(),
            text(),
            prop::option::of(text()),
            text(),
            prop::option::of(time()),
        ),
        (
            float(),
            float(),
            float(),
            float(),
            float(),
            float(),
            float(),
        ),
        (
            any::<bool>(),
            prop::option::of(text()),
            any::<bool>(),
            any::<i32>(),
            prop::option::of(any::<i32>()),
            prop::option::of(prop::collection::vec(any::<i32>(), 0..4)),
            any::<i64>(),
        ),
    )
        .prop_map(|(strings, floats, rest)| {
            let (timestamp, icao24, callsign, origin_country, ingest_timestamp) = strings;
            let (
                latitude,
                longitude,
                velocity,
                baro_altitude,
                geo_altitude,
                vertical_rate,
                heading,
            ) = floats;
            let (on_ground, squawk, spi, position_source, category, sensors, last_contact) = rest;
            RawRecord {
                timestamp,
                icao24,
                callsign,
                origin_country,
                latitude,
                longitude,
                velocity,
                baro_altitude,
                geo_altitude,
                vertical_rate,
                heading,
                on_ground,
                squawk,
                spi,
                position_source,
                category,
                sensors,
                last_contact,
                ingest_timestamp,
            }
        })
}

/// A mutation of some bytes: (kind, position, byte).
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(kind, at, b) in edits {
        if bytes.is_empty() {
            bytes.push(b);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = b,
            1 => bytes.insert(at, b),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9 ]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid record with one field replaced by arbitrary JSON.
fn record_with_one_field_replaced() -> impl Strategy<Value = Vec<u8>> {
    let fields: Vec<String> = valid_record(0)
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    (prop::sample::select(fields), json_value(), 0usize..1000).prop_map(|(field, value, i)| {
        let mut v = valid_record(i);
        v[&field] = value;
        serde_json::to_vec(&v).unwrap()
    })
}

/// A processed record as the live store reads it: the store's fields with values mostly of
/// the right kinds (now and then null, another kind, or left out), the pipeline's other
/// columns as arbitrary JSON, now and then a field twice; in any order, written compactly
/// or with whitespace.
fn processed_record() -> impl Strategy<Value = Vec<u8>> {
    fn float() -> impl Strategy<Value = Value> {
        prop_oneof![
            30 => any::<f64>().prop_map(|f| json!(f)),
            8 => any::<i64>().prop_map(|i| json!(i)),
            4 => Just(Value::Null),
            1 => Just(json!("1.5")),
            1 => Just(json!(u64::MAX)),
        ]
    }
    fn text() -> impl Strategy<Value = Value> {
        prop_oneof![
            // Printable ASCII without the two characters JSON escapes, mostly.
            30 => "[ !#-\\[\\]-~]{0,12}".prop_map(Value::String),
            2 => "[ -~]{0,12}".prop_map(Value::String),
            2 => any::<String>().prop_map(Value::String),
            1 => Just(Value::Null),
            1 => Just(json!(7)),
        ]
    }
    fn boolean() -> impl Strategy<Value = Value> {
        prop_oneof![30 => any::<bool>().prop_map(Value::Bool), 1 => Just(Value::Null), 1 => Just(json!(1))]
    }
    const TEXTS: [&str; 5] = [
        "icao24",
        "callsign",
        "origin_country",
        "squawk",
        "flight_phase",
    ];
    const FLOATS: [&str; 11] = [
        "latitude",
        "longitude",
        "velocity_knots",
        "altitude_ft",
        "vertical_rate_fpm",
        "heading",
        "anomaly_score",
        "speed_mismatch_knots",
        "climb_mismatch_fpm",
        "position_jump_km",
        "seconds_since_previous",
    ];
    let timestamp =
        prop_oneof![30 => timestamp_text().prop_map(Value::String), 1 => Just(Value::Null)];
    (
        timestamp,
        prop::collection::vec(text(), TEXTS.len()),
        prop::collection::vec(float(), FLOATS.len()),
        (boolean(), boolean()),
        prop::collection::vec(("[a-z_]{1,14}", json_value()), 0..6),
        (any::<prop::sample::Index>(), 0u8..20),
        any::<bool>(),
    )
        .prop_flat_map(
            |(ts, texts, floats, (on_ground, is_anomaly), extra, (pick, what), spaced)| {
                let mut fields: Vec<(String, Value)> = vec![
                    ("timestamp".into(), ts),
                    ("on_ground".into(), on_ground),
                    ("is_anomaly".into(), is_anomaly),
                ];
                fields.extend(TEXTS.iter().map(|k| k.to_string()).zip(texts));
                fields.extend(FLOATS.iter().map(|k| k.to_string()).zip(floats));
                fields.extend(extra);
                let chosen = pick.index(fields.len());
                match what {
                    0 => {
                        fields.remove(chosen);
                    }
                    1 => fields.push(fields[chosen].clone()),
                    _ => {}
                }
                (Just(fields).prop_shuffle(), Just(spaced))
            },
        )
        .prop_map(|(fields, spaced)| {
            let sep = if spaced { " ,\n\t" } else { "," };
            let colon = if spaced { " : " } else { ":" };
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}{colon}{}", json!(k), v))
                .collect();
            format!("{{{}}}", body.join(sep)).into_bytes()
        })
}

/// An OpenSky state row: 18 fields of the right kinds, some of them arbitrary.
fn state_row() -> impl Strategy<Value = Value> {
    (
        "[0-9a-f]{6}",
        any::<i64>(),
        prop::option::of(-200.0f64..200.0),
        prop::option::of(any::<f64>()),
        any::<i64>(),
        prop::option::of(any::<i64>()),
        json_value(),
    )
        .prop_map(
            |(icao, last_contact, lat, velocity, position_source, category, wild)| {
                json!([
                    icao,
                    "DLH1    ",
                    "Germany",
                    last_contact,
                    last_contact,
                    8.5,
                    lat,
                    10000.0,
                    false,
                    velocity,
                    90.0,
                    0.0,
                    wild,
                    10100.0,
                    "1000",
                    false,
                    position_source,
                    category
                ])
            },
        )
}

fn states_body() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<i64>(),
        prop::collection::vec(prop_oneof![state_row(), json_value()], 0..20),
    )
        .prop_map(|(time, rows)| {
            serde_json::to_vec(&json!({"time": time, "states": rows})).unwrap()
        })
}

proptest! {
    /// Arbitrary bytes: validation answers, and what it accepts meets the contract.
    /// Processed records with arbitrary values, whole or mutated: the live store's fast
    /// parser gives serde_json's answer (the same state, or the same error).
    #[test]
    fn live_store_parser_agrees_with_serde(
        bytes in processed_record(),
        e in prop::option::weighted(0.3, edits()),
    ) {
        let bytes = match e {
            Some(e) => mutate(bytes, &e),
            None => bytes,
        };
        prop_assert_eq!(parse_state(&bytes), parse_state_with_serde(&bytes));
    }

    /// Any record as serde_json writes it (compact or pretty-printed; keys left out; bytes
    /// mutated): `validate` (its hand-written parser for what ingest writes, serde_json for
    /// the rest) gives serde_json's answer: the same record, or the same rejection.
    #[test]
    fn validate_agrees_with_serde(
        r in any_raw_record(),
        icao24 in prop::option::of("[0-9a-fA-F]{6}"),
        pretty in any::<bool>(),
        drop in prop::collection::vec(0usize..19, 0..3),
        e in prop::option::weighted(0.3, edits()),
    ) {
        let mut v = serde_json::to_value(RawRecord { icao24: icao24.unwrap_or(r.icao24.clone()), ..r }).unwrap();
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        for k in drop {
            v.as_object_mut().unwrap().remove(&keys[k]);
        }
        let bytes = if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        };
        let bytes = match e {
            Some(e) => mutate(bytes, &e),
            None => bytes,
        };
        prop_assert_eq!(validate(&bytes), validate_with_serde(&bytes));
    }

    /// The same for records with values of any JSON kind (whole or mutated), valid records
    /// (whole, or with one field replaced by any JSON) and arbitrary bytes.
    #[test]
    fn validate_agrees_with_serde_on_any_json(
        wild in raw_record(),
        e in edits(),
        i in 0usize..1000,
        replaced in record_with_one_field_replaced(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mutated = mutate(wild.clone(), &e);
        let valid = serde_json::to_vec(&valid_record(i)).unwrap();
        for b in [wild, mutated, valid, replaced, bytes] {
            prop_assert_eq!(validate(&b), validate_with_serde(&b));
        }
    }

    /// Any record: `RawRecord::to_json` (ingest's writer) writes serde_json's bytes, and
    /// what it writes reads back as the same record.
    #[test]
    fn raw_record_writer_agrees_with_serde(r in any_raw_record()) {
        let written = r.to_json();
        prop_assert_eq!(
            String::from_utf8(written.clone()).unwrap(),
            serde_json::to_string(&r).unwrap()
        );
        let finite = [r.latitude, r.longitude, r.velocity, r.baro_altitude, r.geo_altitude,
            r.vertical_rate, r.heading].iter().flatten().all(|f| f.is_finite());
        if finite {
            let back: RawRecord = serde_json::from_slice(&written).unwrap();
            prop_assert_eq!(back, r);
        }
    }

    #[test]
    fn validate_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(r) = validate(&bytes) {
            prop_assert!(r.icao24.len() == 6);
        }
    }

    /// Mutated valid records: validation accepts only what meets the contract, and the
    /// process stage's decoder takes every record ingest publishes from what validation
    /// accepted (ingest re-serialises the record and sets its `ingest_timestamp`).
    #[test]
    fn what_validate_accepts_decode_accepts(i in 0usize..1000, e in edits()) {
        let bytes = mutate(serde_json::to_vec(&valid_record(i)).unwrap(), &e);
        if let Ok(mut r) = validate(&bytes) {
            prop_assert!(r.icao24.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            let lat = r.latitude.unwrap();
            prop_assert!((-90.0..=90.0).contains(&lat));
            r.ingest_timestamp = Some(chrono::Utc::now());
            let published = r.to_json();
            let d = decode_checked(&[message(0, published.clone())])?;
            prop_assert_eq!(d.batch.num_rows(), 1, "validated but not decoded: {} ({:?})",
                String::from_utf8_lossy(&published), d.rejected);
        }
    }

    /// Records with arbitrary values, whole or mutated, one by one and as a batch: the
    /// decoder's fast parser and arrow-json give the same rows and the same rejects.
    #[test]
    fn fast_parser_agrees_with_arrow_json(
        records in prop::collection::vec((raw_record(), prop::option::of(edits())), 1..8),
    ) {
        let messages: Vec<Message> = records
            .into_iter()
            .enumerate()
            .map(|(i, (bytes, e))| message(i, match e {
                Some(e) => mutate(bytes, &e),
                None => bytes,
            }))
            .collect();
        for m in &messages {
            decode_checked(std::slice::from_ref(m))?;
        }
        decode_checked(&messages)?;
    }

    /// One field replaced by arbitrary JSON: both parsers answer without panicking.
    #[test]
    fn a_field_of_any_json_type(bytes in record_with_one_field_replaced()) {
        let _ = validate(&bytes);
        let d = decode_checked(&[message(0, bytes)])?;
        prop_assert_eq!(d.batch.num_rows() + d.rejected.len(), 1);
    }

    /// A micro-batch of valid records with arbitrary payloads between them: every payload is
    /// either a row or a reject (never both, never neither), every valid record is a row in
    /// its place, and rejects name their message's index.
    #[test]
    fn decode_accounts_for_every_payload(
        junk in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            (0usize..1000, edits()).prop_map(|(i, e)| mutate(serde_json::to_vec(&valid_record(i)).unwrap(), &e)),
        ], 0..12),
        valid in prop::collection::vec(0usize..1000, 1..12),
    ) {
        let mut messages = Vec::new();
        let mut valid_at = Vec::new();
        for (n, payload) in junk.into_iter().enumerate() {
            if let Some(&i) = valid.get(n) {
                valid_at.push(messages.len());
                messages.push(message(messages.len(), serde_json::to_vec(&valid_record(i)).unwrap()));
            }
            messages.push(message(messages.len(), payload));
        }
        let d = decode_checked(&messages)?;
        prop_assert_eq!(d.batch.num_rows() + d.rejected.len(), messages.len());
        let seq: Vec<i64> = d.batch.column_by_name("_seq").unwrap()
            .as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().values().to_vec();
        for at in valid_at {
            prop_assert!(seq.contains(&(at as i64)), "valid record {} lost", at);
        }
        for (i, _) in &d.rejected {
            prop_assert!(!seq.contains(&(*i as i64)));
        }
    }

    /// OpenSky responses: arbitrary bytes, arbitrary JSON, and well-formed bodies with wild
    /// rows. The parser answers; each state is a payload or a rejection, in order; a payload
    /// holds exactly the numbers the row held (no silent truncation).
    #[test]
    fn parse_states_never_panics_and_keeps_values(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            states_body(),
            (states_body(), edits()).prop_map(|(b, e)| mutate(b, &e)),
        ]
    ) {
        let Ok(states) = parse_states(&body) else { return Ok(()); };
        let v: Value = serde_json::from_slice(&body).unwrap();
        let rows = v["states"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(states.payloads.len() + states.rejected.len(), rows.len());
        prop_assert_eq!(states.keys.len(), states.payloads.len());
        let (mut valid, mut rejected) = (
            states.payloads.iter().zip(&states.keys),
            states.rejected.iter(),
        );
        for row in &rows {
            let fits = row.as_array().is_some_and(|fields| contrail::ingest::opensky::state_row(fields).is_ok());
            if !fits {
                // Rejected, in order, as the row's own JSON.
                let (why, payload) = rejected.next().unwrap();
                prop_assert_eq!(why.reason, "schema");
                prop_assert_eq!(payload, &row.to_string().into_bytes());
                continue;
            }
            let (payload, (icao24, last_contact)) = valid.next().unwrap();
            let r: Value = serde_json::from_slice(payload).unwrap();
            prop_assert_eq!(r["icao24"].as_str(), Some(icao24.as_str()));
            prop_assert_eq!(r["last_contact"].as_i64(), Some(*last_contact));
            prop_assert_eq!(&r["position_source"], &row[16]);
            if !row[17].is_null() {
                prop_assert_eq!(&r["category"], &row[17]);
            }
        }
    }
}
