//! The process stage: micro-batch -> Arrow -> `clean.sql` -> `features.sql` ->
//! `flight-processed-data` + the Parquet archive, committed with the batch's offsets.
//!
//! Nothing that enters leaves unaccounted: a payload that does not decode, or a row that
//! `clean.sql` filters out, becomes a dead letter with its original bytes; every other
//! record becomes exactly one processed record.

pub mod continuity;
pub mod decode;
pub mod encode;
pub mod sql;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::{filter_record_batch, sort_to_indices, take_record_batch};
use arrow::datatypes::{Field, Schema};
use tokio_util::sync::CancellationToken;

use crate::archive::ArchiveWriter;
use crate::bus::{BatchConsumer, Message, OutRecord};
use crate::clock::SharedClock;
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::schema::{PROCESSING_TIMESTAMP, SEQ_COLUMN, timestamp_type};
use crate::udf::Scorer;
use continuity::Continuity;
use sql::{SqlPipeline, SqlVars, seq_values};

/// Settings of the process stage.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub sql_dir: PathBuf,
    pub grid_cell_deg: f64,
    pub processed_topic: String,
    pub dead_letter_topic: String,
    /// Root of the Parquet archive; `None` archives nothing.
    pub archive_dir: Option<PathBuf>,
    pub batch_max_records: usize,
    pub batch_max_wait: Duration,
    /// The anomaly model file; `None` plans the SQL with an unfitted scorer (null scores),
    /// which is how `contrail train` computes features before a model exists.
    pub model_path: Option<PathBuf>,
}

/// Counters of the process stage.
#[derive(Debug, Default)]
pub struct ProcessStats {
    pub consumed: AtomicU64,
    pub processed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub archive_files: AtomicU64,
    pub anomalies: AtomicU64,
    pub model_reloads: AtomicU64,
    pub model_rejections: AtomicU64,
}

/// Turns micro-batches into output records; holds the per-aircraft state.
#[derive(Debug)]
pub struct Processor {
    config: ProcessConfig,
    sql: SqlPipeline,
    continuity: Continuity,
    archive: Option<ArchiveWriter>,
    clock: SharedClock,
    stats: Arc<ProcessStats>,
    scorer: Scorer,
    /// Modification time of the model file when it was last (re)loaded.
    model_mtime: Option<SystemTime>,
    /// Processed batches kept for the caller (`contrail train`, `contrail features`).
    keep: Option<Vec<RecordBatch>>,
}

impl Processor {
    pub async fn new(
        config: ProcessConfig,
        clock: SharedClock,
        stats: Arc<ProcessStats>,
    ) -> Result<Self> {
        if !(config.grid_cell_deg > 0.0 && config.grid_cell_deg <= 180.0) {
            return Err(Error::Config(format!(
                "--grid-cell-deg {} must be in (0, 180]",
                config.grid_cell_deg
            )));
        }
        let vars: SqlVars = [(
            "grid_cell_deg".to_string(),
            format!("{:?}", config.grid_cell_deg),
        )]
        .into();
        let (scorer, model_mtime) = match &config.model_path {
            Some(path) => {
                let model = Model::load(path).map_err(|e| {
                    Error::Config(format!(
                        "{e} (train one with `contrail train`, or pass --model)"
                    ))
                })?;
                (Scorer::fitted(model), mtime(path))
            }
            None => (Scorer::unfitted(), None),
        };
        let sql = SqlPipeline::load(&config.sql_dir, &vars, &scorer).await?;
        let archive = config
            .archive_dir
            .as_deref()
            .map(|root| ArchiveWriter::new(root, "processed"));
        Ok(Self {
            config,
            sql,
            continuity: Continuity::default(),
            archive,
            clock,
            stats,
            scorer,
            model_mtime,
            keep: None,
        })
    }

    /// The scorer the SQL calls (its model, or the features an unfitted one was asked for).
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// From now on, keep every processed batch for [`Processor::take_processed`].
    pub fn keep_processed(&mut self) {
        self.keep.get_or_insert_with(Vec::new);
    }

