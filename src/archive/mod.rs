//! The Parquet archive: Hive-partitioned datasets `<root>/<dataset>/date=YYYY-MM-DD/hour=HH/`.
//!
//! Files are written under a hidden temporary name (`.name.tmp`, which DuckDB globs,
//! pyarrow datasets and Spark all skip), synced, and renamed into place, so readers never
//! see a half-written file. A file's name comes from the source partition and offset range
//! it holds, so writing the same input again replaces the file instead of adding rows.
//! Rows go to the hour of their event time (`timestamp`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::TimestampMicrosecondType;
use chrono::DateTime;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Writes one dataset of the archive.
#[derive(Debug, Clone)]
pub struct ArchiveWriter {
    dir: PathBuf,
    props: Arc<WriterProperties>,
}

impl ArchiveWriter {
    pub fn new(root: &Path, dataset: &str) -> Self {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid zstd level"),
            ))
            .build();
        Self {
            dir: root.join(dataset),
            props: Arc::new(props),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the rows of `batch`, which came from `source_partition` offsets
    /// `first..=last`, one file per event hour. Returns the files written.
    pub fn write(
        &self,
        batch: &RecordBatch,
        source_partition: i32,
        first: i64,
        last: i64,
    ) -> Result<Vec<PathBuf>> {
        let ts = batch
            .column_by_name("timestamp")
            .ok_or_else(|| Error::Internal("archived batches need a timestamp column".into()))?
            .as_primitive::<TimestampMicrosecondType>();
        let mut hours: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, t) in ts.values().iter().enumerate() {
            hours
                .entry(t.div_euclid(MICROS_PER_HOUR))
                .or_default()
                .push(i as u32);
        }
        let name = format!("part-p{source_partition:03}-{first:020}-{last:020}.parquet");
        let mut written = Vec::with_capacity(hours.len());
        for (hour, rows) in hours {
            let start = DateTime::from_timestamp_micros(hour * MICROS_PER_HOUR).unwrap_or_default();
            let dir = self
                .dir
                .join(start.format("date=%Y-%m-%d/hour=%H").to_string());
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(rows))?
            };
            written.push(self.write_file(&dir, &name, &part)?);
        }
        Ok(written)
    }

    fn write_file(&self, dir: &Path, name: &str, batch: &RecordBatch) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating archive folder", dir, e))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(name);
        let file = File::create(&tmp).map_err(|e| Error::io("creating archive file", &tmp, e))?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some((*self.props).clone()))?;
        writer.write(batch)?;
        let file = writer.into_inner()?;
        file.sync_all()
            .map_err(|e| Error::io("syncing archive file", &tmp, e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io("renaming archive file into place", &path, e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn batch(ts: Vec<i64>) -> RecordBatch {
        let n = ts.len() as i64;
        let schema = Schema::new(vec![
            Field::new("timestamp", crate::schema::timestamp_type(), false),
            Field::new("v", arrow::datatypes::DataType::Int64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
                Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn splits_by_event_hour_and_rewrites_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let w = ArchiveWriter::new(dir.path(), "processed");
        // 2026-11-25T10:59:59Z, 11:00:00Z, 10:30:00Z
        let t0 = 1_795_604_399_000_000;
        let b = batch(vec![t0, t0 + 1_000_000, t0 - 1_799_000_000]);
        let files = w.write(&b, 3, 100, 102).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "processed/date=2026-11-25/hour=10/part-p003-00000000000000000100-00000000000000000102.parquet",
                "processed/date=2026-11-25/hour=11/part-p003-00000000000000000100-00000000000000000102.parquet",
            ]
        );
        let rows = |p: &Path| {
            let r = ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                .unwrap()
                .build()
                .unwrap();
            r.map(|b| b.unwrap().num_rows()).sum::<usize>()
        };
        assert_eq!(rows(&files[0]), 2);
        assert_eq!(rows(&files[1]), 1);
        // The same input again replaces the files: no extra rows, no temporary files left.
        w.write(&b, 3, 100, 102).unwrap();
        assert_eq!(rows(&files[0]), 2);
        let leftovers: Vec<_> = std::fs::read_dir(files[0].parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
