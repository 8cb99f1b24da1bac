//! The decoder's fast path: a parser for raw records that writes straight into Arrow
//! builders for the raw schema.
//!
//! It accepts a subset of what arrow-json's decoder (strict mode, [`RAW_SCHEMA`]) accepts,
//! the records ingest publishes and anything written like them, and gives the values
//! arrow-json gives for them: keys in any order, JSON whitespace anywhere, numbers in JSON's
//! grammar (floats rounded correctly, as lexical-core rounds them; integers in range),
//! strings without escapes, timestamps written `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` with `Z` or
//! `+00:00`. Anything else (an escape, an unknown or repeated key, a missing required
//! field, a number where a string belongs, ...) makes [`RawBuilder::push`] return `false`
//! and leave the builders as they were; the caller hands that payload to arrow-json, which
//! decodes it or explains why not. `tests/fuzz.rs` checks that the two give the same batch
//! on valid, mutated and arbitrary input.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Array, Float64Builder, Int32Array, Int32Builder, Int64Array,
    ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;

use crate::error::Result;
use crate::json_cursor::Cursor;
use crate::schema::{RAW_KEYS, RAW_SCHEMA, timestamp_type};

/// Column builders for the raw schema, one row per accepted payload.
pub(super) struct RawBuilder {
    timestamp: Vec<i64>,
    icao24: StringBuilder,
    callsign: StringBuilder,
    origin_country: StringBuilder,
    latitude: Vec<f64>,
    longitude: Vec<f64>,
    velocity: Float64Builder,
    baro_altitude: Float64Builder,
    geo_altitude: Float64Builder,
    vertical_rate: Float64Builder,
    heading: Float64Builder,
    on_ground: BooleanBuilder,
    squawk: StringBuilder,
    spi: BooleanBuilder,
    position_source: Vec<i32>,
    category: Int32Builder,
    sensors: ListBuilder<Int32Builder>,
    last_contact: Vec<i64>,
    ingest_timestamp: Vec<i64>,
    /// The `sensors` of the row being parsed.
    scratch: Vec<Option<i32>>,
}

/// One parsed payload, before it is appended.
#[derive(Default)]
struct Row<'a> {
    /// Bit `n` set: field `n` (schema order) was present.
    seen: u32,
    timestamp: i64,
    icao24: &'a str,
    callsign: Option<&'a str>,
    origin_country: &'a str,
    latitude: f64,
    longitude: f64,
    velocity: Option<f64>,
    baro_altitude: Option<f64>,
    geo_altitude: Option<f64>,
    vertical_rate: Option<f64>,
    heading: Option<f64>,
    on_ground: bool,
    squawk: Option<&'a str>,
    spi: bool,
    position_source: i32,
    category: Option<i32>,
    sensors: bool,
    last_contact: i64,
    ingest_timestamp: i64,
}

/// Fields (schema order) that must be present and not null.
const REQUIRED: u32 = 1 << 0 // timestamp
    | 1 << 1 // icao24
    | 1 << 3 // origin_country
    | 1 << 4 // latitude
    | 1 << 5 // longitude
    | 1 << 11 // on_ground
    | 1 << 13 // spi
    | 1 << 14 // position_source
    | 1 << 17 // last_contact
    | 1 << 18; // ingest_timestamp

impl RawBuilder {
    pub(super) fn with_capacity(rows: usize) -> Self {
        let strings = || StringBuilder::with_capacity(rows, rows * 8);
        let floats = || Float64Builder::with_capacity(rows);
        let list_field = match RAW_SCHEMA.field(16).data_type() {
            DataType::List(item) => Arc::clone(item),
            other => unreachable!("sensors is a list, not {other}"),
        };
        Self {
            timestamp: Vec::with_capacity(rows),
            icao24: strings(),
            callsign: strings(),
            origin_country: strings(),
            latitude: Vec::with_capacity(rows),
            longitude: Vec::with_capacity(rows),
            velocity: floats(),
            baro_altitude: floats(),
            geo_altitude: floats(),
            vertical_rate: floats(),
            heading: floats(),
            on_ground: BooleanBuilder::with_capacity(rows),
            squawk: strings(),
            spi: BooleanBuilder::with_capacity(rows),
            position_source: Vec::with_capacity(rows),
            category: Int32Builder::with_capacity(rows),
            sensors: ListBuilder::with_capacity(Int32Builder::new(), rows).with_field(list_field),
            last_contact: Vec::with_capacity(rows),
            ingest_timestamp: Vec::with_capacity(rows),
            scratch: Vec::new(),
        }
    }

