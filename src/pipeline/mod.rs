//! The process stage: micro-batch -> Arrow -> `clean.sql` -> `features.sql` ->
//! `flight-processed-data` + the Parquet archive, then `aggregate.sql` -> window state ->
//! closed windows (`flight-aircraft-aggregates`, `flight-aggregated-data`, Parquet), all
//! committed with the batch's offsets and the state's changelog records.
//!
//! Nothing that enters leaves unaccounted: a payload that does not decode, or a row that
//! `clean.sql` filters out, becomes a dead letter with its original bytes; every other
//! record becomes exactly one processed record. A processed record whose window was
//! already emitted is also published to the late-data topic (and counted).
//!
//! State is per source partition ([`window::PartitionState`]). When a partition's first
//! record arrives (at start-up, after a rebalance or a recovery), its state is restored
//! from the changelog, and its archive files are settled: those of its last committed
//! batch that a crash kept from moving into place are promoted, those of batches that
//! never committed removed (see [`crate::archive`]).

pub mod continuity;
pub mod decode;
pub mod encode;
pub mod merge;
mod raw_parser;
pub mod sql;
pub mod window;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::archive::{ArchiveCompression, ArchiveWriter, Settled};
use crate::bus::{BatchConsumer, BatchLimits, ChangelogReader, Message, OutRecord};
use crate::clock::SharedClock;
use crate::config::topic;
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::schema::{PROCESSING_TIMESTAMP, SEQ_COLUMN, timestamp_type};
use crate::udf::Scorer;
use merge::Merger;
use sql::{SqlPipeline, SqlVars, seq_values};
use window::{AircraftWindow, PartitionState, Progress, WindowPartial, WindowSpec};

/// Where the process stage writes.
#[derive(Debug, Clone)]
pub struct OutputTopics {
    pub processed: String,
    pub dead_letter: String,
    pub aggregated: String,
    pub aircraft_aggregates: String,
    pub late: String,
    pub changelog: String,
    /// Per-partition window partials on their way to the merger. `None` merges in-process
    /// (the embedded demo, where one processor owns every partition).
    pub partials: Option<String>,
}

impl Default for OutputTopics {
    fn default() -> Self {
        Self {
            processed: topic::PROCESSED.into(),
            dead_letter: topic::DEAD_LETTER.into(),
            aggregated: topic::AGGREGATED.into(),
            aircraft_aggregates: topic::AIRCRAFT_AGGREGATES.into(),
            late: topic::LATE.into(),
            changelog: topic::WINDOW_STATE.into(),
            partials: None,
        }
    }
}

/// Settings of the process stage.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub sql_dir: PathBuf,
    pub grid_cell_deg: f64,
    pub topics: OutputTopics,
    /// Root of the Parquet archive; `None` archives nothing.
    pub archive_dir: Option<PathBuf>,
    pub archive_compression: ArchiveCompression,
    /// When a micro-batch closes.
    pub batch: BatchLimits,
    /// The anomaly model file; `None` plans the SQL with an unfitted scorer (null scores),
    /// which is how `contrail train` computes features before a model exists.
    pub model_path: Option<PathBuf>,
    pub window: WindowSpec,
    /// Partitions of the raw topic (the merger waits for all of them).
    pub source_partitions: i32,
}

impl ProcessConfig {
    /// Defaults: default topics, no archive, no model, 10-minute windows, one partition.
    pub fn new(sql_dir: PathBuf) -> Self {
        Self {
            sql_dir,
            grid_cell_deg: 1.0,
            topics: OutputTopics::default(),
            archive_dir: None,
            archive_compression: ArchiveCompression::default(),
            batch: BatchLimits::new(20_000, Duration::from_millis(500))
                .with_idle(Duration::from_millis(3)),
            model_path: None,
            window: WindowSpec::default(),
            source_partitions: 1,
        }
    }
}

/// Counters of the process stage.
#[derive(Debug, Default)]
pub struct ProcessStats {
    pub consumed: AtomicU64,
    pub processed: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// The same records by reason code (`decode_error`, `filtered_by_clean_sql`, `sql_error`).
    pub dead_lettered_by: crate::metrics::Counts,
    /// Records behind their partition's watermark; window partials after their window closed.
    pub late: AtomicU64,
    /// Records left out of the windows because their event time was too far ahead.
    pub ahead: AtomicU64,
    pub late_partials: AtomicU64,
    pub batches: AtomicU64,
    pub archive_files: AtomicU64,
    pub anomalies: AtomicU64,
    pub model_reloads: AtomicU64,
    pub model_rejections: AtomicU64,
    /// `sql/*.sql` edits planned, checked and swapped in / rejected.
    pub sql_reloads: AtomicU64,
    pub sql_rejections: AtomicU64,
    pub aircraft_windows: AtomicU64,
    pub windows: AtomicU64,
    pub restores: AtomicU64,
    pub uncommitted_files_removed: AtomicU64,
    pub archive_files_promoted_on_restore: AtomicU64,
    /// Raw records per micro-batch, and the time to process and commit each.
    pub batch_records: crate::metrics::Histogram<crate::metrics::RecordBuckets>,
    pub batch_seconds: crate::metrics::Histogram<crate::metrics::SecondBuckets>,
    /// The two parts of a batch's time: processing it (up to its records being ready to
    /// commit), and its commit (which overlaps the next batch's processing).
    pub stage_seconds: crate::metrics::Histogram<crate::metrics::SecondBuckets>,
    pub commit_seconds: crate::metrics::Histogram<crate::metrics::SecondBuckets>,
    /// Where the stage's loop waits: for the bus to hand out the next micro-batch, and,
    /// once a batch is processed, for the previous commit to end and this one's to begin.
    pub poll_seconds: crate::metrics::Histogram<crate::metrics::SecondBuckets>,
    pub commit_wait_seconds: crate::metrics::Histogram<crate::metrics::SecondBuckets>,
    /// From each record's `ingest_timestamp` to the commit of its processed record.
    pub latency: crate::metrics::Histogram<crate::metrics::SecondBuckets>,
    /// Records not yet consumed per assigned (topic, partition), after the last batch.
    pub lag: std::sync::Mutex<Vec<(String, i32, i64)>>,
    /// Why the last edit of the SQL files, and of the model file, was rejected; `None`
    /// once the files load again (or were never rejected).
    pub rejected_sql: std::sync::Mutex<Option<String>>,
    pub rejected_model: std::sync::Mutex<Option<String>>,
}

