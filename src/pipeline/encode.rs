//! Arrow -> JSON: one `flight-processed-data` payload per row, every column present
//! (nulls explicit), non-finite floats written as null so the output is always valid JSON.

use arrow::array::RecordBatch;
use arrow::json::writer::{LineDelimited, WriterBuilder};

use crate::error::Result;

/// Encodes each row of `batch` as one JSON object.
pub fn to_json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut buf = Vec::with_capacity(batch.num_rows() * 900);
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(&mut buf);
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    // JSON strings escape newlines, so each line is exactly one row.
    Ok(buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn one_object_per_row_with_explicit_nulls_and_utc_timestamps() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("t", crate::schema::timestamp_type(), false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a\nb"), None])),
                Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(1.5)])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_795_600_800_000_000, 0])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let rows = to_json_rows(&batch).unwrap();
        assert_eq!(rows.len(), 2);
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        assert_eq!(v[0]["s"], "a\nb");
        assert!(v[0]["f"].is_null());
        assert!(v[1]["s"].is_null() && v[1].as_object().unwrap().contains_key("s"));
        let t = v[0]["t"].as_str().unwrap();
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp(),
            1_795_600_800,
            "{t}"
        );
    }
}
