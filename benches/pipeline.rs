//! Ingest- and process-stage benchmarks, one core, on simulator records (2,000 aircraft,
//! 0.2% anomalies; 1% invalid for `ingest`, none for the rest, which see what ingest
//! publishes) in micro-batches of 20,000 (the default `--batch-max-records`):
//!
//! - `ingest`: what ingest does to each record before publishing it: the simulator's
//!   payload validated (parsed, checked), stamped with its ingest time, and written again
//!   as the `flight-raw-data` payload (records of a 1%-invalid stream: the invalid ones
//!   rejected);
//! - `decode`: raw JSON payloads -> one Arrow RecordBatch (the raw-schema parser; arrow-json
//!   only for what it does not take: nothing, on these records);
//! - `sql`: clean.sql + features.sql with the Isolation Forest UDF scoring every row
//!   (plans made once, re-executed per batch, as the stage does);
//! - `score`: the Isolation Forest alone (the shipped model, 100 trees) scoring the batch's
//!   own feature rows, as the UDF does inside `sql`;
//! - `encode`: processed rows -> JSON payloads for `flight-processed-data`;
//! - `window`: the state update of one source partition per batch: each processed row's
//!   fix (the continuity the next batch's features read), its lateness against the
//!   watermark (which it advances), `aggregate.sql` over the on-time rows, its partials
//!   merged into the state, the windows the watermark closed as per-aircraft rows and
//!   partials for the merger, expired aircraft dropped, and the changelog records of what
//!   changed: consecutive batches of one stream (25 minutes of event time in all), so
//!   10-minute windows open and close;
//! - `live_store`: those payloads into the live store of `serve` and the demo's dashboard
//!   (parsed back, each aircraft's track and the anomalies kept);
//! - `archive/{snappy,lz4,zstd}`: processed rows -> the archive's Parquet files with each
//!   `--archive-compression`, as a micro-batch from six source partitions writes them: six
//!   files in one hour's folder, each synced and renamed into place, then the folder synced
//!   (each also prints the bytes written);
//! - `process`: the whole stage per batch in process (decode, SQL, scoring, continuity,
//!   lateness, aggregate.sql, window state and changelog, output records), no bus, no
//!   archive: consecutive batches of one stream, so windows open and close as in a run.
//!
//! - `batch_of_200/process`: the whole stage on micro-batches of 200 records: the fixed
//!   cost per batch, which sets the latency floor of a lightly loaded stream.
//!
//! Each reports rows/s (criterion's "thrpt"). `cargo bench --bench pipeline`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use chrono::DateTime;
use contrail::archive::{ArchiveCompression, ArchiveWriter, sync_folders};
use contrail::bus::Message;
use contrail::clock::SystemClock;
use contrail::ingest::simulator::{Simulator, SimulatorConfig};
use contrail::ingest::validate::validate;
use contrail::pipeline::continuity::{fixes, previous_table};
use contrail::pipeline::decode::decode;
use contrail::pipeline::encode::to_json_rows;
use contrail::pipeline::sql::{SqlPipeline, with_partition_column};
use contrail::pipeline::window::{
    PartitionState, aircraft_batch, partition_partials, read_partials,
};
use contrail::pipeline::{ProcessConfig, ProcessStats, Processor};
use contrail::query::store::{Feed, LiveStore, StoreLimits};
use contrail::udf::Scorer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The allocator the binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 20_000;
const BATCHES: usize = 30;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn simulator(invalid_rate: f64) -> Simulator {
    Simulator::new(SimulatorConfig {
        seed: 7,
        aircraft: 2_000,
        anomaly_rate: 0.002,
        invalid_rate,
        report_interval_s: 5.0,
        start: DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
            .unwrap()
            .to_utc(),
    })
}

/// `size` payloads as the simulator source hands them to ingest (1% invalid).
fn simulator_payloads(size: usize) -> Vec<Vec<u8>> {
    let mut sim = simulator(0.01);
    let mut payloads = Vec::with_capacity(size);
    while payloads.len() < size {
        payloads.extend(sim.tick().iter().map(|e| e.to_bytes()));
    }
    payloads.truncate(size);
    payloads
}