impl ProcessStats {
    /// What an operator should know about and fix: edits the stage rejected and still
    /// runs without. Shown on `/health` and the dashboard.
    pub fn notices(&self) -> Vec<String> {
        let get = |m: &std::sync::Mutex<Option<String>>| m.lock().expect("stats lock").clone();
        let mut out = Vec::new();
        if let Some(e) = get(&self.rejected_sql) {
            out.push(format!(
                "SQL edit rejected; the last good plan keeps running: {e}"
            ));
        }
        if let Some(e) = get(&self.rejected_model) {
            out.push(format!(
                "Model file rejected; the last good model keeps scoring: {e}"
            ));
        }
        out
    }

    fn set(slot: &std::sync::Mutex<Option<String>>, value: Option<String>) {
        *slot.lock().expect("stats lock") = value;
    }
}

/// The Parquet datasets the stage writes.
#[derive(Debug)]
struct Archives {
    processed: ArchiveWriter,
    aircraft_windows: ArchiveWriter,
    windows: ArchiveWriter,
}

/// Turns micro-batches into output records; holds the per-partition state.
#[derive(Debug)]
pub struct Processor {
    config: ProcessConfig,
    sql: SqlPipeline,
    archive: Option<Archives>,
    clock: SharedClock,
    stats: Arc<ProcessStats>,
    scorer: Scorer,
    /// Modification time of the model file when it was last (re)loaded.
    model_mtime: Option<SystemTime>,
    /// Settings substituted into the SQL files, kept for reloads.
    sql_vars: SqlVars,
    /// The SQL files' contents as last loaded (or rejected), to notice edits.
    sql_texts: Vec<Option<Vec<u8>>>,
    /// Processed batches kept for the caller (`contrail train`, `contrail features`).
    keep: Option<Vec<RecordBatch>>,
    /// State of every raw partition this processor owns.
    partitions: BTreeMap<i32, PartitionState>,
    /// The global-window merger, while this processor owns the partials partition (always,
    /// when merging in-process).
    merger: Option<Merger>,
    changelog: Option<Arc<dyn ChangelogReader>>,
    /// Progress of the partitions in the batch being processed, for the merger.
    progress: Vec<Vec<u8>>,
    /// Last offset processed per partition (names the archive files `finish` writes).
    last_offsets: BTreeMap<i32, i64>,
    /// `ingest_timestamp` (µs) of the records of the last batch processed.
    uncommitted_ingest: Vec<i64>,
    /// Records of the last batch the running SQL processed whole: an edit must process
    /// them too before it replaces the running plan.
    sample: Vec<Message>,
    /// With a changelog and an archive: the token of the batch being processed, under
    /// which its Parquet files are staged and which its changelog records name.
    token: Option<Arc<str>>,
    /// Staged files of the batch being processed, moved into place once it commits
    /// ([`Processor::take_staged`]).
    staged: std::sync::Mutex<Vec<PathBuf>>,
    /// Batches processed by this processor, for unique tokens.
    batch_count: u64,
    /// A random number of this processor's, for unique tokens.
    instance: u64,
}

/// Changelog key naming the token of a source partition's last committed batch; the
/// merger's (`g/` keys) is [`MERGER_ARCHIVE_KEY`].
const ARCHIVE_KEY: &[u8] = b"archive";
const MERGER_ARCHIVE_KEY: &[u8] = b"g/archive";

/// The changelog value of [`ARCHIVE_KEY`]: `{"token":"..."}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct ArchiveManifest {
    token: String,
}

/// The token of the last committed batch among changelog `records` (under `key`).
fn committed_token(records: &[crate::bus::ChangelogRecord], key: &[u8]) -> Result<Option<String>> {
    let Some((_, value)) = records.iter().rev().find(|(k, _)| k == key) else {
        return Ok(None);
    };
    value
        .as_deref()
        .map(|v| window::from_json::<ArchiveManifest>(key, v).map(|m| m.token))
        .transpose()
}

/// How many records of a batch [`Processor`] keeps to try SQL edits on.
const SQL_SAMPLE: usize = 1_000;

impl std::fmt::Debug for dyn ChangelogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangelogReader")
    }
}

/// A micro-batch's records for one partition: first and last offset.
type Ranges = BTreeMap<i32, (i64, i64)>;

fn offset_ranges<'a>(messages: impl Iterator<Item = &'a Message>) -> Ranges {
    let mut ranges = Ranges::new();
    for m in messages {
        let r = ranges.entry(m.partition).or_insert((m.offset, m.offset));
        r.0 = r.0.min(m.offset);
        r.1 = r.1.max(m.offset);
    }
    ranges
}

