//! The Parquet archive: Hive-partitioned datasets `<root>/<dataset>/date=YYYY-MM-DD/hour=HH/`.
//!
//! Files are written under a hidden temporary name (`.name.tmp`, which DuckDB globs,
//! pyarrow datasets and Spark all skip), synced, and renamed into place, so readers never
//! see a half-written file; then the folder is synced, so the rename itself (and a new
//! folder's entry in its parent) survives a power loss. A file's name comes from the source
//! partition and offset range it holds, so writing the same input again replaces the file
//! instead of adding rows.
//! Rows go to the hour of their event time (`timestamp`; `window_start` for windows).
//!
//! Where a micro-batch commits through Kafka, its files are *staged*: written and synced
//! under a hidden name that carries the batch's token (`.name.TOKEN.staged`), and renamed
//! into place by [`promote`] only once the batch's transaction has committed. The token
//! goes into the same transaction (the window-state changelog), so when a partition is
//! (re)assigned, [`ArchiveWriter::settle_partition`] knows which staged files belong to the
//! last committed batch (promoted, if a crash came between the commit and the renames) and
//! which to a batch that never committed (removed: a crash before the commit, or a
//! processor cut off from its group that finished a batch its transaction could not
//! commit). A file in place therefore always holds a committed batch's rows.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Schema, TimestampMicrosecondType};
use chrono::DateTime;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// How the archive's files are compressed (`--archive-compression`). Per 20,000 processed
/// rows on this project's benchmark machine (`cargo bench --bench pipeline -- stage/archive`):
/// snappy 20 ms and 2.65 MB, lz4 (Parquet's LZ4_RAW) 20 ms and 2.62 MB, zstd (level 3)
/// 38-41 ms and 2.12 MB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveCompression {
    /// Fast, and every Parquet reader (Spark of any version included) reads it.
    #[default]
    Snappy,
    /// Parquet's LZ4_RAW: as fast; Spark reads it from 3.4 on.
    Lz4,
    /// The smallest files, for about twice the CPU time.
    Zstd,
    /// Uncompressed.
    None,
}

impl ArchiveCompression {
    fn codec(self) -> Compression {
        match self {
            Self::Snappy => Compression::SNAPPY,
            Self::Lz4 => Compression::LZ4_RAW,
            Self::Zstd => Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")),
            Self::None => Compression::UNCOMPRESSED,
        }
    }
}

/// Writes one dataset of the archive.
#[derive(Debug, Clone)]
pub struct ArchiveWriter {
    dir: PathBuf,
    time_column: &'static str,
    compression: ArchiveCompression,
    /// The token of the batch whose files this writer stages; `None` writes them in place.
    stage: Option<Arc<str>>,
}

/// What [`ArchiveWriter::settle_partition`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Staged files of the last committed batch moved into place.
    pub promoted: usize,
    /// Staged and temporary files of batches that never committed, deleted.
    pub removed: usize,
}

impl std::ops::AddAssign for Settled {
    fn add_assign(&mut self, other: Self) {
        self.promoted += other.promoted;
        self.removed += other.removed;
    }
}

const STAGED_SUFFIX: &str = ".staged";

/// `(final name, token)` of a staged file's name, `.NAME.TOKEN.staged`.
fn staged_parts(file_name: &str) -> Option<(&str, &str)> {
    file_name
        .strip_prefix('.')?
        .strip_suffix(STAGED_SUFFIX)?
        .rsplit_once('.')
}

