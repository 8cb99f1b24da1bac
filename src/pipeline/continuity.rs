//! Per-aircraft continuity: each aircraft's last report, kept across micro-batches and
//! offered to `features.sql` as the table `previous`, so a feature can compare a report
//! with the one before it even when the two arrived in different batches.
//!
//! Topics are keyed by icao24, so this state is local to the partitions a processor owns.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimestampMicrosecondType};

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

#[derive(Debug, Clone, Copy, PartialEq)]
struct Fix {
    timestamp_us: i64,
    latitude: f64,
    longitude: f64,
    altitude_ft: Option<f64>,
}

/// The last two reports of every aircraft seen: (latest, the one before).
#[derive(Debug, Default)]
pub struct Continuity {
    last: HashMap<String, (Fix, Option<Fix>)>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::Internal(format!("continuity needs column {name}")))
}

impl Continuity {
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// The `previous` table for the aircraft in `icao24`.
    pub fn previous_table(&self, icao24: &StringArray) -> Result<RecordBatch> {
        let mut seen = std::collections::HashSet::new();
        let (mut ids, mut ts, mut lat, mut lon, mut alt) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut ts2, mut lat2, mut lon2, mut alt2) = (vec![], vec![], vec![], vec![]);
        for id in icao24.iter().flatten() {
            if !seen.insert(id) {
                continue;
            }
            if let Some((f, g)) = self.last.get(id) {
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

    /// Remembers the last two reports per aircraft from a processed batch in arrival order.
    pub fn update(&mut self, processed: &RecordBatch) -> Result<()> {
        let ids = column(processed, "icao24")?.as_string::<i32>();
        let ts = column(processed, "timestamp")?.as_primitive::<TimestampMicrosecondType>();
        let lat = column(processed, "latitude")?.as_primitive::<Float64Type>();
        let lon = column(processed, "longitude")?.as_primitive::<Float64Type>();
        let alt = column(processed, "altitude_ft")?.as_primitive::<Float64Type>();
        for i in 0..processed.num_rows() {
            let fix = Fix {
                timestamp_us: ts.value(i),
                latitude: lat.value(i),
                longitude: lon.value(i),
                altitude_ft: alt.is_valid(i).then(|| alt.value(i)),
            };
            match self.last.get_mut(ids.value(i)) {
                Some((latest, before)) => {
                    *before = Some(*latest);
                    *latest = fix;
                }
                None => {
                    self.last.insert(ids.value(i).to_string(), (fix, None));
                }
            }
        }
        Ok(())
    }
}
