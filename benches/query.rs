//! Query-service benchmark (issue targets: `ListWindows` over 24 h of windows p99 <= 5 ms;
//! `Query` of a 10-minute aggregate over 10M archived rows <= 1 s).
//!
//! Run by `scripts/bench-query`, which makes the seed: real `contrail features` output
//! (simulator -> clean.sql -> features.sql -> scores) as Parquet. This bench copies the
//! seed's rows, shifted in time, into a Parquet archive of `CONTRAIL_BENCH_ROWS` rows
//! (default 10M) written by the pipeline's own `ArchiveWriter`, then serves it with the
//! query service on a loopback port and calls it through the tonic client.
//!
//! `CONTRAIL_BENCH_SEED=seed.parquet CONTRAIL_BENCH_DIR=dir cargo bench --bench query`

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::TimestampMicrosecondType;
use contrail::archive::ArchiveWriter;
use contrail::query::proto::contrail_client::ContrailClient;
use contrail::query::proto::{ListWindowsRequest, QueryRequest, TimeRange};
use contrail::query::store::{Feed, LiveStore, StoreLimits, timestamp};
use contrail::query::{GrpcServer, QueryLimits, QueryService};
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

const MIN: i64 = 60_000_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The seed's batches with `timestamp` moved by `shift` microseconds.
fn shifted(batch: &RecordBatch, shift: i64) -> RecordBatch {
    let i = batch.schema().index_of("timestamp").unwrap();
    let ts = batch.column(i).as_primitive::<TimestampMicrosecondType>();
    let moved: TimestampMicrosecondArray = ts.unary(|t| t + shift);
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(moved.with_timezone("UTC"));
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

fn build_archive(seed: &std::path::Path, dir: &std::path::Path, rows: usize) -> usize {
    let marker = dir.join(format!("complete-{rows}"));
    if marker.exists() {
        println!("archive: reusing {} ({rows} rows)", dir.display());
        return rows;
    }
    let _ = std::fs::remove_dir_all(dir);
    let file =
        std::fs::File::open(seed).expect("CONTRAIL_BENCH_SEED: a `contrail features` Parquet file");
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(50_000)
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let ts: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("timestamp")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            c.values().to_vec()
        })
        .collect();
    let span = ts.iter().max().unwrap() - ts.iter().min().unwrap() + MIN;
    let writer = ArchiveWriter::new(dir, "processed");
    let started = Instant::now();
    let (mut written, mut copy, mut offset) = (0usize, 0i64, 0i64);
    'outer: loop {
        for b in &batches {
            let take = b.num_rows().min(rows - written);
            let part = shifted(&b.slice(0, take), copy * span);
            writer
                .write(&part, 0, offset, offset + take as i64 - 1)
                .unwrap();
            offset += take as i64;
            written += take;
            if written >= rows {
                break 'outer;
            }
        }
        copy += 1;
    }
    std::fs::write(&marker, b"").unwrap();
    println!(
        "archive: {written} rows ({} copies of {} seed rows, {:.1} h of event time) written in {:.1} s",
        copy + 1,
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        (copy + 1) as f64 * span as f64 / 3.6e9,
        started.elapsed().as_secs_f64()
    );
    written
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; there is nothing to list here.
    }
    let seed = std::env::var_os("CONTRAIL_BENCH_SEED").map(std::path::PathBuf::from);
    let Some(seed) = seed else {
        eprintln!("CONTRAIL_BENCH_SEED is not set: run scripts/bench-query");
        return;
    };
    let dir = std::path::PathBuf::from(
        std::env::var_os("CONTRAIL_BENCH_DIR").unwrap_or_else(|| "target/bench-query".into()),
    );
    let rows: usize = std::env::var("CONTRAIL_BENCH_ROWS")
        .ok()
        .map_or(10_000_000, |v| {
            v.parse().expect("CONTRAIL_BENCH_ROWS: a number")
        });
    let rows = build_archive(&seed, &dir, rows);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // 24 h of 10-minute windows (144) in a store holding 30 days.
        let store = Arc::new(LiveStore::new(StoreLimits::default()));
        let t0 = 1_795_564_800_000_000i64; // 2026-11-25T00:00:00Z
        for w in 0..4_320i64 {
            let start = t0 - 29 * 24 * 60 * MIN + w * 10 * MIN;
            let payload = serde_json::json!({
                "window_start": chrono::DateTime::from_timestamp_micros(start).unwrap(),
                "window_end": chrono::DateTime::from_timestamp_micros(start + 10 * MIN).unwrap(),
                "event_count": 90_000 + w, "anomaly_count": 700, "avg_velocity": 180.5,
                "min_velocity": 0.0, "max_velocity": 310.2, "avg_altitude": 9100.0,
                "min_altitude": 3.0, "max_altitude": 13_700.0, "unique_aircraft": 9_000,
                "avg_anomaly_score": 0.43,
            });
            store.add(Feed::Windows, payload.to_string().as_bytes()).unwrap();
        }
        store.set_ready();
        let stop = CancellationToken::new();
        let limits = QueryLimits {
            max_rows: 1_000_000,
            timeout: Duration::from_secs(60),
            memory_bytes: 1 << 30,
        };
        let service = QueryService::new(store, Some(dir.clone()), limits).unwrap();
        let server = GrpcServer::start("127.0.0.1:0".parse().unwrap(), service, None, stop.clone())
            .await
            .unwrap();
        let mut client = ContrailClient::connect(format!("http://{}", server.local_addr))
            .await
            .unwrap();

        let day = t0 - 24 * 60 * MIN;
        let request = || ListWindowsRequest {
            range: Some(TimeRange { start: Some(timestamp(day)), end: Some(timestamp(t0)) }),
            limit: 1_000,
            page_token: String::new(),
        };
        for _ in 0..200 {
            client.list_windows(request()).await.unwrap();
        }
        let mut times = Vec::with_capacity(5_000);
        for _ in 0..5_000 {
            let started = Instant::now();
            let r = client.list_windows(request()).await.unwrap().into_inner();
            times.push(started.elapsed());
            assert_eq!(r.windows.len(), 144);
        }
        times.sort();
        println!(
            "ListWindows, 24 h = 144 windows, 5,000 calls over one connection: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );

        let sql = "SELECT date_bin(INTERVAL '10 minutes', timestamp) AS window_start, \
                   count(*) AS events, sum(CAST(is_anomaly AS BIGINT)) AS anomalies, \
                   avg(velocity) AS avg_velocity, max(velocity) AS max_velocity, \
                   avg(COALESCE(baro_altitude, geo_altitude)) AS avg_altitude, \
                   count(DISTINCT icao24) AS aircraft \
                   FROM processed GROUP BY 1 ORDER BY 1";
        let mut runs = Vec::new();
        for run in 0..6 {
            let started = Instant::now();
            let mut stream = client
                .query(QueryRequest { sql: sql.into(), max_rows: 1_000_000, timeout_ms: 0 })
                .await
                .unwrap()
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(m) = stream.next().await {
                bytes.extend(m.unwrap().arrow_ipc);
            }
            let elapsed = started.elapsed();
            let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
            let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
            let windows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let events: i64 = batches
                .iter()
                .map(|b| arrow::compute::sum(b.column(1).as_primitive::<arrow::datatypes::Int64Type>()).unwrap_or(0))
                .sum();
            assert_eq!(events as usize, rows, "every archived row counted once");
            assert!(batches.iter().all(|b| b.column(0).null_count() == 0));
            if run == 0 {
                println!("Query (10-minute aggregate, {windows} windows over {rows} archived rows): first run {:.3} s (cold file listing and footers)", elapsed.as_secs_f64());
            } else {
                runs.push(elapsed);
            }
        }
        runs.sort();
        println!(
            "Query (same), 5 more runs: median {:.3} s, best {:.3} s, worst {:.3} s",
            runs[2].as_secs_f64(),
            runs[0].as_secs_f64(),
            runs[4].as_secs_f64()
        );
        stop.cancel();
        server.join().await.unwrap();
    });
}
