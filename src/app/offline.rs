//! Offline commands over files: `simulate` (simulator -> raw JSON lines), `features` (raw
//! JSON lines -> the SQL pipeline -> Parquet) and `train` (-> the anomaly model file).
//! They run the same stages as the live pipeline, with the file bus in place of Kafka.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio_util::sync::CancellationToken;

use super::simulator_source;
use crate::bus::file::{JsonlConsumer, JsonlPublisher};
use crate::bus::{BatchConsumer, BatchLimits};
use crate::clock::SystemClock;
use crate::config::{FeaturesArgs, SimulateArgs, SqlArgs, TrainArgs};
use crate::ingest::{IngestStats, IngestTopics, Speed, run_ingest};
use crate::model::{ForestParams, Model, TrainOptions, TrainingMetadata};
use crate::pipeline::{ProcessConfig, ProcessStats, Processor};

use crate::config::topic::{DEAD_LETTER, RAW};
const BATCH: usize = 20_000;

fn dead_letter_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".dead-letter.jsonl");
    PathBuf::from(s)
}

fn progress(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} rows ({per_sec}, {elapsed})")
            .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `contrail simulate`: simulator -> validation -> dedupe -> a JSON-lines file, as fast
/// as it goes.
pub(super) async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if args.simulator.max_records.is_none() {
        bail!("--max-records is required: the simulator never ends by itself");
    }
    let mut source = simulator_source(&args.simulator, Speed::Max)?;
    let dead = args
        .dead_letter_out
        .clone()
        .unwrap_or_else(|| dead_letter_path(&args.out));
    let sink = JsonlPublisher::create(&[(RAW, &args.out), (DEAD_LETTER, &dead)])?;
    let stats = Arc::new(IngestStats::default());
    let topics = IngestTopics {
        raw: RAW.into(),
        dead_letter: DEAD_LETTER.into(),
    };
    run_ingest(
        &mut source,
        &sink,
        &topics,
        Arc::new(SystemClock),
        Arc::clone(&stats),
        CancellationToken::new(),
    )
    .await?;
    sink.flush()?;
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "{}: {} records ({} read, {} duplicates dropped); {}: {} dead letters",
        args.out.display(),
        l(&stats.published),
        l(&stats.read),
        l(&stats.duplicates),
        dead.display(),
        l(&stats.dead_lettered)
    );
    Ok(())
}

fn processor_config(sql: &SqlArgs, model: Option<PathBuf>) -> ProcessConfig {
    ProcessConfig {
        grid_cell_deg: sql.grid_cell_deg,
        batch: BatchLimits::new(BATCH, Duration::ZERO),
        model_path: model,
        ..ProcessConfig::new(sql.sql_dir.clone())
    }
}

/// Runs a raw JSON-lines file through the pipeline; calls `each` with every processed
/// batch. Dead letters go to `dead`.
async fn run_file(
    input: &Path,
    dead: &Path,
    processor: &mut Processor,
    mut each: impl FnMut(RecordBatch) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let sink = JsonlPublisher::create(&[(DEAD_LETTER, dead)])?;
    let mut consumer = JsonlConsumer::open(input, RAW, &sink)?;
    processor.keep_processed();
    let bar = progress("processing");
    while let Some(batch) = consumer
        .next_batch(BatchLimits::new(BATCH, Duration::ZERO))
        .await?
    {
        let out = processor.process(&batch).await?;
        consumer.commit(out).await?;
        for b in processor.take_processed() {
            each(b)?;
        }
        bar.set_position(consumer.read());
    }
    bar.finish_and_clear();
    sink.flush()?;
    Ok(sink.count(DEAD_LETTER))
}

/// `contrail features`: raw JSON lines -> clean.sql -> features.sql (-> scores) -> Parquet.
pub(super) async fn features(args: FeaturesArgs) -> anyhow::Result<()> {
    let stats = Arc::new(ProcessStats::default());
    let mut processor = Processor::new(
        processor_config(&args.sql, args.model.clone()),
        Arc::new(SystemClock),
        Arc::clone(&stats),
    )
    .await?;
    let tmp = args.output.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .build();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    let dead = dead_letter_path(&args.output);
    let dead_count = run_file(&args.input, &dead, &mut processor, |batch| {
        if writer.is_none() {
            let f = file.take().expect("file used once");
            writer = Some(ArrowWriter::try_new(
                f,
                batch.schema(),
                Some(props.clone()),
            )?);
        }
        writer.as_mut().expect("writer").write(&batch)?;
        Ok(())
    })
    .await?;
    match writer {
        Some(w) => {
            w.close()?;
            std::fs::rename(&tmp, &args.output)?;
        }
        None => {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "{}: no record made it through the pipeline",
                args.input.display()
            );
        }
    }
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "{}: {} rows ({} flagged as anomalies); {}: {} dead letters",
        args.output.display(),
        l(&stats.processed),
        l(&stats.anomalies),
        dead.display(),
        dead_count
    );
    Ok(())
}