/// `(first, last)` offsets of a file named `part-pPPP-FIRST-LAST.parquet` after its
/// `part-pPPP-` prefix.
fn offsets(rest: &str) -> Option<(i64, i64)> {
    let (first, last) = rest.strip_suffix(".parquet")?.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

impl ArchiveWriter {
    /// Whether this writer stages its files (see [`Self::staged`]).
    pub fn is_staging(&self) -> bool {
        self.stage.is_some()
    }

    /// A dataset partitioned by its `timestamp` column.
    pub fn new(root: &Path, dataset: &str) -> Self {
        Self::with_time_column(root, dataset, "timestamp")
    }

    /// A dataset partitioned by `time_column` (a UTC microsecond timestamp).
    pub fn with_time_column(root: &Path, dataset: &str, time_column: &'static str) -> Self {
        Self {
            dir: root.join(dataset),
            time_column,
            compression: ArchiveCompression::default(),
            stage: None,
        }
    }

    /// This writer, staging the files it writes under `token` (a batch that commits
    /// through Kafka), or writing them in place (`None`).
    pub fn staged(&self, token: Option<&Arc<str>>) -> Self {
        Self {
            stage: token.cloned(),
            ..self.clone()
        }
    }

    pub fn with_compression(mut self, compression: ArchiveCompression) -> Self {
        self.compression = compression;
        self
    }

    /// Dictionary encoding only for the string columns (callsigns, countries, phases:
    /// few distinct values). Numbers are mostly distinct, so a dictionary costs time (every
    /// value hashed and interned) and, measured on processed rows, makes the files larger.
    fn props(&self, schema: &Schema) -> WriterProperties {
        let mut props = WriterProperties::builder()
            .set_compression(self.compression.codec())
            .set_dictionary_enabled(false);
        for field in schema.fields() {
            if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
            }
        }
        props.build()
    }

    /// Puts `source_partition`'s files in order when the partition is (re)assigned and its
    /// records are read again from offset `restart`: the staged files of batch `committed`
    /// (the token the changelog holds for the partition's last committed batch) that end
    /// before `restart` move into place; every other staged file of the partition, and any
    /// temporary file, is deleted. Files in place are left alone.
    pub fn settle_partition(
        &self,
        source_partition: i32,
        committed: Option<&str>,
        restart: i64,
    ) -> Result<Settled> {
        let prefix = format!("part-p{source_partition:03}-");
        let mut settled = Settled::default();
        let mut promoted = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("listing archive folder", dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("listing archive folder", &dir, e))?;
                let path = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let promote = match staged_parts(&name) {
                    Some((file, token)) => match file.strip_prefix(&prefix) {
                        None => continue,
                        Some(rest) => {
                            Some(token) == committed
                                && offsets(rest).is_some_and(|(_, last)| last < restart)
                        }
                    },
                    None if name.starts_with(&format!(".{prefix}")) && name.ends_with(".tmp") => {
                        false
                    }
                    None => continue,
                };
                if promote {
                    promoted.push(path);
                } else {
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io("removing uncommitted archive file", &path, e))?;
                    settled.removed += 1;
                }
            }
        }
        settled.promoted = promote(&promoted)?;
        Ok(settled)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the rows of `batch`, which came from `source_partition` offsets
    /// `first..=last`, one file per event hour, durably. Returns the files written.
    pub fn write(
        &self,
        batch: &RecordBatch,
        source_partition: i32,
        first: i64,
        last: i64,
    ) -> Result<Vec<PathBuf>> {
        let files = self.write_unsynced(batch, source_partition, first, last)?;
        sync_folders(&files)?;
        Ok(files)
    }

    /// [`Self::write`] without syncing the files' folders: the caller passes the files of
    /// all its writes to [`sync_folders`] once (several partitions' files of a micro-batch
    /// share an hour's folder).
    pub fn write_unsynced(
        &self,
        batch: &RecordBatch,
        source_partition: i32,
        first: i64,
        last: i64,
    ) -> Result<Vec<PathBuf>> {
        let ts = batch
            .column_by_name(self.time_column)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "archived batches need a {} column",
                    self.time_column
                ))
            })?
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

    /// Writes and syncs one file; returns where it is: in place, or staged.
    fn write_file(&self, dir: &Path, name: &str, batch: &RecordBatch) -> Result<PathBuf> {
        create_folder(dir)?;
        let tmp = match &self.stage {
            Some(token) => dir.join(format!(".{name}.{token}{STAGED_SUFFIX}")),
            None => dir.join(format!(".{name}.tmp")),
        };
        let file = File::create(&tmp).map_err(|e| Error::io("creating archive file", &tmp, e))?;
        let schema = batch.schema();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(self.props(&schema)))?;
        writer.write(batch)?;
        let file = writer.into_inner()?;
        file.sync_all()
            .map_err(|e| Error::io("syncing archive file", &tmp, e))?;
        if self.stage.is_some() {
            return Ok(tmp);
        }
        let path = dir.join(name);
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io("renaming archive file into place", &path, e))?;
        Ok(path)
    }
}