/// `BATCHES` consecutive micro-batches of `size` records of what ingest publishes (valid,
/// stamped records).
fn stream(size: usize) -> Vec<Vec<Message>> {
    let mut sim = simulator(0.0);
    let now = chrono::Utc::now();
    let mut payloads = Vec::with_capacity(BATCH * BATCHES);
    while payloads.len() < size * BATCHES {
        for e in sim.tick() {
            if let Ok(mut r) = validate(&e.to_bytes()) {
                r.ingest_timestamp = Some(now);
                payloads.push((r.icao24.clone(), r.to_json()));
            }
        }
    }
    payloads.truncate(size * BATCHES);
    payloads
        .chunks(size)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, (key, payload))| Message {
                    topic: "flight-raw-data".into(),
                    partition: 0,
                    offset: (b * size + i) as i64,
                    key: Some(key.clone().into_bytes()),
                    payload: payload.clone().into(),
                })
                .collect()
        })
        .collect()
}

fn config() -> ProcessConfig {
    let mut c = ProcessConfig::new(root().join("sql"));
    c.model_path = Some(root().join("models/flight_anomaly_detector.json"));
    c
}

async fn processor() -> Processor {
    Processor::new(
        config(),
        Arc::new(SystemClock),
        Arc::new(ProcessStats::default()),
    )
    .await
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let batches = stream(BATCH);
    let first = &batches[0];

    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));

    let sim_payloads = simulator_payloads(BATCH);
    g.bench_function("ingest", |b| {
        b.iter(|| {
            let now = chrono::Utc::now();
            let mut published = 0;
            for payload in &sim_payloads {
                if let Ok(mut r) = validate(payload) {
                    r.ingest_timestamp = Some(now);
                    published += r.to_json().len();
                }
            }
            published
        })
    });

    g.bench_function("decode", |b| b.iter(|| decode(first).unwrap()));

    let model =
        contrail::model::Model::load(&root().join("models/flight_anomaly_detector.json")).unwrap();
    let scorer = Scorer::fitted(model);
    let vars = [
        ("grid_cell_deg".to_string(), "1.0".to_string()),
        ("window_seconds".to_string(), "600".to_string()),
    ]
    .into();
    let sql = rt
        .block_on(SqlPipeline::load(&root().join("sql"), &vars, &scorer))
        .unwrap();
    let decoded = decode(first).unwrap().batch;
    g.bench_function("sql", |b| {
        b.iter(|| {
            rt.block_on(sql.run(decoded.clone(), previous_table(std::iter::empty()).unwrap()))
                .unwrap()
        })
    });

    // The processed rows of the whole stream; the first batch's for the one-batch stages.
    let mut p = rt.block_on(processor());
    p.keep_processed();
    for batch in &batches {
        rt.block_on(p.process_all(batch, &[])).unwrap();
    }
    let processed_stream = p.take_processed();
    assert_eq!(processed_stream.len(), BATCHES);
    let processed = &processed_stream[0];
    assert_eq!(processed.num_rows(), BATCH);
    g.bench_function("score", |b| {
        // The model's features of the batch's rows, row-major, null as NaN, as the UDF
        // lays them out.
        let model = scorer.model().unwrap();
        let columns: Vec<_> = model
            .features
            .iter()
            .map(|f| {
                processed
                    .column_by_name(f)
                    .unwrap()
                    .as_primitive::<Float64Type>()
                    .clone()
            })
            .collect();
        let data: Vec<f64> = (0..processed.num_rows())
            .flat_map(|r| {
                columns
                    .iter()
                    .map(move |c| if c.is_null(r) { f64::NAN } else { c.value(r) })
            })
            .collect();
        let mut rows = data.clone();
        let mut scores = Vec::with_capacity(processed.num_rows());
        b.iter(|| {
            rows.copy_from_slice(&data);
            model.score_rows(&mut rows, &mut scores);
            std::hint::black_box(&scores);
        })
    });
    g.bench_function("encode", |b| b.iter(|| to_json_rows(processed).unwrap()));
    g.bench_function("window", |b| window(b, &rt, &sql, &processed_stream));

    // The live store (`serve`, the demo's dashboard) taking the batch's processed records.
    let rows = to_json_rows(processed).unwrap();
    let store = LiveStore::new(StoreLimits::default());
    g.bench_function("live_store", |b| {
        b.iter(|| {
            for i in 0..rows.len() {
                store.add(Feed::Processed, rows.get(i)).unwrap();
            }
        })
    });

    for compression in [
        ArchiveCompression::Snappy,
        ArchiveCompression::Lz4,
        ArchiveCompression::Zstd,
    ] {
        let name = format!("archive/{compression:?}").to_lowercase();
        let root = tempfile::tempdir().unwrap();
        let archive = ArchiveWriter::new(root.path(), "processed").with_compression(compression);
        let mut bytes = 0;
        g.bench_function(&name, |b| {
            b.iter(|| {
                let files = archive_as_six_sources(&archive, processed);
                bytes = files.iter().map(|f| f.metadata().unwrap().len()).sum();
            })
        });
        if bytes > 0 {
            // (0 when a filter left this benchmark out.)
            println!("{name}: {bytes} bytes of Parquet for {BATCH} rows");
        }
    }

    g.bench_function("process", |b| process(b, &rt, &batches));
    g.finish();

    // The per-batch fixed cost (planning, the SQL operators' set-up, changelog): the whole
    // stage on micro-batches of 200 records, as a lightly loaded stream delivers them.
    let small = stream(SMALL_BATCH);
    let mut g = c.benchmark_group("batch_of_200");
    g.throughput(Throughput::Elements(SMALL_BATCH as u64));
    g.sample_size(20);
    g.bench_function("process", |b| process(b, &rt, &small));
    g.finish();
}

