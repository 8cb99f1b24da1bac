//! Arrow schemas of the record contracts, in one place.
//!
//! DESIGN.md defines the contracts; every stage that reads or writes a record uses the schema
//! from here, so a contract changes in exactly one file. The processed schema is not fixed
//! here: it is whatever `sql/features.sql` produces, checked against [`PROCESSED_FEATURES`]
//! when the pipeline starts.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Timestamps are microseconds in UTC everywhere: Spark, DuckDB, pandas and Polars all read
/// `TIMESTAMP(MICROS, UTC)` from Parquet without conversion.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `flight-raw-data`: one OpenSky state vector, in OpenSky's own (SI) units.
pub static RAW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("icao24", DataType::Utf8, false),
        Field::new("callsign", DataType::Utf8, true),
        Field::new("origin_country", DataType::Utf8, false),
        Field::new("latitude", DataType::Float64, false),
        Field::new("longitude", DataType::Float64, false),
        Field::new("velocity", DataType::Float64, true),
        Field::new("baro_altitude", DataType::Float64, true),
        Field::new("geo_altitude", DataType::Float64, true),
        Field::new("vertical_rate", DataType::Float64, true),
        Field::new("heading", DataType::Float64, true),
        Field::new("on_ground", DataType::Boolean, false),
        Field::new("squawk", DataType::Utf8, true),
        Field::new("spi", DataType::Boolean, false),
        Field::new("position_source", DataType::Int32, false),
        Field::new("category", DataType::Int32, true),
        Field::new(
            "sensors",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
            true,
        ),
        Field::new("last_contact", DataType::Int64, false),
        Field::new("ingest_timestamp", timestamp_type(), false),
    ]))
});

/// The raw record's keys in the order ingest writes them (the schema's): a key's position
/// here is its field's position in [`RAW_SCHEMA`] (and in `RawRecord`), the id the
/// hand-written parsers of raw records (ingest's validation, the decoder) give it.
pub(crate) const RAW_KEYS: [&str; 19] = [
    "timestamp",
    "icao24",
    "callsign",
    "origin_country",
    "latitude",
    "longitude",
    "velocity",
    "baro_altitude",
    "geo_altitude",
    "vertical_rate",
    "heading",
    "on_ground",
    "squawk",
    "spi",
    "position_source",
    "category",
    "sensors",
    "last_contact",
    "ingest_timestamp",
];

/// Name of the arrival-order column the pipeline adds to the `raw` table (row number within
/// the micro-batch). SQL may use it to order reports; it never leaves the pipeline.
pub const SEQ_COLUMN: &str = "_seq";

/// The largest raw record either stage accepts, in bytes. A state vector is about 350
/// bytes; anything near this size is not one, and Kafka's default 1 MB message limit would
/// refuse it further on (and its dead-letter record with it).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Columns `sql/features.sql` must produce besides every raw column (DESIGN.md,
/// `flight-processed-data`). `processing_timestamp` is stamped by the pipeline after the SQL.
pub const PROCESSED_FEATURES: &[&str] = &[
    "velocity_knots",
    "altitude_ft",
    "vertical_rate_fpm",
    "flight_phase",
    "hour",
    "day_of_week",
    "hour_sin",
    "hour_cos",
    "day_of_week_sin",
    "day_of_week_cos",
    "grid_x",
    "grid_y",
    "velocity_anomaly",
    "altitude_anomaly",
    "seconds_since_previous",
    "position_jump_km",
    "implied_speed_knots",
    "altitude_change_ft",
    "speed_mismatch_knots",
    "climb_mismatch_fpm",
    "emergency_squawk",
    "anomaly_score",
    "is_anomaly",
];

/// Stamped by the pipeline (from its injected clock) after the SQL stages ran.
pub const PROCESSING_TIMESTAMP: &str = "processing_timestamp";

/// Every column a `flight-processed-data` record must carry, in contract order.
pub fn processed_contract_columns() -> Vec<String> {
    processed_contract_keys().map(str::to_owned).collect()
}

/// [`processed_contract_columns`] as static strings.
pub(crate) fn processed_contract_keys() -> impl Iterator<Item = &'static str> {
    RAW_KEYS
        .into_iter()
        .chain(PROCESSED_FEATURES.iter().copied())
        .chain(std::iter::once(PROCESSING_TIMESTAMP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keys_are_the_schemas_fields_in_order() {
        let names: Vec<&str> = RAW_SCHEMA
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(RAW_KEYS.to_vec(), names);
    }

    #[test]
    fn processed_contract_keeps_every_raw_field_once() {
        let cols = processed_contract_columns();
        let mut sorted = cols.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), cols.len(), "duplicate column in contract");
        for f in RAW_SCHEMA.fields() {
            assert!(cols.contains(f.name()), "{} missing", f.name());
        }
        assert_eq!(cols.last().map(String::as_str), Some(PROCESSING_TIMESTAMP));
    }
}