    pub fn take_processed(&mut self) -> Vec<RecordBatch> {
        self.keep.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Hot reload at a batch boundary: a changed model file is loaded, validated and
    /// swapped in; a bad one is logged and counted, and the current model keeps scoring.
    fn reload_model_if_changed(&mut self) {
        let Some(path) = &self.config.model_path else {
            return;
        };
        let now = mtime(path);
        if now.is_none() || now == self.model_mtime {
            return;
        }
        self.model_mtime = now;
        let current = self
            .scorer
            .model()
            .map(|m| m.features.clone())
            .unwrap_or_default();
        match Model::load(path) {
            Ok(model) if model.features == current => {
                tracing::info!(path = %path.display(), threshold = model.threshold, "anomaly model reloaded");
                self.scorer.swap(model);
                self.stats.model_reloads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(model) => {
                tracing::error!(
                    path = %path.display(),
                    new = %model.features.join(","),
                    running = %current.join(","),
                    "model file rejected: its features differ from the running SQL's; the last good model keeps scoring (restart to change features)"
                );
                self.stats.model_rejections.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "model file rejected; the last good model keeps scoring");
                self.stats.model_rejections.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn archive_dir(&self) -> Option<&std::path::Path> {
        self.archive.as_ref().map(ArchiveWriter::dir)
    }

    /// Processes one micro-batch; returns the records to publish with its commit. The
    /// Parquet files are written (and durable) before this returns.
    ///
    /// A record that makes the SQL fail at run time (a cast its values do not survive, say)
    /// does not stop the stage: the batch is processed again one record at a time, which
    /// gives the same results for the others, and the failing record is dead-lettered with
    /// reason `sql_error`.
    pub async fn process(&mut self, messages: &[Message]) -> Result<Vec<OutRecord>> {
        self.reload_model_if_changed();
        let now = self.clock.now();
        match self.process_batch(messages, now).await {
            Err(Error::Sql { .. }) if messages.len() > 1 => {
                tracing::warn!(
                    records = messages.len(),
                    "SQL failed on a micro-batch; retrying record by record"
                );
                let mut out = Vec::with_capacity(messages.len());
                for one in messages.chunks(1) {
                    match self.process_batch(one, now).await {
                        Err(Error::Sql { path, message }) => {
                            out.push(self.sql_error(&one[0], &path, &message, now));
                        }
                        other => out.extend(other?),
                    }
                }
                Ok(out)
            }
            Err(Error::Sql { path, message }) if messages.len() == 1 => {
                Ok(vec![self.sql_error(&messages[0], &path, &message, now)])
            }
            other => other,
        }
    }

    /// Dead-letters a record the SQL failed on, and counts it.
    fn sql_error(
        &self,
        m: &Message,
        path: &std::path::Path,
        message: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> OutRecord {
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.dead_letter(
            m,
            "sql_error",
            format!("{}: {message}", path.display()),
            now,
        )
    }

    fn dead_letter(
        &self,
        m: &Message,
        reason: &str,
        message: String,
        now: chrono::DateTime<chrono::Utc>,
    ) -> OutRecord {
        let dl = DeadLetter::new("process", reason, message, &m.payload, now).with_source(
            &m.topic,
            m.partition,
            m.offset,
        );
        OutRecord::new(&self.config.dead_letter_topic, m.key.clone(), dl.to_json())
    }

    async fn process_batch(
        &mut self,
        messages: &[Message],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<OutRecord>> {
        let mut out = Vec::with_capacity(messages.len());
        let dead = |i: usize, reason: &str, message: String, out: &mut Vec<OutRecord>| {
            out.push(self.dead_letter(&messages[i], reason, message, now));
        };

        let decoded = decode::decode(messages)?;
        for (i, message) in decoded.rejected {
            dead(i, "decode_error", message, &mut out);
        }
        let decoded_seq = seq_values(&decoded.batch);
        // The decoded batch always has the raw schema, so icao24 is there (Utf8).
        let icao24 = decoded
            .batch
            .column_by_name("icao24")
            .expect("raw schema column");
        let previous = self.continuity.previous_table(icao24.as_string::<i32>())?;
        let result = self.sql.run(decoded.batch, previous).await?;

        let kept: HashSet<i64> = result.kept.iter().copied().collect();
        for seq in decoded_seq.into_iter().filter(|s| !kept.contains(s)) {
            dead(
                seq as usize,
                "filtered_by_clean_sql",
                "row removed by clean.sql".into(),
                &mut out,
            );
        }
        let dead_count = out.len() as u64;

        // Arrival order, as the bus delivered them; window functions may have reordered.
        let features = &result.features;
        let order = sort_to_indices(
            features.column_by_name(SEQ_COLUMN).expect("checked by sql"),
            None,
            None,
        )?;
        let features = take_record_batch(features, &order)?;
        self.continuity.update(&features)?;
        let seq = seq_values(&features);
        let processed = finish(&features, now.timestamp_micros())?;
        if let Some(flags) = processed
            .column_by_name("is_anomaly")
            .and_then(|c| c.as_boolean_opt())
        {
            self.stats
                .anomalies
                .fetch_add(flags.true_count() as u64, Ordering::Relaxed);
        }
        if let Some(keep) = self.keep.as_mut() {
            keep.push(processed.clone());
        }

        for (row, key) in encode::to_json_rows(&processed)?
            .into_iter()
            .zip(keys(&processed))
        {
            out.push(OutRecord::new(&self.config.processed_topic, key, row));
        }
        if let Some(archive) = &self.archive {
            let files = archive_by_partition(archive, &processed, &seq, messages)?;
            self.stats.archive_files.fetch_add(files, Ordering::Relaxed);
        }
        self.stats
            .consumed
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.stats
            .processed
            .fetch_add(processed.num_rows() as u64, Ordering::Relaxed);
        self.stats
            .dead_lettered
            .fetch_add(dead_count, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }
}

/// Drops `_seq` and appends `processing_timestamp`.
fn finish(features: &RecordBatch, now_us: i64) -> Result<RecordBatch> {
    let schema = features.schema();
    let mut fields: Vec<Field> = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(features.columns()) {
        if field.name() != SEQ_COLUMN {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    fields.push(Field::new(PROCESSING_TIMESTAMP, timestamp_type(), false));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![now_us; features.num_rows()]).with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn keys(batch: &RecordBatch) -> Vec<Option<Vec<u8>>> {
    let ids = batch
        .column_by_name("icao24")
        .expect("contract column")
        .as_string::<i32>();
    ids.iter()
        .map(|s| s.map(|s| s.as_bytes().to_vec()))
        .collect()
}

/// One archive write per source partition, named by that partition's offset range in the
/// micro-batch. Returns the number of files written.
fn archive_by_partition(
    archive: &ArchiveWriter,
    batch: &RecordBatch,
    seq: &[i64],
    messages: &[Message],
) -> Result<u64> {
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for m in messages {
        let r = ranges.entry(m.partition).or_insert((m.offset, m.offset));
        r.0 = r.0.min(m.offset);
        r.1 = r.1.max(m.offset);
    }
    let single = ranges.len() == 1;
    let mut files = 0;
    for (partition, (first, last)) in ranges {
        let part = if single {
            batch.clone()
        } else {
            let mask: BooleanArray = seq
                .iter()
                .map(|s| Some(messages[*s as usize].partition == partition))
                .collect();
            filter_record_batch(batch, &mask)?
        };
        if part.num_rows() > 0 {
            files += archive.write(&part, partition, first, last)?.len() as u64;
        }
    }
    Ok(files)
}

/// Runs the process stage until the bus ends or `shutdown` fires. A batch in progress is
/// always finished and committed; shutdown only interrupts the wait for the next one.
pub async fn run_process(
    processor: &mut Processor,
    consumer: &mut dyn BatchConsumer,
    shutdown: CancellationToken,
) -> Result<()> {
    let (max_records, max_wait) = (
        processor.config.batch_max_records,
        processor.config.batch_max_wait,
    );
    loop {
        let batch = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            batch = consumer.next_batch(max_records, max_wait) => batch?,
        };
        let Some(messages) = batch else { return Ok(()) };
        if messages.is_empty() {
            continue;
        }
        let outputs = processor.process(&messages).await?;
        consumer.commit(outputs).await?;
    }
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