fn rfc3339(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
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
        let w = &config.window;
        if w.length_us <= 0 || w.length_us % 1_000_000 != 0 {
            return Err(Error::Config(
                "--window-length must be a positive whole number of seconds".into(),
            ));
        }
        if w.delay_us < 0 || w.lateness_us < 0 || w.state_ttl_us < 0 {
            return Err(Error::Config(
                "--watermark-delay, --allowed-lateness and --state-ttl must not be negative".into(),
            ));
        }
        let vars: SqlVars = [
            (
                "grid_cell_deg".to_string(),
                format!("{:?}", config.grid_cell_deg),
            ),
            (
                "window_seconds".to_string(),
                (w.length_us / 1_000_000).to_string(),
            ),
        ]
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
        let sql_texts = sql_texts(&config.sql_dir);
        let sql = SqlPipeline::load(&config.sql_dir, &vars, &scorer).await?;
        let archive = config.archive_dir.as_deref().map(|root| {
            let dataset = |name, time_column| {
                ArchiveWriter::with_time_column(root, name, time_column)
                    .with_compression(config.archive_compression)
            };
            Archives {
                processed: dataset("processed", "timestamp"),
                aircraft_windows: dataset("aircraft_windows", "window_start"),
                windows: dataset("windows", "window_start"),
            }
        });
        let merger = config
            .topics
            .partials
            .is_none()
            .then(|| Merger::new(config.window, clock.now_micros()));
        Ok(Self {
            config,
            sql,
            archive,
            clock,
            stats,
            scorer,
            model_mtime,
            sql_vars: vars,
            sql_texts,
            keep: None,
            uncommitted_ingest: Vec::new(),
            sample: Vec::new(),
            partitions: BTreeMap::new(),
            merger,
            changelog: None,
            progress: Vec::new(),
            last_offsets: BTreeMap::new(),
            token: None,
            staged: std::sync::Mutex::default(),
            batch_count: 0,
            instance: rand::random(),
        })
    }

    /// The staged archive files of the batch last processed, to move into place
    /// ([`crate::archive::promote`]) once its commit has succeeded.
    pub fn take_staged(&mut self) -> Vec<PathBuf> {
        std::mem::take(self.staged.get_mut().expect("staged lock"))
    }

    /// The changelog record naming this batch's token for `key` in `partition`, when
    /// the batch stages its files.
    fn manifest(&self, key: &[u8], partition: i32) -> Result<Option<OutRecord>> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let value = window::to_json(&ArchiveManifest {
            token: token.to_string(),
        })?;
        Ok(Some(
            OutRecord::new(&self.config.topics.changelog, Some(key.to_vec()), value)
                .to_partition(partition),
        ))
    }

    /// Restore partition state from this changelog (Kafka); without one, a partition
    /// seen for the first time starts empty.
    pub fn with_changelog(mut self, reader: Arc<dyn ChangelogReader>) -> Self {
        self.changelog = Some(reader);
        self
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

    pub fn archive_dir(&self) -> Option<&std::path::Path> {
        self.archive.as_ref().map(|a| a.processed.dir())
    }

    /// Aircraft and open per-aircraft windows held, over all owned partitions.
    pub fn state_size(&self) -> (usize, usize) {
        self.partitions.values().fold((0, 0), |(a, w), p| {
            (a + p.aircraft_count(), w + p.open_windows())
        })
    }

    /// The windows of `records` (processed rows, e.g. read back from the archive) computed
    /// in one batch query with the same `aggregate.sql`, every window closed: per-aircraft
    /// rows and global rows as the stream emits them. The oracle of the window tests.
    pub async fn batch_windows(
        &self,
        records: &[RecordBatch],
    ) -> Result<(RecordBatch, RecordBatch)> {
        let spec = self.config.window;
        let mut per_aircraft: BTreeMap<(i64, String), window::Partial> = BTreeMap::new();
        for batch in records {
            let parts = vec![0; batch.num_rows()];
            for bp in self.sql.partials(batch, &parts).await? {
                per_aircraft
                    .entry((bp.window_start, bp.icao24))
                    .or_default()
                    .merge(&bp.stats)?;
            }
        }
        let aircraft: Vec<AircraftWindow> = per_aircraft
            .into_iter()
            .map(|((window_start, icao24), stats)| AircraftWindow {
                window_start,
                icao24,
                stats,
            })
            .collect();
        let global = window::partition_partials(&aircraft)?;
        Ok((
            window::aircraft_batch(&spec, &aircraft)?,
            window::global_batch(&spec, &global)?,
        ))
    }

    /// Drops the state of partitions taken away by a rebalance.
    pub fn revoke(&mut self, revoked: &[(String, i32)]) {
        for (t, p) in revoked {
            if Some(t) == self.config.topics.partials.as_ref() {
                self.merger = None;
            } else {
                self.partitions.remove(p);
            }
        }
    }

    /// Drops all state after a failed commit; it is restored from the changelog as the
    /// partitions' records arrive again.
    pub fn reset(&mut self) {
        self.partitions.clear();
        if self.config.topics.partials.is_some() {
            self.merger = None;
        }
    }

    /// After a micro-batch was committed: the batch histograms, and the end-to-end latency
    /// of every processed record in it.
    fn committed(&mut self, batch: &InFlight, commit: std::time::Duration) {
        let stats = &self.stats;
        stats.batch_records.observe(batch.records as f64);
        stats
            .batch_seconds
            .observe(batch.started.elapsed().as_secs_f64());
        stats.stage_seconds.observe(batch.stage.as_secs_f64());
        stats.commit_seconds.observe(commit.as_secs_f64());
        let now = self.clock.now_micros();
        stats
            .latency
            .observe_all(batch.ingest.iter().map(|t| (now - t) as f64 / 1e6));
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
                ProcessStats::set(&self.stats.rejected_model, None);
            }
            Ok(model) => {
                tracing::error!(
                    path = %path.display(),
                    new = %model.features.join(","),
                    running = %current.join(","),
                    "model file rejected: its features differ from the running SQL's; the last good model keeps scoring (restart to change features)"
                );
                self.stats.model_rejections.fetch_add(1, Ordering::Relaxed);
                ProcessStats::set(
                    &self.stats.rejected_model,
                    Some(format!(
                        "{}: its features ({}) differ from the running SQL's ({}); restart to change features",
                        path.display(),
                        model.features.join(","),
                        current.join(",")
                    )),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "model file rejected; the last good model keeps scoring");
                self.stats.model_rejections.fetch_add(1, Ordering::Relaxed);
                ProcessStats::set(&self.stats.rejected_model, Some(e.to_string()));
            }
        }
    }

    /// Hot reload at a batch boundary: when a `sql/*.sql` file changed, the three files
    /// are planned and checked against the output contract (as at start-up) and swapped
    /// in; an edit that does not plan or breaks the contract is logged with the file and
    /// the error, counted, and the last good plan keeps running.
    async fn reload_sql_if_changed(&mut self) {
        let texts = sql_texts(&self.config.sql_dir);
        if texts == self.sql_texts {
            return;
        }
        self.sql_texts = texts;
        let loaded = SqlPipeline::load(&self.config.sql_dir, &self.sql_vars, &self.scorer).await;
        let tried = match loaded {
            Ok(sql) => match schema_change(&self.sql.processed_schema(), &sql.processed_schema()) {
                Some(change) => Err(sql.features_error(format!(
                    "changes the processed records' columns ({change}); the topic and the archive would hold records of two shapes: restart to change them (with a new --data-dir for an archive of one schema)"
                ))),
                None => self.try_sql(&sql).await.map(|()| sql),
            },
            Err(e) => Err(e),
        };
        match tried {
            Ok(sql) => {
                tracing::info!(dir = %self.config.sql_dir.display(), "SQL files reloaded");
                self.sql = sql;
                self.stats.sql_reloads.fetch_add(1, Ordering::Relaxed);
                ProcessStats::set(&self.stats.rejected_sql, None);
            }
            Err(e) => {
                tracing::error!(error = %e, "SQL edit rejected; the last good plan keeps running");
                self.stats.sql_rejections.fetch_add(1, Ordering::Relaxed);
                ProcessStats::set(&self.stats.rejected_sql, Some(e.to_string()));
            }
        }
    }

    /// Runs an edited plan over the records the running one last processed whole, the
    /// state untouched: an edit that plans, but fails on rows (a cast, a division by
    /// zero), would otherwise fail every batch.
    async fn try_sql(&self, sql: &SqlPipeline) -> Result<()> {
        if self.sample.is_empty() {
            return Ok(());
        }
        let messages = &self.sample;
        let decoded = decode::decode(messages)?;
        let previous = self.previous_table(&decoded.batch, messages)?;
        let features = sql::sorted_by_seq(sql.run(decoded.batch, previous).await?.features)?;
        let processed = finish(&features, self.clock.now_micros())?;
        let parts: Vec<i32> = seq_values(&features)
            .iter()
            .map(|s| messages[*s as usize].partition)
            .collect();
        sql.partials(&processed, &parts).await?;
        Ok(())
    }

    /// Processes one micro-batch of raw records; returns the records to publish with its
    /// commit. See [`Processor::process_all`].
    pub async fn process(&mut self, messages: &[Message]) -> Result<Vec<OutRecord>> {
        self.process_all(messages, &[]).await
    }

    /// Processes one micro-batch: `raw` records and, when this processor merges through
    /// the partials topic, `progress` records from it. Returns the records to publish
    /// with its commit. The Parquet files are written (and durable) before this returns.
    ///
    /// A record that makes the SQL fail at run time (a cast its values do not survive, say)
    /// does not stop the stage: the batch is processed again in halves, and halves of
    /// those, until the failing records stand alone; that gives the others the results
    /// they have in one batch, and each failing record is dead-lettered with reason
    /// `sql_error`.
    pub async fn process_all(
        &mut self,
        raw: &[Message],
        progress: &[Message],
    ) -> Result<Vec<OutRecord>> {
        self.reload_model_if_changed();
        self.reload_sql_if_changed().await;
        // Callers that never commit (`contrail train`, `contrail features`) must not
        // collect a timestamp per record for ever: only this batch's are kept.
        self.uncommitted_ingest.clear();
        // A batch that failed after it closed windows left their partials here; it is
        // processed again from the committed state, which closes them again.
        self.progress.clear();
        // Files staged by a batch that failed stay until their partition is settled.
        self.staged.get_mut().expect("staged lock").clear();
        self.batch_count += 1;
        self.token = (self.changelog.is_some() && self.archive.is_some())
            .then(|| format!("{:016x}{:08x}", self.instance, self.batch_count).into());
        let now = self.clock.now();
        let ranges = offset_ranges(raw.iter());
        self.restore(&ranges, progress).await?;
        // A part the SQL fails on is halved until the failing records stand alone; each
        // part is processed from the state the parts before it left, in arrival order.
        let mut out = Vec::with_capacity(raw.len());
        let mut pending = vec![raw];
        while let Some(part) = pending.pop() {
            match self.process_batch(part, now).await {
                Err(Error::Sql { path, message }) => {
                    match part {
                        [] => return Err(Error::Sql { path, message }),
                        [one] => {
                            out.push(self.sql_error(one, &path, &message, now));
                            continue;
                        }
                        _ => {}
                    }
                    if part.len() == raw.len() {
                        tracing::warn!(
                            records = raw.len(),
                            "SQL failed on a micro-batch; retrying it in halves"
                        );
                    }
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
                other => {
                    out.extend(other?);
                    if part.len() == raw.len() && !raw.is_empty() {
                        self.sample.clear();
                        self.sample
                            .extend_from_slice(&raw[..raw.len().min(SQL_SAMPLE)]);
                    }
                }
            }
        }
        // The windows this batch closed: in-process, or from the partials topic.
        let mut progress_out = Vec::new();
        let updates = std::mem::take(&mut self.progress);
        if let Some(topic) = &self.config.topics.partials {
            for u in updates {
                progress_out.push(OutRecord::new(topic, None, u).to_partition(0));
            }
            if !progress.is_empty() {
                let payloads: Vec<&[u8]> = progress.iter().map(|m| &m.payload[..]).collect();
                let (partition, range) = offset_ranges(progress.iter())
                    .into_iter()
                    .next()
                    .expect("progress is not empty");
                out.extend(self.merge(&payloads, false, partition, range)?);
            }
        } else if !updates.is_empty()
            && let Some((&partition, &range)) = ranges.iter().next()
        {
            let payloads: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
            out.extend(self.merge(&payloads, false, partition, range)?);
        }
        out.extend(progress_out);
        Ok(out)
    }

    /// End of the input (a finished replay, the demo's end): closes every open window as
    /// if the watermark had passed it. Only for in-process merging.
    ///
    /// Its files are written in place: the input has ended, and no transaction follows.
    pub fn finish(&mut self) -> Result<Vec<OutRecord>> {
        self.token = None;
        let spec = self.config.window;
        let mut out = Vec::new();
        let mut payloads = Vec::new();
        // Files are named after the offset past the last one processed: no batch has it.
        let after = |p: i32| self.last_offsets.get(&p).map_or(0, |o| o + 1);
        let parts: Vec<i32> = self.partitions.keys().copied().collect();
        for p in parts {
            let st = self.partitions.get_mut(&p).expect("key");
            let closed = st.close(&spec, true);
            let wm = st.watermark(&spec);
            let range = (after(p), after(p));
            if let Some(progress) = self.emit_closed(p, wm, &closed, range, &mut out)? {
                payloads.push(progress);
            }
        }
        if self.config.topics.partials.is_none() {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let next = self.last_offsets.values().max().map_or(0, |o| o + 1);
            out.extend(self.merge(&refs, true, 0, (next, next))?);
        }
        Ok(out)
    }

    /// Settles `partition`'s archive files (of `datasets`) as its records are read again
    /// from `restart`, given its changelog `records` (see
    /// [`ArchiveWriter::settle_partition`]).
    fn settle(
        &self,
        datasets: &[&ArchiveWriter],
        partition: i32,
        records: &[crate::bus::ChangelogRecord],
        key: &[u8],
        restart: i64,
    ) -> Result<Settled> {
        let token = committed_token(records, key)?;
        let mut settled = Settled::default();
        for d in datasets {
            settled += d.settle_partition(partition, token.as_deref(), restart)?;
        }
        self.stats
            .uncommitted_files_removed
            .fetch_add(settled.removed as u64, Ordering::Relaxed);
        self.stats
            .archive_files_promoted_on_restore
            .fetch_add(settled.promoted as u64, Ordering::Relaxed);
        Ok(settled)
    }

    /// Restores the state of partitions seen for the first time, and the merger's.
    async fn restore(&mut self, ranges: &Ranges, progress: &[Message]) -> Result<()> {
        for (&p, &(first, _)) in ranges {
            if self.partitions.contains_key(&p) {
                continue;
            }
            let state = match &self.changelog {
                None => PartitionState::default(),
                Some(reader) => {
                    let records = reader.read(p).await?;
                    let state = PartitionState::restore(&records)?;
                    let settled = match &self.archive {
                        Some(a) => self.settle(
                            &[&a.processed, &a.aircraft_windows],
                            p,
                            &records,
                            ARCHIVE_KEY,
                            first,
                        )?,
                        None => Settled::default(),
                    };
                    tracing::info!(
                        partition = p,
                        changelog_records = records.len(),
                        aircraft = state.aircraft_count(),
                        open_windows = state.open_windows(),
                        archive_files_promoted = settled.promoted,
                        uncommitted_files_removed = settled.removed,
                        "partition state restored"
                    );
                    self.stats.restores.fetch_add(1, Ordering::Relaxed);
                    state
                }
            };
            self.partitions.insert(p, state);
        }
        if self.merger.is_none()
            && let Some(m) = progress.first()
        {
            let first = progress.iter().map(|m| m.offset).min().unwrap_or(m.offset);
            let records = match &self.changelog {
                Some(reader) => reader.read(m.partition).await?,
                None => Vec::new(),
            };
            let merger = Merger::restore(self.config.window, &records, self.clock.now_micros())?;
            let settled = match &self.archive {
                Some(a) => self.settle(
                    &[&a.windows],
                    m.partition,
                    &records,
                    MERGER_ARCHIVE_KEY,
                    first,
                )?,
                None => Settled::default(),
            };
            tracing::info!(
                open_windows = merger.open_windows(),
                archive_files_promoted = settled.promoted,
                uncommitted_files_removed = settled.removed,
                "window merger restored"
            );
            self.merger = Some(merger);
        }
        Ok(())
    }

    /// Dead-letters a record the SQL failed on, and counts it.
    fn sql_error(
        &self,
        m: &Message,
        path: &std::path::Path,
        message: &str,
        now: DateTime<Utc>,
    ) -> OutRecord {
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.stats.dead_lettered_by.add(&["sql_error"], 1);
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
        now: DateTime<Utc>,
    ) -> OutRecord {
        let dl = DeadLetter::new("process", reason, message, &m.payload, now).with_source(
            &m.topic,
            m.partition,
            m.offset,
        );
        OutRecord::new(&self.config.topics.dead_letter, m.key.clone(), dl.to_json())
    }

    /// Archive files are named by the offsets of `messages` (a part of the batch when the
    /// SQL failed on the whole), so no call overwrites another's file.
    async fn process_batch(
        &mut self,
        messages: &[Message],
        now: DateTime<Utc>,
    ) -> Result<Vec<OutRecord>> {
        let ranges = offset_ranges(messages.iter());
        let mut out = Vec::with_capacity(messages.len());
        let dead = |i: usize, reason: &str, message: String, out: &mut Vec<OutRecord>| {
            out.push(self.dead_letter(&messages[i], reason, message, now));
        };

        let decoded = decode::decode(messages)?;
        let decode_errors = decoded.rejected.len() as u64;
        for (i, message) in decoded.rejected {
            dead(i, "decode_error", message, &mut out);
        }
        let decoded_seq = seq_values(&decoded.batch);
        let previous = self.previous_table(&decoded.batch, messages)?;
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
        let reasons = [
            ("decode_error", decode_errors),
            ("filtered_by_clean_sql", dead_count - decode_errors),
        ];

        // Arrival order, as the bus delivered them; window functions may have reordered.
        let features = sql::sorted_by_seq(result.features)?;
        let seq = seq_values(&features);
        let row_partitions: Vec<i32> = seq
            .iter()
            .map(|s| messages[*s as usize].partition)
            .collect();
        let processed = finish(&features, now.timestamp_micros())?;

        // The Parquet files are encoded and synced on a blocking thread while the rest of
        // the batch is processed; the job is awaited whatever happens below, so no file of
        // this batch is written after this returns.
        let archiving = self.archive.as_ref().map(|a| {
            let (writer, batch) = (a.processed.staged(self.token.as_ref()), processed.clone());
            let (parts, ranges) = (row_partitions.clone(), ranges.clone());
            tokio::task::spawn_blocking(move || {
                archive_by_partition(&writer, &batch, &parts, &ranges)
            })
        });
        let rest = self
            .finish_batch(
                messages,
                &processed,
                &row_partitions,
                &seq,
                &ranges,
                &mut out,
            )
            .await;
        if let Some(job) = archiving {
            let files = job
                .await
                .map_err(|e| Error::Internal(format!("archive task: {e}")))??;
            if rest.is_ok() {
                self.stats
                    .archive_files
                    .fetch_add(files.len() as u64, Ordering::Relaxed);
                if self.token.is_some() {
                    self.staged.get_mut().expect("staged lock").extend(files);
                }
            } else {
                // The attempt failed (aggregate.sql, say) and its records are processed
                // again: its files go, so no row is archived twice.
                for f in &files {
                    std::fs::remove_file(f)
                        .map_err(|e| Error::io("removing a failed attempt's archive file", f, e))?;
                }
            }
        }
        rest?;
        if let Some(flags) = processed
            .column_by_name("is_anomaly")
            .and_then(|c| c.as_boolean_opt())
        {
            self.stats
                .anomalies
                .fetch_add(flags.true_count() as u64, Ordering::Relaxed);
        }
        if let Some(ts) = processed
            .column_by_name("ingest_timestamp")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        {
            self.uncommitted_ingest.extend(ts.iter().flatten());
        }
        if let Some(keep) = self.keep.as_mut() {
            keep.push(processed.clone());
        }
        let stats = &self.stats;
        stats
            .consumed
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        stats
            .processed
            .fetch_add(processed.num_rows() as u64, Ordering::Relaxed);
        stats.dead_lettered.fetch_add(dead_count, Ordering::Relaxed);
        for (reason, n) in reasons {
            stats.dead_lettered_by.add(&[reason], n);
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// The rest of [`Self::process_batch`] once the processed rows exist: the records for
    /// `flight-processed-data`, lateness and the window state, the windows the watermarks
    /// closed, and the state's changelog.
    async fn finish_batch(
        &mut self,
        messages: &[Message],
        processed: &RecordBatch,
        row_partitions: &[i32],
        seq: &[i64],
        ranges: &Ranges,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        let rows = encode::to_json_rows(processed)?;
        let keys = keys(processed);
        self.windows(processed, row_partitions, seq, messages, &rows, out)
            .await?;
        // Only now that nothing of the batch can fail in the SQL: a batch that fails there
        // is processed again, in parts, from the state as it was.
        for (row, icao24, fix) in continuity::fixes(processed)? {
            self.partitions
                .get_mut(&row_partitions[row])
                .expect("restored before processing")
                .record_fix(icao24, fix);
        }
        for (row, key) in rows.into_payloads().zip(keys) {
            out.push(OutRecord::new(&self.config.topics.processed, key, row));
        }
        // Windows the watermarks closed, and the state's changelog.
        let spec = self.config.window;
        for (&p, &range) in ranges {
            let st = self.partitions.get_mut(&p).expect("restored");
            let closed = st.close(&spec, false);
            st.expire(&spec);
            let wm = st.watermark(&spec);
            if let Some(progress) = self.emit_closed(p, wm, &closed, range, out)? {
                self.progress.push(progress);
            }
            self.last_offsets.insert(p, range.1);
            let st = self.partitions.get_mut(&p).expect("restored");
            out.extend(st.changelog(&self.config.topics.changelog, p)?);
            out.extend(self.manifest(ARCHIVE_KEY, p)?);
        }
        Ok(())
    }

    /// The `previous` table: continuity of the aircraft in the decoded batch, each from
    /// the state of the partition its record came from.
    fn previous_table(&self, decoded: &RecordBatch, messages: &[Message]) -> Result<RecordBatch> {
        // The decoded batch always has the raw schema, so icao24 and _seq are there.
        let icao24 = decoded
            .column_by_name("icao24")
            .expect("raw schema column")
            .as_string::<i32>();
        let seq = seq_values(decoded);
        let mut seen = HashSet::new();
        let rows = icao24.iter().zip(&seq).filter_map(|(id, s)| {
            let id = id?;
            let p = messages[*s as usize].partition;
            if !seen.insert(id) {
                return None;
            }
            // Ingest validated icao24 as six lowercase hex digits, as clean.sql keys it.
            self.partitions.get(&p)?.fixes(id).map(|f| (id, f))
        });
        continuity::previous_table(rows)
    }

    /// Decides which processed rows are late, publishes those, and merges the others'
    /// partials (from `aggregate.sql`) into the window state.
    async fn windows(
        &mut self,
        processed: &RecordBatch,
        row_partitions: &[i32],
        seq: &[i64],
        messages: &[Message],
        rows: &encode::JsonRows,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        let spec = self.config.window;
        let ts = processed
            .column_by_name("timestamp")
            .expect("contract column")
            .as_primitive::<TimestampMicrosecondType>();
        // The processor's clock when the batch began: a record's own ingest time would
        // trust the clock of whoever wrote it.
        let now_us = processed
            .column_by_name(PROCESSING_TIMESTAMP)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .filter(|c| !c.is_empty())
            .map_or(i64::MAX, |c| c.value(0));
        let mut on_time = Vec::with_capacity(processed.num_rows());
        let (mut late_count, mut ahead) = (0u64, 0u64);
        let mut expected: HashSet<(i32, i64)> = HashSet::new();
        // The watermarks as they were, for a failing aggregate.sql to leave them so.
        let before: Vec<(i32, Option<i64>)> = self
            .partitions
            .iter()
            .map(|(&p, st)| (p, st.max_event()))
            .collect();
        for (i, &p) in row_partitions.iter().enumerate() {
            let st = self.partitions.get_mut(&p).expect("restored");
            let t = ts.value(i);
            let m = &messages[seq[i] as usize];
            let limit = st.lead_limit(&spec, now_us);
            // Why the record counts in no window, as the head of its late-topic payload.
            let head = if t > limit {
                ahead += 1;
                format!(r#""reason":"ahead","limit":"{}""#, rfc3339(limit))
            } else {
                let wm = st.watermark(&spec);
                if !st.observe(&spec, t) {
                    on_time.push(true);
                    expected.insert((p, spec.start_of(t)));
                    continue;
                }
                late_count += 1;
                let start = spec.start_of(t);
                format!(
                    r#""reason":"late","window_start":"{}","window_end":"{}","watermark":"{}""#,
                    rfc3339(start),
                    rfc3339(start + spec.length_us),
                    rfc3339(wm),
                )
            };
            on_time.push(false);
            let mut payload = format!(
                r#"{{{head},"partition":{},"offset":{},"record":"#,
                m.partition, m.offset
            )
            .into_bytes();
            payload.extend_from_slice(rows.get(i));
            payload.push(b'}');
            out.push(OutRecord::new(
                &self.config.topics.late,
                m.key.clone(),
                payload,
            ));
        }
        let mask = BooleanArray::from(on_time);
        let records = filter_record_batch(processed, &mask)?;
        let parts: Vec<i32> = row_partitions
            .iter()
            .zip(mask.values().iter())
            .filter_map(|(p, keep)| keep.then_some(*p))
            .collect();
        let partials = match self.partials(&records, &parts, &expected).await {
            Ok(partials) => partials,
            Err(e) => {
                for (p, max_event) in before {
                    self.partitions
                        .get_mut(&p)
                        .expect("restored")
                        .rewind(max_event);
                }
                return Err(e);
            }
        };
        self.stats.late.fetch_add(late_count, Ordering::Relaxed);
        self.stats.ahead.fetch_add(ahead, Ordering::Relaxed);
        for bp in &partials {
            self.partitions
                .get_mut(&bp.partition)
                .expect("restored")
                .add(bp.window_start, &bp.icao24, &bp.stats)?;
        }
        Ok(())
    }

    /// aggregate.sql over the batch's on-time records, each partial checked to be a
    /// window one of them is in.
    async fn partials(
        &self,
        records: &RecordBatch,
        parts: &[i32],
        expected: &HashSet<(i32, i64)>,
    ) -> Result<Vec<window::BatchPartial>> {
        let spec = self.config.window;
        let partials = self.sql.partials(records, parts).await?;
        if let Some(bp) = partials
            .iter()
            .find(|bp| !expected.contains(&(bp.partition, bp.window_start)))
        {
            return Err(self.sql.aggregate_error(format!(
                "returned window {} for partition {}, which holds no on-time record of this batch: window_start must be date_bin of the {}-second window from the epoch",
                rfc3339(bp.window_start),
                bp.partition,
                spec.length_us / 1_000_000
            )));
        }
        Ok(partials)
    }

    /// Publishes a partition's closed per-aircraft windows (topic + archive) and returns
    /// the progress for the merger (its watermark and the windows' partials).
    fn emit_closed(
        &self,
        partition: i32,
        watermark: i64,
        closed: &[AircraftWindow],
        range: (i64, i64),
        out: &mut Vec<OutRecord>,
    ) -> Result<Option<Vec<u8>>> {
        let spec = &self.config.window;
        if !closed.is_empty() {
            self.publish_windows(
                &window::aircraft_batch(spec, closed)?,
                closed.iter().map(|w| w.window_start),
                &self.config.topics.aircraft_aggregates,
                self.archive
                    .as_ref()
                    .map(|a| a.aircraft_windows.staged(self.token.as_ref())),
                (partition, range),
                out,
            )?;
            self.stats
                .aircraft_windows
                .fetch_add(closed.len() as u64, Ordering::Relaxed);
        }
        if watermark == i64::MIN && closed.is_empty() {
            return Ok(None);
        }
        let progress = Progress {
            partition,
            partitions: self.config.source_partitions,
            watermark_us: watermark,
            windows: window::partition_partials(closed)?,
        };
        Ok(Some(window::to_json(&progress)?))
    }

    /// Publishes closed windows: one record per row (key: window start) and, with an
    /// archive, the rows as Parquet named by `source` (partition, offset range).
    fn publish_windows(
        &self,
        batch: &RecordBatch,
        starts: impl Iterator<Item = i64>,
        topic: &str,
        archive: Option<ArchiveWriter>,
        source: (i32, (i64, i64)),
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        for (row, start) in encode::to_json_rows(batch)?.into_payloads().zip(starts) {
            out.push(OutRecord::new(
                topic,
                Some(rfc3339(start).into_bytes()),
                row,
            ));
        }
        if let Some(archive) = archive {
            let (partition, (first, last)) = source;
            let files = archive.write(batch, partition, first, last)?;
            self.stats
                .archive_files
                .fetch_add(files.len() as u64, Ordering::Relaxed);
            if archive.is_staging() {
                self.staged.lock().expect("staged lock").extend(files);
            }
        }
        Ok(())
    }

    /// Feeds progress to the merger and publishes the global windows it closes.
    fn merge(
        &mut self,
        payloads: &[&[u8]],
        all: bool,
        partition: i32,
        range: (i64, i64),
    ) -> Result<Vec<OutRecord>> {
        let now = self.clock.now_micros();
        let spec = self.config.window;
        let merger = self
            .merger
            .as_mut()
            .ok_or_else(|| Error::Internal("merging without a merger".into()))?;
        let mut out = Vec::new();
        for payload in payloads {
            let progress: Progress = serde_json::from_slice(payload)
                .map_err(|e| Error::Bus(format!("a window-partials record does not parse: {e}")))?;
            for late in merger.apply(&progress, now)? {
                self.stats.late_partials.fetch_add(1, Ordering::Relaxed);
                out.push(late_partial(
                    &self.config.topics.late,
                    &spec,
                    &progress,
                    &late,
                ));
            }
        }
        let closed = merger.close(now, all);
        out.extend(merger.changelog(&self.config.topics.changelog, partition)?);
        let merges_through_topic = self.config.topics.partials.is_some();
        if merges_through_topic {
            out.extend(self.manifest(MERGER_ARCHIVE_KEY, partition)?);
        }
        if !closed.is_empty() {
            self.publish_windows(
                &window::global_batch(&spec, &closed)?,
                closed.iter().map(|w| w.window_start),
                &self.config.topics.aggregated,
                // Staged only where the merger's changelog settles them on restore.
                self.archive.as_ref().map(|a| {
                    a.windows
                        .staged(self.token.as_ref().filter(|_| merges_through_topic))
                }),
                (partition, range),
                &mut out,
            )?;
            self.stats
                .windows
                .fetch_add(closed.len() as u64, Ordering::Relaxed);
        }
        Ok(out)
    }
}

fn late_partial(
    topic: &str,
    spec: &WindowSpec,
    progress: &Progress,
    w: &WindowPartial,
) -> OutRecord {
    let v = serde_json::json!({
        "reason": "late_partial",
        "window_start": rfc3339(w.window_start),
        "window_end": rfc3339(w.window_start + spec.length_us),
        "partition": progress.partition,
        "event_count": w.stats.events,
        "unique_aircraft": w.aircraft,
    });
    OutRecord::new(
        topic,
        Some(rfc3339(w.window_start).into_bytes()),
        v.to_string().into_bytes(),
    )
}

/// Processed records from `features.sql` output: drops `_seq` and appends
/// `processing_timestamp` (`now_us`).
pub fn finish(features: &RecordBatch, now_us: i64) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = features
        .schema()
        .fields()
        .iter()
        .zip(features.columns())
        .filter(|(field, _)| field.name() != SEQ_COLUMN)
        .map(|(_, column)| Arc::clone(column))
        .collect();
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![now_us; features.num_rows()]).with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(
        processed_schema(&features.schema()),
        columns,
    )?)
}

