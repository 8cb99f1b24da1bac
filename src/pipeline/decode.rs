//! JSON -> Arrow: a micro-batch of raw payloads becomes one `RecordBatch` with the raw
//! schema plus `_seq` (the message's index in the micro-batch).
//!
//! The hot path is a parser for the raw schema that writes into Arrow builders
//! ([`raw_parser`](super::raw_parser)); it takes the records ingest publishes and leaves
//! anything it does not take to arrow-json's `Decoder`, which decodes the rest or says why
//! not. arrow-json gets all of those payloads in one decoder; only when that fails does it
//! decode them one by one to find the bad ones, which come back as rejects with the
//! decoder's message. Their neighbours are unaffected.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::compute::{concat_batches, interleave_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::ReaderBuilder;

use super::raw_parser::RawBuilder;
use crate::bus::Message;
use crate::error::Result;
use crate::schema::{MAX_RECORD_BYTES, RAW_SCHEMA, SEQ_COLUMN};

/// A decoded micro-batch.
#[derive(Debug)]
pub struct Decoded {
    /// Raw schema + `_seq`; rows in message order.
    pub batch: RecordBatch,
    /// (message index, decoder message) for every payload that did not decode.
    pub rejected: Vec<(usize, String)>,
}

/// The raw schema with `_seq` appended: the `raw` table the SQL reads.
pub fn raw_with_seq_schema() -> SchemaRef {
    let mut fields: Vec<Field> = RAW_SCHEMA
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

fn decode_all<'a>(
    payloads: impl Iterator<Item = &'a [u8]>,
    rows: usize,
) -> Result<Option<RecordBatch>, String> {
    let mut decoder = ReaderBuilder::new(Arc::clone(&RAW_SCHEMA))
        .with_batch_size(rows.max(1))
        .with_strict_mode(true)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    for p in payloads {
        if p.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "payload of {} bytes is over the {MAX_RECORD_BYTES}-byte limit of a raw record",
                p.len()
            ));
        }
        if let Some(key) = repeated_key(p) {
            return Err(format!(
                "field {key:?} appears twice (ingest rejects such records too)"
            ));
        }
        let mut rest = p;
        while !rest.is_empty() {
            let read = decoder.decode(rest).map_err(|e| e.to_string())?;
            if read == 0 {
                // The batch is full: this payload held more than one object.
                return Err("payload holds more than one JSON value".into());
            }
            rest = &rest[read..];
        }
    }
    decoder.flush().map_err(|e| e.to_string())
}

/// The first top-level key of a JSON object that appears twice (escapes read), if any.
/// arrow-json would keep the last value; ingest's validation rejects the record, and the
/// process stage must not accept from another producer what ingest would not publish.
fn repeated_key(payload: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Repeated;
    impl<'de> Visitor<'de> for Repeated {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // Read to the end: the deserializer wants the whole object consumed.
            let (mut seen, mut repeated) = (std::collections::HashSet::new(), None);
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) && repeated.is_none() {
                    repeated = Some(key.into_owned());
                }
            }
            Ok(repeated)
        }
    }
    serde_json::Deserializer::from_slice(payload)
        .deserialize_map(Repeated)
        .ok()
        .flatten()
}

/// Decodes the payloads of `messages`: every payload the fast parser
/// ([`raw_parser`](super::raw_parser)) accepts goes straight into column builders; the
/// others go to arrow-json, which decodes them or gives the reason they are rejected.
pub fn decode(messages: &[Message]) -> Result<Decoded> {
    let mut fast = RawBuilder::with_capacity(messages.len());
    let mut fast_seq = Vec::with_capacity(messages.len());
    let mut others = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.payload.len() <= MAX_RECORD_BYTES && fast.push(&m.payload) {
            fast_seq.push(i as i64);
        } else {
            others.push(i);
        }
    }
    let schema = raw_with_seq_schema();
    let fast = fast.finish()?;
    if others.is_empty() {
        return Ok(Decoded {
            batch: with_seq(&schema, fast, fast_seq)?,
            rejected: Vec::new(),
        });
    }
    let slow = with_arrow_json(messages, &others)?;
    // Both parts are in message order: merge them by `_seq`.
    let rows = fast_seq.len() + slow.seq.len();
    let (mut picks, mut seq) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    let (mut f, mut o) = (0, 0);
    while f < fast_seq.len() || o < slow.seq.len() {
        if o == slow.seq.len() || (f < fast_seq.len() && fast_seq[f] < slow.seq[o]) {
            picks.push((0, f));
            seq.push(fast_seq[f]);
            f += 1;
        } else {
            picks.push((1, o));
            seq.push(slow.seq[o]);
            o += 1;
        }
    }
    let batch = interleave_record_batch(&[&fast, &slow.batch], &picks)?;
    Ok(Decoded {
        batch: with_seq(&schema, batch, seq)?,
        rejected: slow.rejected,
    })
}

/// What [`decode`] answers, from arrow-json alone: the reference the fast parser is tested
/// against.
pub fn decode_with_arrow_json(messages: &[Message]) -> Result<Decoded> {
    let all: Vec<usize> = (0..messages.len()).collect();
    let part = with_arrow_json(messages, &all)?;
    Ok(Decoded {
        batch: with_seq(&raw_with_seq_schema(), part.batch, part.seq)?,
        rejected: part.rejected,
    })
}