/// Moves staged files into place, once their batch has committed, and syncs their
/// folders. A file already gone was moved by the partition's next owner, which found the
/// batch committed when it took the partition over ([`ArchiveWriter::settle_partition`]).
/// Returns how many this call moved.
pub fn promote(staged: &[PathBuf]) -> Result<usize> {
    let mut moved = Vec::with_capacity(staged.len());
    for path in staged {
        let name = path.file_name().map(|n| n.to_string_lossy());
        let Some((file, _)) = name.as_deref().and_then(staged_parts) else {
            return Err(Error::Internal(format!(
                "{} is not a staged archive file",
                path.display()
            )));
        };
        let target = path.with_file_name(file);
        match std::fs::rename(path, &target) {
            Ok(()) => moved.push(target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    "moving a staged archive file into place",
                    path,
                    e,
                ));
            }
        }
    }
    sync_folders(&moved)?;
    Ok(moved.len())
}

/// Syncs the folder of each of `files` once, so their renames into place are on disk.
pub fn sync_folders(files: &[PathBuf]) -> Result<()> {
    let folders: std::collections::BTreeSet<&Path> =
        files.iter().filter_map(|f| f.parent()).collect();
    folders.into_iter().try_for_each(sync_folder)
}

fn sync_folder(dir: &Path) -> Result<()> {
    // The parent of a relative path's first component is "".
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing archive folder", dir, e))
}