/// The schema of processed records: `features.sql`'s output without `_seq`, with
/// `processing_timestamp` appended (see [`finish`]).
pub fn processed_schema(features: &Schema) -> arrow::datatypes::SchemaRef {
    let mut fields: Vec<Field> = features
        .fields()
        .iter()
        .filter(|f| f.name() != SEQ_COLUMN)
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(PROCESSING_TIMESTAMP, timestamp_type(), false));
    Arc::new(Schema::new(fields))
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
/// micro-batch. Returns the files written.
fn archive_by_partition(
    archive: &ArchiveWriter,
    batch: &RecordBatch,
    row_partitions: &[i32],
    ranges: &Ranges,
) -> Result<Vec<PathBuf>> {
    let single = ranges.len() == 1;
    let mut files = Vec::new();
    for (&partition, &(first, last)) in ranges {
        let part = if single {
            batch.clone()
        } else {
            let mask: BooleanArray = row_partitions
                .iter()
                .map(|p| Some(*p == partition))
                .collect();
            filter_record_batch(batch, &mask)?
        };
        if part.num_rows() > 0 {
            files.extend(archive.write_unsynced(&part, partition, first, last)?);
        }
    }
    crate::archive::sync_folders(&files)?;
    Ok(files)
}

/// Runs the process stage until the bus ends or `shutdown` fires. A batch in progress is
/// always finished and committed; shutdown only interrupts the wait for the next one.
///
/// The commit of a batch runs while the next one is read and processed (on buses that
/// commit in the background, [`BatchConsumer::start_commit`]); it is awaited before that
/// one commits, and before this returns.
///
/// A failed commit (the broker went away, the group moved on) is not the end: the bus
/// rewinds to its committed position, the state is dropped and restored from the
/// changelog, and the voided batches are processed again.
pub async fn run_process(
    processor: &mut Processor,
    consumer: &mut dyn BatchConsumer,
    shutdown: CancellationToken,
) -> Result<()> {
    let limits = processor.config.batch;
    let partials = processor.config.topics.partials.clone();
    let mut in_flight: Option<InFlight> = None;
    loop {
        let polling = std::time::Instant::now();
        let batch = tokio::select! {
            biased;
            () = shutdown.cancelled() => return settle(processor, in_flight.take()).await,
            batch = consumer.next_batch(limits) => batch,
        };
        processor
            .stats
            .poll_seconds
            .observe(polling.elapsed().as_secs_f64());
        let result = match batch {
            Err(e) => {
                settle(processor, in_flight.take()).await?;
                return Err(e);
            }
            Ok(None) => {
                settle(processor, in_flight.take()).await?;
                let outputs = processor.finish()?;
                return consumer.commit(outputs).await;
            }
            Ok(Some(messages)) => {
                processor.revoke(&consumer.take_revoked());
                if let Some(lag) = consumer.lag() {
                    *processor.stats.lag.lock().expect("lag lock") = lag;
                }
                step(
                    processor,
                    consumer,
                    messages,
                    partials.as_ref(),
                    &mut in_flight,
                )
                .await
            }
        };
        if let Err(e) = result {
            if !e.is_retryable() {
                return Err(e);
            }
            tracing::warn!(error = %e, "micro-batch failed; rewinding to the last commit");
            consumer.recover().await.map_err(|_| e)?;
            processor.reset();
        }
    }
}