const SMALL_BATCH: usize = 200;

/// The partition-state update over consecutive processed batches of one partition, a fresh
/// state every `BATCHES` batches; only the update is timed.
fn window(
    b: &mut criterion::Bencher,
    rt: &tokio::runtime::Runtime,
    sql: &SqlPipeline,
    batches: &[RecordBatch],
) {
    let spec = config().window;
    b.iter_custom(|iters| {
        let mut spent = Duration::ZERO;
        let mut done = 0;
        let mut closed_windows = 0;
        while done < iters {
            let mut state = PartitionState::default();
            for batch in batches
                .iter()
                .take((iters - done).min(BATCHES as u64) as usize)
            {
                let started = Instant::now();
                for (_, icao24, fix) in fixes(batch).unwrap() {
                    state.record_fix(icao24, fix);
                }
                let ts = batch
                    .column_by_name("timestamp")
                    .unwrap()
                    .as_primitive::<TimestampMicrosecondType>();
                let on_time: BooleanArray = ts
                    .values()
                    .iter()
                    .map(|&t| Some(!state.observe(&spec, t)))
                    .collect();
                let records = filter_record_batch(batch, &on_time).unwrap();
                let partitions = vec![0; records.num_rows()];
                let partials = rt
                    .block_on(
                        sql.run_aggregate(with_partition_column(&records, &partitions).unwrap()),
                    )
                    .unwrap();
                for bp in read_partials(&partials).unwrap() {
                    state.add(bp.window_start, &bp.icao24, &bp.stats).unwrap();
                }
                let closed = state.close(&spec, false);
                state.expire(&spec);
                let rows = aircraft_batch(&spec, &closed).unwrap();
                let merger_partials = partition_partials(&closed).unwrap();
                let changelog = state.changelog("changelog", 0).unwrap();
                spent += started.elapsed();
                assert!(!changelog.is_empty());
                closed_windows += rows.num_rows();
                std::hint::black_box((rows, merger_partials));
                done += 1;
            }
        }
        // Windows must close for the benchmark to time what it says.
        assert!(iters < BATCHES as u64 || closed_windows > 0);
        spent
    })
}

/// The whole stage over consecutive batches of one stream, a fresh processor every
/// `BATCHES` batches; only `process_all` is timed.
fn process(b: &mut criterion::Bencher, rt: &tokio::runtime::Runtime, batches: &[Vec<Message>]) {
    b.iter_custom(|iters| {
        let mut spent = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let mut p = rt.block_on(processor());
            for batch in batches
                .iter()
                .take((iters - done).min(BATCHES as u64) as usize)
            {
                let started = Instant::now();
                let out = rt.block_on(p.process_all(batch, &[])).unwrap();
                spent += started.elapsed();
                assert!(out.len() >= batch.len());
                done += 1;
            }
        }
        spent
    })
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);

/// The archive files of one micro-batch from six source partitions, as the process stage
/// writes them: six files in one hour's folder, each synced and renamed, then the folder
/// synced.
fn archive_as_six_sources(
    archive: &ArchiveWriter,
    processed: &RecordBatch,
) -> Vec<std::path::PathBuf> {
    const SOURCES: usize = 6;
    let rows = processed.num_rows();
    let per_source = rows.div_ceil(SOURCES);
    let mut files = Vec::new();
    for p in 0..SOURCES {
        let first = p * per_source;
        let part = processed.slice(first, per_source.min(rows - first));
        let last = (first + part.num_rows() - 1) as i64;
        files.extend(
            archive
                .write_unsynced(&part, p as i32, first as i64, last)
                .unwrap(),
        );
    }
    sync_folders(&files).unwrap();
    files
}