    /// Parses `payload` and appends it as a row; `false` (nothing appended) when the
    /// payload is outside what this parser accepts.
    pub(super) fn push(&mut self, payload: &[u8]) -> bool {
        let mut sensors = std::mem::take(&mut self.scratch);
        sensors.clear();
        let parsed = parse(payload, &mut sensors);
        if let Some(row) = &parsed {
            self.append(row, &sensors);
        }
        self.scratch = sensors;
        parsed.is_some()
    }

    fn append(&mut self, r: &Row<'_>, sensors: &[Option<i32>]) {
        self.timestamp.push(r.timestamp);
        self.icao24.append_value(r.icao24);
        self.callsign.append_option(r.callsign);
        self.origin_country.append_value(r.origin_country);
        self.latitude.push(r.latitude);
        self.longitude.push(r.longitude);
        self.velocity.append_option(r.velocity);
        self.baro_altitude.append_option(r.baro_altitude);
        self.geo_altitude.append_option(r.geo_altitude);
        self.vertical_rate.append_option(r.vertical_rate);
        self.heading.append_option(r.heading);
        self.on_ground.append_value(r.on_ground);
        self.squawk.append_option(r.squawk);
        self.spi.append_value(r.spi);
        self.position_source.push(r.position_source);
        self.category.append_option(r.category);
        if r.sensors {
            self.sensors.values().extend(sensors.iter().copied());
            self.sensors.append(true);
        } else {
            self.sensors.append_null();
        }
        self.last_contact.push(r.last_contact);
        self.ingest_timestamp.push(r.ingest_timestamp);
    }

    /// The rows appended so far, as a batch of the raw schema.
    pub(super) fn finish(mut self) -> Result<RecordBatch> {
        let timestamps =
            |v: Vec<i64>| TimestampMicrosecondArray::from(v).with_data_type(timestamp_type());
        let columns: Vec<ArrayRef> = vec![
            Arc::new(timestamps(self.timestamp)),
            Arc::new(self.icao24.finish()),
            Arc::new(self.callsign.finish()),
            Arc::new(self.origin_country.finish()),
            Arc::new(Float64Array::from(self.latitude)),
            Arc::new(Float64Array::from(self.longitude)),
            Arc::new(self.velocity.finish()),
            Arc::new(self.baro_altitude.finish()),
            Arc::new(self.geo_altitude.finish()),
            Arc::new(self.vertical_rate.finish()),
            Arc::new(self.heading.finish()),
            Arc::new(self.on_ground.finish()),
            Arc::new(self.squawk.finish()),
            Arc::new(self.spi.finish()),
            Arc::new(Int32Array::from(self.position_source)),
            Arc::new(self.category.finish()),
            Arc::new(self.sensors.finish()),
            Arc::new(Int64Array::from(self.last_contact)),
            Arc::new(timestamps(self.ingest_timestamp)),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&RAW_SCHEMA), columns)?)
    }
}