/// A batch whose commit is under way.
struct InFlight {
    /// The commit, on a task of its own that notes how long it took.
    commit: tokio::task::JoinHandle<(Result<()>, std::time::Duration)>,
    records: usize,
    started: std::time::Instant,
    /// How long processing the batch took.
    stage: std::time::Duration,
    /// `ingest_timestamp` (µs) of its processed records.
    ingest: Vec<i64>,
}

/// Awaits the commit under way, if any, and counts its batch as committed.
async fn settle(processor: &mut Processor, in_flight: Option<InFlight>) -> Result<()> {
    if let Some(mut batch) = in_flight {
        let (result, took) = (&mut batch.commit)
            .await
            .map_err(|e| Error::Bus(format!("the commit task failed: {e}")))?;
        result?;
        processor.committed(&batch, took);
    }
    Ok(())
}

/// Processes one batch while the previous one's commit runs, then starts this one's.
async fn step(
    processor: &mut Processor,
    consumer: &mut dyn BatchConsumer,
    messages: Vec<Message>,
    partials: Option<&String>,
    in_flight: &mut Option<InFlight>,
) -> Result<()> {
    if messages.is_empty() {
        return settle(processor, in_flight.take()).await;
    }
    let (progress, raw): (Vec<Message>, Vec<Message>) = messages
        .into_iter()
        .partition(|m| Some(&m.topic) == partials);
    let started = std::time::Instant::now();
    let processed = processor.process_all(&raw, &progress).await;
    let stage = started.elapsed();
    let records = raw.len();
    drop((raw, progress));
    let waiting = std::time::Instant::now();
    settle(processor, in_flight.take()).await?;
    let outputs = processed?;
    let staged = processor.take_staged();
    let commit_began = std::time::Instant::now();
    let commit = consumer.start_commit(outputs).await?;
    processor
        .stats
        .commit_wait_seconds
        .observe(waiting.elapsed().as_secs_f64());
    // Once the batch has committed, its staged archive files move into place. Should
    // that fail, the partition's next restore moves them (the changelog names the batch).
    let commit = async move {
        commit.await?;
        if !staged.is_empty() {
            tokio::task::spawn_blocking(move || crate::archive::promote(&staged))
                .await
                .map_err(|e| Error::Internal(format!("archive promotion task: {e}")))??;
        }
        Ok(())
    };
    *in_flight = Some(InFlight {
        commit: tokio::spawn(async move { (commit.await, commit_began.elapsed()) }),
        records,
        started,
        stage,
        ingest: std::mem::take(&mut processor.uncommitted_ingest),
    });
    Ok(())
}