/// Feature columns as `f64` (null -> NaN), plus the event-time range.
struct TrainingData {
    columns: Vec<Vec<f64>>,
    rows: usize,
    time: Option<(i64, i64)>,
}

impl TrainingData {
    fn new(n: usize) -> Self {
        Self {
            columns: vec![Vec::new(); n],
            rows: 0,
            time: None,
        }
    }

    fn append(&mut self, batch: &RecordBatch, features: &[String]) -> anyhow::Result<()> {
        for (f, name) in features.iter().enumerate() {
            let col = batch.column_by_name(name).with_context(|| {
                format!("the training data has no column {name:?}, a feature of features.sql")
            })?;
            let col = cast(col, &DataType::Float64)?;
            let values = col.as_primitive::<Float64Type>();
            self.columns[f].extend((0..values.len()).map(|i| {
                if values.is_valid(i) {
                    values.value(i)
                } else {
                    f64::NAN
                }
            }));
        }
        if let Some(ts) = batch.column_by_name("timestamp") {
            let ts = cast(
                ts,
                &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            )?;
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            if let (Some(lo), Some(hi)) = (arrow::compute::min(ts), arrow::compute::max(ts)) {
                self.time = Some(self.time.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
        self.rows += batch.num_rows();
        Ok(())
    }
}

fn is_jsonl(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e == "jsonl" || e == "json" || e == "ndjson")
}

/// `contrail train`.
pub(super) async fn train(args: TrainArgs) -> anyhow::Result<()> {
    let stats = Arc::new(ProcessStats::default());
    // Planning features.sql with an unfitted scorer tells which columns the model uses.
    let mut processor = Processor::new(
        processor_config(&args.sql, None),
        Arc::new(SystemClock),
        stats,
    )
    .await?;
    let features = processor
        .scorer()
        .requested_features()
        .context("features.sql does not call isolation_forest_score(...): nothing to train")?;
    let mut data = TrainingData::new(features.len());
    if is_jsonl(&args.input) {
        // Records the pipeline refuses go beside the input, not beside the model.
        let dead = dead_letter_path(&args.input.with_extension("process"));
        run_file(&args.input, &dead, &mut processor, |batch| {
            data.append(&batch, &features)
        })
        .await?;
    } else {
        let ctx = SessionContext::new();
        let path = args.input.display().to_string();
        let df = ctx
            .read_parquet(path.as_str(), ParquetReadOptions::default())
            .await
            .with_context(|| format!("reading Parquet from {path}"))?;
        let bar = progress("reading");
        let mut stream = df.execute_stream().await?;
        use futures::StreamExt as _;
        while let Some(batch) = stream.next().await {
            data.append(&batch?, &features)?;
            bar.set_position(data.rows as u64);
        }
        bar.finish_and_clear();
    }
    if data.rows == 0 {
        bail!("{}: no training rows", args.input.display());
    }

    let iso = |us: i64| chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339());
    let metadata = TrainingMetadata {
        rows: data.rows,
        time_start: data.time.and_then(|t| iso(t.0)),
        time_end: data.time.and_then(|t| iso(t.1)),
        source: args.input.display().to_string(),
        seed: args.seed,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        code_version: concat!("contrail ", env!("CARGO_PKG_VERSION")).to_string(),
        trained_at: chrono::Utc::now().to_rfc3339(),
        training_seconds: 0.0,
    };
    let options = TrainOptions {
        params: ForestParams {
            n_estimators: args.trees as usize,
            max_samples: args.max_samples as usize,
            seed: args.seed,
        },
        contamination: args.contamination,
    };
    let started = Instant::now();
    let rows = data.rows;
    let mut model = Model::train(features.clone(), data.columns, &options, metadata)
        .map_err(anyhow::Error::msg)?;
    model.training.training_seconds = started.elapsed().as_secs_f64();
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    model
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{}: {} trees of {} samples on {} rows, {} features ({}); threshold {:.4}; trained in {:.3} s",
        args.output.display(),
        model.forest.trees.len(),
        model.forest.sample_size,
        rows,
        features.len(),
        features.join(", "),
        model.threshold,
        model.training.training_seconds
    );
    Ok(())
}
