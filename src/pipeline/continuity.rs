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

/// The columns the pipeline appends to `clean` before `features.sql` runs: the `_seq` of
/// the aircraft's previous report in this micro-batch and of the one before it (arrival
/// order), null when it has none. With them `features.sql` finds earlier reports of the
/// same batch with two equi-joins on `_seq` instead of window functions over thousands
/// of per-aircraft partitions of a few rows each.
pub const PREV_SEQ_COLUMN: &str = "_prev_seq";
pub const PREV2_SEQ_COLUMN: &str = "_prev2_seq";

/// `clean` (the output of `clean.sql`, with icao24 and `_seq`) with [`PREV_SEQ_COLUMN`]
/// and [`PREV2_SEQ_COLUMN`] appended; rows keep their order.
pub fn with_links(clean: &RecordBatch) -> Result<RecordBatch> {
    let ids = column(clean, "icao24")?
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Internal("clean.sql must return icao24 as a string".into()))?;
    let seq =
        column(clean, crate::schema::SEQ_COLUMN)?.as_primitive::<arrow::datatypes::Int64Type>();
    let n = clean.num_rows();
    // Arrival order: clean.sql may have reordered its rows.
    let mut order: Vec<u32> = (0..n as u32).collect();
    if !seq.values().is_sorted() {
        order.sort_unstable_by_key(|&i| seq.value(i as usize));
    }
    let mut last: std::collections::HashMap<&str, (i64, Option<i64>)> =
        std::collections::HashMap::with_capacity(n.min(1 << 16));
    let mut prev = vec![None; n];
    let mut prev2 = vec![None; n];
    for &i in &order {
        let i = i as usize;
        if ids.is_null(i) {
            continue;
        }
        let s = seq.value(i);
        match last.entry(ids.value(i)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let (p, _) = *e.get();
                prev[i] = Some(p);
                prev2[i] = e.get().1;
                e.insert((s, Some(p)));
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((s, None));
            }
        }
    }
    let mut columns = clean.columns().to_vec();
    columns.push(Arc::new(arrow::array::Int64Array::from(prev)));
    columns.push(Arc::new(arrow::array::Int64Array::from(prev2)));
    Ok(RecordBatch::try_new(link_schema(&clean.schema()), columns)?)
}

/// `schema` (of `clean`) with the link columns [`with_links`] appends.
pub fn link_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().to_vec();
    for name in [PREV_SEQ_COLUMN, PREV2_SEQ_COLUMN] {
        fields.push(Arc::new(Field::new(name, DataType::Int64, true)));
    }
    Arc::new(Schema::new(fields))
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Int64Type;

    #[test]
    fn links_each_report_to_the_aircraft_s_two_before_it_in_arrival_order() {
        // Rows out of arrival order (as clean.sql may return them), one null icao24.
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("icao24", DataType::Utf8, true),
                Field::new("_seq", DataType::Int64, false),
            ])),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    Some("a"),
                    None,
                    Some("a"),
                    Some("b"),
                ])),
                Arc::new(Int64Array::from(vec![7, 1, 0, 2, 3, 9])),
            ],
        )
        .unwrap();
        let linked = with_links(&batch).unwrap();
        assert_eq!(linked.num_columns(), 4);
        let col = |name: &str| -> Vec<Option<i64>> {
            linked
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .collect()
        };
        // a arrives at 0, 3, 7; b at 1, 9.
        assert_eq!(
            col(PREV_SEQ_COLUMN),
            vec![Some(3), None, None, None, Some(0), Some(1)]
        );
        assert_eq!(
            col(PREV2_SEQ_COLUMN),
            vec![Some(0), None, None, None, None, None]
        );
    }
}