fn parse<'a>(payload: &'a [u8], sensors: &mut Vec<Option<i32>>) -> Option<Row<'a>> {
    let mut c = Cursor::new(std::str::from_utf8(payload).ok()?);
    let mut row = Row::default();
    c.object_keyed(&RAW_KEYS, |c, field| {
        let field = field?;
        if row.seen & (1 << field) != 0 {
            return None;
        }
        row.seen |= 1 << field;
        match field {
            0 => row.timestamp = c.timestamp()?,
            1 => row.icao24 = c.string()?,
            2 => row.callsign = c.nullable(Cursor::string)?,
            3 => row.origin_country = c.string()?,
            4 => row.latitude = c.f64()?,
            5 => row.longitude = c.f64()?,
            6 => row.velocity = c.nullable(Cursor::f64)?,
            7 => row.baro_altitude = c.nullable(Cursor::f64)?,
            8 => row.geo_altitude = c.nullable(Cursor::f64)?,
            9 => row.vertical_rate = c.nullable(Cursor::f64)?,
            10 => row.heading = c.nullable(Cursor::f64)?,
            11 => row.on_ground = c.bool()?,
            12 => row.squawk = c.nullable(Cursor::string)?,
            13 => row.spi = c.bool()?,
            14 => row.position_source = c.i32()?,
            15 => row.category = c.nullable(Cursor::i32)?,
            16 => row.sensors = c.sensors(sensors)?,
            17 => row.last_contact = c.i64()?,
            _ => row.ingest_timestamp = c.timestamp()?,
        }
        Some(())
    })?;
    (row.seen & REQUIRED == REQUIRED).then_some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_columns_are_the_raw_schema() {
        // finish() builds the batch against RAW_SCHEMA; an empty one checks every type.
        let batch = RawBuilder::with_capacity(0).finish().unwrap();
        assert_eq!(batch.schema(), *RAW_SCHEMA);
    }

    #[test]
    fn field_positions_and_required_fields_follow_the_schema() {
        for (n, field) in RAW_SCHEMA.fields().iter().enumerate() {
            assert_eq!(RAW_KEYS[n], field.name());
            let required = REQUIRED & (1 << n) != 0;
            assert_eq!(required, !field.is_nullable(), "{}", field.name());
        }
        assert_eq!(REQUIRED >> RAW_SCHEMA.fields().len(), 0);
    }

    #[test]
    fn refuses_what_it_leaves_to_arrow_json() {
        const GOOD: &str = r#"{"timestamp":"2026-11-25T10:00:00Z","icao24":"abc123","callsign":"DLH1    ","origin_country":"Germany","latitude":50.0,"longitude":8,"velocity":200,"baro_altitude":null,"geo_altitude":null,"vertical_rate":-1.5e1,"heading":90.5,"on_ground":false,"squawk":null,"spi":false,"position_source":0,"category":null,"sensors":[1,null],"last_contact":1795600800,"ingest_timestamp":"2026-11-25T10:00:01.5Z"}"#;
        let mut b = RawBuilder::with_capacity(4);
        assert!(b.push(GOOD.as_bytes()));
        assert!(b.push(format!(" \n{} ", GOOD.replace(",", " ,\t")).as_bytes()));
        for (from, to) in [
            ("\"DLH1    \"", "\"DLH\\u0031\""),
            ("\"spi\":false,", ""),
            ("\"spi\":false", "\"spi\":false,\"spi\":true"),
            ("\"spi\":false", "\"spi\":false,\"extra\":1"),
            ("\"velocity\":200", "\"velocity\":\"200\""),
            ("\"velocity\":200", "\"velocity\":0200"),
            ("\"velocity\":200", "\"velocity\":1e999"),
            ("\"position_source\":0", "\"position_source\":0.0"),
            ("\"position_source\":0", "\"position_source\":4294967296"),
            ("\"latitude\":50.0", "\"latitude\":null"),
            ("\"sensors\":[1,null]", "\"sensors\":[1,]"),
            ("}", "}{}"),
        ] {
            let payload = GOOD.replacen(from, to, 1);
            assert_ne!(payload, GOOD);
            assert!(!b.push(payload.as_bytes()), "{payload}");
        }
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let sensors = batch.column(16).as_any();
        let sensors = sensors
            .downcast_ref::<arrow::array::ListArray>()
            .unwrap()
            .value(1);
        let sensors = sensors.as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(sensors.iter().collect::<Vec<_>>(), vec![Some(1), None]);
        let vertical = batch.column(9).as_any().downcast_ref::<Float64Array>();
        assert_eq!(vertical.unwrap().value(0), -15.0);
    }
}
