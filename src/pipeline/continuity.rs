//! Per-aircraft continuity: each aircraft's last report, kept across micro-batches and
//! offered to `features.sql` as the table `previous`, so a feature can compare a report
//! with the one before it even when the two arrived in different batches.
//!
//! Topics are keyed by icao24, so this state is local to the partitions a processor owns;
//! it is kept in [`super::window::PartitionState`] and restored from the changelog.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimestampMicrosecondType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::timestamp_type;

pub static PREVIOUS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("icao24", DataType::Utf8, false),
        Field::new("prev_timestamp", timestamp_type(), false),
        Field::new("prev_latitude", DataType::Float64, false),
        Field::new("prev_longitude", DataType::Float64, false),
        Field::new("prev_altitude_ft", DataType::Float64, true),
        Field::new("prev2_timestamp", timestamp_type(), true),
        Field::new("prev2_latitude", DataType::Float64, true),
        Field::new("prev2_longitude", DataType::Float64, true),
        Field::new("prev2_altitude_ft", DataType::Float64, true),
    ]))
});

/// One report's position, as continuity keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub timestamp_us: i64,
    pub latitude: f64,
    pub longitude: f64,
    pub altitude_ft: Option<f64>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::Internal(format!("continuity needs column {name}")))
}

/// The `previous` table: one row per aircraft with its (latest, before) fixes. Each
/// aircraft must appear once.
pub fn previous_table<'a>(
    rows: impl Iterator<Item = (&'a str, &'a (Fix, Option<Fix>))>,
) -> Result<RecordBatch> {
    let (mut ids, mut ts, mut lat, mut lon, mut alt) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut ts2, mut lat2, mut lon2, mut alt2) = (vec![], vec![], vec![], vec![]);
    for (id, (f, g)) in rows {
        ids.push(id);
        ts.push(f.timestamp_us);
        lat.push(f.latitude);
        lon.push(f.longitude);
        alt.push(f.altitude_ft);
        ts2.push(g.map(|g| g.timestamp_us));
        lat2.push(g.map(|g| g.latitude));
        lon2.push(g.map(|g| g.longitude));
        alt2.push(g.and_then(|g| g.altitude_ft));
    }
    Ok(RecordBatch::try_new(
        Arc::clone(&PREVIOUS_SCHEMA),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(lat)),
            Arc::new(Float64Array::from(lon)),
            Arc::new(Float64Array::from(alt)),
            Arc::new(TimestampMicrosecondArray::from(ts2).with_timezone("UTC")),
            Arc::new(Float64Array::from(lat2)),
            Arc::new(Float64Array::from(lon2)),
            Arc::new(Float64Array::from(alt2)),
        ],
    )?)
}

/// The fix of every row of a processed batch: (row, icao24, fix).
pub fn fixes(processed: &RecordBatch) -> Result<Vec<(usize, &str, Fix)>> {
    let ids = column(processed, "icao24")?.as_string::<i32>();
    let ts = column(processed, "timestamp")?.as_primitive::<TimestampMicrosecondType>();
    let lat = column(processed, "latitude")?.as_primitive::<Float64Type>();
    let lon = column(processed, "longitude")?.as_primitive::<Float64Type>();
    let alt = column(processed, "altitude_ft")?.as_primitive::<Float64Type>();
    Ok((0..processed.num_rows())
        .map(|i| {
            (
                i,
                ids.value(i),
                Fix {
                    timestamp_us: ts.value(i),
                    latitude: lat.value(i),
                    longitude: lon.value(i),
                    altitude_ft: alt.is_valid(i).then(|| alt.value(i)),
                },
            )
        })
        .collect())
}