/// The rows arrow-json decoded from some of the messages.
struct Part {
    /// Raw schema, rows in message order.
    batch: RecordBatch,
    /// Message index of each row.
    seq: Vec<i64>,
    rejected: Vec<(usize, String)>,
}

/// Decodes `messages[i]` for every `i` in `indices` (ascending) with arrow-json: all in one
/// decoder, or, when that fails, one by one to find the bad ones.
fn with_arrow_json(messages: &[Message], indices: &[usize]) -> Result<Part> {
    let together = decode_all(
        indices.iter().map(|&i| &messages[i].payload[..]),
        indices.len(),
    );
    if let Ok(batch) = together {
        let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&RAW_SCHEMA)));
        if batch.num_rows() == indices.len() {
            return Ok(Part {
                batch,
                seq: indices.iter().map(|&i| i as i64).collect(),
                rejected: Vec::new(),
            });
        }
    }
    let mut good = Vec::new();
    let mut seq = Vec::new();
    let mut rejected = Vec::new();
    for &i in indices {
        match decode_all(std::iter::once(&messages[i].payload[..]), 1) {
            Ok(Some(b)) if b.num_rows() == 1 => {
                good.push(b);
                seq.push(i as i64);
            }
            Ok(_) => rejected.push((i, "payload is not exactly one JSON object".to_string())),
            Err(e) => rejected.push((i, e)),
        }
    }
    Ok(Part {
        batch: concat_batches(&RAW_SCHEMA, &good)?,
        seq,
        rejected,
    })
}

/// `batch` (raw schema) with `seq` appended as `_seq`.
fn with_seq(schema: &SchemaRef, batch: RecordBatch, seq: Vec<i64>) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(seq)));
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    fn msg(i: i64, payload: &str) -> Message {
        Message {
            topic: "t".into(),
            partition: 0,
            offset: i,
            key: None,
            payload: payload.as_bytes().to_vec().into(),
        }
    }

    const GOOD: &str = r#"{"timestamp":"2026-11-25T10:00:00Z","icao24":"abc123","callsign":"DLH1    ","origin_country":"Germany","latitude":50.0,"longitude":8,"velocity":200,"baro_altitude":null,"geo_altitude":null,"vertical_rate":null,"heading":90.5,"on_ground":false,"squawk":null,"spi":false,"position_source":0,"category":null,"sensors":[1,2],"last_contact":1795600800,"ingest_timestamp":"2026-11-25T10:00:01.5Z"}"#;

    #[test]
    fn decodes_a_clean_batch_in_one_pass() {
        let msgs = vec![msg(0, GOOD), msg(1, GOOD)];
        let d = decode(&msgs).unwrap();
        assert!(d.rejected.is_empty());
        assert_eq!(d.batch.num_rows(), 2);
        let lon = d
            .batch
            .column_by_name("longitude")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(lon.value(0), 8.0, "integer-valued floats decode");
        let ts = d.batch.column_by_name("ingest_timestamp").unwrap();
        assert_eq!(ts.data_type(), &crate::schema::timestamp_type());
        let seq = d
            .batch
            .column_by_name(SEQ_COLUMN)
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(seq.values().to_vec(), vec![0, 1]);
        assert_eq!(d.batch.column_by_name("sensors").unwrap().null_count(), 0);
    }

    #[test]
    fn isolates_bad_payloads_and_keeps_neighbours() {
        let msgs = vec![
            msg(0, GOOD),
            msg(1, "{\"timestamp\": tru"),
            msg(2, GOOD),
            msg(
                3,
                &GOOD.replace("\"velocity\":200", "\"velocity\":\"fast\""),
            ),
            msg(4, ""),
            msg(5, &format!("{GOOD}{GOOD}")),
            msg(6, &GOOD.replace("\"spi\":false,", "")),
            msg(
                7,
                &GOOD.replace("\"spi\":false", "\"spi\":false,\"extra\":1"),
            ),
            msg(8, GOOD),
        ];
        let d = decode(&msgs).unwrap();
        let seq = d
            .batch
            .column_by_name(SEQ_COLUMN)
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(seq.values().to_vec(), vec![0, 2, 8]);
        let rejected: Vec<usize> = d.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(rejected, vec![1, 3, 4, 5, 6, 7]);
        assert!(d.rejected.iter().all(|(_, m)| !m.is_empty()));
    }

    #[test]
    fn a_key_written_twice_is_rejected_as_ingest_rejects_it() {
        let twice = GOOD.replace("\"velocity\":200", "\"velocity\":200,\"velocity\":9");
        let escaped = GOOD.replace("\"velocity\":200", "\"velocity\":200,\"veloc\\u0069ty\":9");
        assert!(crate::ingest::validate::validate(twice.as_bytes()).is_err());
        let msgs = vec![msg(0, &twice), msg(1, GOOD), msg(2, &escaped)];
        let d = decode(&msgs).unwrap();
        assert_eq!(d.batch.num_rows(), 1);
        let rejected: Vec<(usize, &str)> =
            d.rejected.iter().map(|(i, m)| (*i, m.as_str())).collect();
        let why = "field \"velocity\" appears twice (ingest rejects such records too)";
        assert_eq!(rejected, [(0, why), (2, why)]);
    }
}