/// Creates `dir` and its missing parents, syncing the folder that holds each new one.
fn create_folder(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.is_dir()).collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating archive folder", dir, e))?;
    missing
        .iter()
        .filter_map(|d| d.parent())
        .try_for_each(sync_folder)
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

    #[test]
    fn compression_as_configured_and_dictionaries_only_for_strings() {
        use arrow::array::{Float64Array, StringArray};
        use parquet::basic::Encoding;
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let t0 = 1_795_604_399_000_000;
        let batch = RecordBatch::try_from_iter(vec![
            (
                "timestamp",
                Arc::new(TimestampMicrosecondArray::from(vec![t0; 4]).with_timezone("UTC"))
                    as arrow::array::ArrayRef,
            ),
            ("phase", Arc::new(StringArray::from(vec!["cruise"; 4]))),
            ("v", Arc::new(Float64Array::from(vec![1.5, 1.5, 2.5, 1.5]))),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (setting, codec) in [
            (ArchiveCompression::Snappy, Compression::SNAPPY),
            (ArchiveCompression::Lz4, Compression::LZ4_RAW),
            (ArchiveCompression::None, Compression::UNCOMPRESSED),
        ] {
            let w =
                ArchiveWriter::new(dir.path(), &format!("{setting:?}")).with_compression(setting);
            let file = w.write(&batch, 0, 0, 3).unwrap().remove(0);
            let reader = SerializedFileReader::new(File::open(&file).unwrap()).unwrap();
            let group = reader.metadata().row_group(0);
            let dictionary = |i: usize| {
                group
                    .column(i)
                    .encodings()
                    .any(|e| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY))
            };
            assert!(
                (0..3).all(|i| group.column(i).compression() == codec),
                "{setting:?}"
            );
            assert!(dictionary(1), "strings keep their dictionary");
            assert!(
                !dictionary(0) && !dictionary(2),
                "numbers are written plain"
            );
        }
        let zstd =
            ArchiveWriter::new(dir.path(), "zstd").with_compression(ArchiveCompression::Zstd);
        let file = zstd.write(&batch, 0, 0, 3).unwrap().remove(0);
        let reader = SerializedFileReader::new(File::open(&file).unwrap()).unwrap();
        assert!(matches!(
            reader.metadata().row_group(0).column(2).compression(),
            Compression::ZSTD(_)
        ));
    }

    #[test]
    fn new_folders_are_created_and_synced_relative_paths_included() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/date=2026-11-25/hour=10");
        create_folder(&deep).unwrap();
        assert!(deep.is_dir());
        // A relative path's first folder lives in "" (the working folder).
        sync_folder(Path::new("")).unwrap();
        assert_eq!(Path::new("data").parent(), Some(Path::new("")));
    }

    #[test]
    fn staged_files_are_promoted_once_committed_and_removed_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let w = ArchiveWriter::new(dir.path(), "processed");
        let t0 = 1_795_604_399_000_000;
        let b = batch(vec![t0, t0 + 1_000_000]);
        let final_path = |p: &Path| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            p.with_file_name(staged_parts(&name).unwrap().0)
        };
        let hidden =
            |files: &[PathBuf]| files.iter().all(|p| p.exists() && !final_path(p).exists());
        // Batch A committed and promoted; batch B committed, crash before its promotion;
        // batch C never committed; partition 4's staged batch is not ours to settle.
        let a: Arc<str> = "aaaa".into();
        let b_token: Arc<str> = "bbbb".into();
        let c: Arc<str> = "cccc".into();
        let staged_a = w.staged(Some(&a)).write(&b, 3, 0, 99).unwrap();
        assert!(hidden(&staged_a), "staged files stay hidden until promoted");
        assert_eq!(promote(&staged_a).unwrap(), 2);
        let promoted_a: Vec<PathBuf> = staged_a.iter().map(|p| final_path(p)).collect();
        let staged_b = w.staged(Some(&b_token)).write(&b, 3, 100, 199).unwrap();
        let staged_c = w.staged(Some(&c)).write(&b, 3, 200, 260).unwrap();
        let other = w.staged(Some(&c)).write(&b, 4, 300, 400).unwrap();
        let tmp = staged_a[0].parent().unwrap().join(".part-p003-x.tmp");
        std::fs::write(&tmp, b"half").unwrap();
        assert!(hidden(&staged_b) && hidden(&staged_c));

        let settled = w.settle_partition(3, Some("bbbb"), 200).unwrap();
        assert_eq!(
            settled,
            Settled {
                promoted: 2,
                removed: 3
            }
        );
        assert!(promoted_a.iter().all(|p| p.exists()), "files in place stay");
        assert!(
            staged_b
                .iter()
                .all(|p| !p.exists() && final_path(p).exists())
        );
        assert!(
            staged_c
                .iter()
                .all(|p| !p.exists() && !final_path(p).exists())
        );
        assert!(!tmp.exists());
        assert!(hidden(&other), "other partitions are left alone");
        // The old owner promoting after the new owner did: nothing to move, no error.
        assert_eq!(promote(&staged_b).unwrap(), 0);
        // A staged file of the committed token at or past the restart offset is not the
        // committed batch's: removed.
        let late = w.staged(Some(&b_token)).write(&b, 3, 200, 210).unwrap();
        assert_eq!(
            w.settle_partition(3, Some("bbbb"), 200).unwrap(),
            Settled {
                promoted: 0,
                removed: 2
            }
        );
        assert!(late.iter().all(|p| !p.exists() && !final_path(p).exists()));
        // Nothing written yet: nothing to do.
        let empty = ArchiveWriter::new(dir.path(), "windows");
        assert_eq!(
            empty.settle_partition(0, None, 0).unwrap(),
            Settled::default()
        );
        assert!(promote(&[tmp]).is_err(), "only staged files are promoted");
    }
}