/// The pipeline's SQL files, in load order.
const SQL_FILES: [&str; 3] = ["clean.sql", "features.sql", "aggregate.sql"];

/// How the processed records' columns differ between two plans, or `None` when they do not.
/// Compared as the records are stored: by name (JSON and Parquet are read by name, so the
/// order is free), and by type up to its spelling (`Utf8` and `Utf8View` are both strings;
/// `UTC` and `+00:00` the same zone).
fn schema_change(running: &Schema, edited: &Schema) -> Option<String> {
    fn stored(t: &DataType) -> DataType {
        match t {
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
            DataType::Timestamp(unit, Some(tz))
                if matches!(
                    tz.as_ref(),
                    "UTC" | "utc" | "+00:00" | "Z" | "+0000" | "Etc/UTC"
                ) =>
            {
                DataType::Timestamp(*unit, Some("UTC".into()))
            }
            other => other.clone(),
        }
    }
    let shape = |s: &Schema| -> std::collections::BTreeMap<String, DataType> {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), stored(f.data_type())))
            .collect()
    };
    let (old, new) = (shape(running), shape(edited));
    let mut parts: Vec<String> = Vec::new();
    for (name, t) in &new {
        match old.get(name) {
            None => parts.push(format!("+{name}")),
            Some(was) if was != t => parts.push(format!("{name}: {was} -> {t}")),
            _ => {}
        }
    }
    parts.extend(
        old.keys()
            .filter(|n| !new.contains_key(*n))
            .map(|n| format!("-{n}")),
    );
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Contents of the SQL files (None where unreadable): a few KB, read once per batch.
fn sql_texts(dir: &std::path::Path) -> Vec<Option<Vec<u8>>> {
    SQL_FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).ok())
        .collect()
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    #[test]
    fn a_schema_change_is_one_the_stored_records_would_show() {
        let schema = |fields: Vec<(&str, DataType)>| {
            Schema::new(
                fields
                    .into_iter()
                    .map(|(n, t)| Field::new(n, t, true))
                    .collect::<Vec<_>>(),
            )
        };
        let ts = |tz: &str| DataType::Timestamp(TimeUnit::Microsecond, Some(tz.into()));
        let running = schema(vec![
            ("icao24", DataType::Utf8),
            ("timestamp", ts("UTC")),
            ("hour", DataType::Int32),
        ]);
        // Another order, a string type and a zone spelled otherwise: the same records.
        let same = schema(vec![
            ("hour", DataType::Int32),
            ("timestamp", ts("+00:00")),
            ("icao24", DataType::Utf8View),
        ]);
        assert_eq!(schema_change(&running, &same), None);
        let changed = schema(vec![
            ("icao24", DataType::Utf8),
            ("timestamp", ts("Europe/Paris")),
            ("hour", DataType::Int64),
            ("extra", DataType::Utf8),
        ]);
        assert_eq!(
            schema_change(&running, &changed).unwrap(),
            "+extra, hour: Int32 -> Int64, timestamp: Timestamp(µs, \"UTC\") -> Timestamp(µs, \"Europe/Paris\")"
        );
        let dropped = schema(vec![("icao24", DataType::Utf8)]);
        assert_eq!(
            schema_change(&running, &dropped).unwrap(),
            "-hour, -timestamp"
        );
    }
}
