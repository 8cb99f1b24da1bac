//! The process stage on its own (no broker): simulator records in, processed records,
//! dead letters and Parquet files out.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::DateTime;
use contrail::bus::{BatchLimits, Message, OutRecord};
use contrail::clock::ManualClock;
use contrail::config::topic;
use contrail::dead_letter::DeadLetter;
use contrail::ingest::simulator::{Emitted, Simulator, SimulatorConfig};
use contrail::ingest::validate::{Dedupe, validate};
use contrail::pipeline::{ProcessConfig, ProcessStats, Processor};
use contrail::query::store::{parse_state_fast, parse_state_with_serde};
use contrail::schema::processed_contract_columns;

const PROCESSED: &str = "processed";
const DLQ: &str = "dlq";

/// Valid, deduplicated raw payloads as ingest would publish them, plus two bad ones.
fn inputs() -> Vec<Vec<u8>> {
    let mut sim = Simulator::new(SimulatorConfig {
        seed: 11,
        aircraft: 120,
        anomaly_rate: 0.01,
        invalid_rate: 0.0,
        report_interval_s: 5.0,
        start: DateTime::from_timestamp(1_795_600_000, 0).unwrap(),
    });
    let mut dedupe = Dedupe::default();
    let mut out = Vec::new();
    for e in sim.advance_to(sim.now() + 300) {
        let Emitted::Record(r) = e else { continue };
        let mut r = validate(&r.to_json()).unwrap();
        if !dedupe.is_repeat(&r.icao24, r.last_contact) {
            r.ingest_timestamp = Some(r.timestamp);
            out.push(r.to_json());
        }
    }
    // Not JSON at all, and valid JSON that clean.sql filters (a producer that skipped ingest).
    out.insert(100, b"not json".to_vec());
    let mut v: serde_json::Value = serde_json::from_slice(&out[200]).unwrap();
    v["latitude"] = 95.0.into();
    out.insert(200, serde_json::to_vec(&v).unwrap());
    out
}

fn messages(payloads: &[Vec<u8>]) -> Vec<Message> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Message {
            topic: "raw".into(),
            // Keyed by icao24, as ingest publishes: an aircraft stays on one partition.
            partition: serde_json::from_slice::<serde_json::Value>(p)
                .ok()
                .and_then(|v| {
                    v["icao24"]
                        .as_str()
                        .map(|s| s.bytes().map(u32::from).sum::<u32>())
                })
                .map_or(0, |h| (h % 3) as i32),
            offset: i as i64,
            key: None,
            payload: p.clone().into(),
        })
        .collect()
}

async fn processor(archive: Option<PathBuf>) -> (Processor, Arc<ProcessStats>) {
    processor_with_sql(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql"), archive).await
}

async fn processor_with_sql(
    sql_dir: PathBuf,
    archive: Option<PathBuf>,
) -> (Processor, Arc<ProcessStats>) {
    let mut config = ProcessConfig::new(sql_dir);
    config.topics.processed = PROCESSED.into();
    config.topics.dead_letter = DLQ.into();
    config.archive_dir = archive;
    // `messages` spreads the records over three partitions.
    config.source_partitions = 3;
    config.batch = BatchLimits::new(1000, std::time::Duration::from_millis(10));
    config.model_path =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/flight_anomaly_detector.json"));
    let stats = Arc::new(ProcessStats::default());
    let clock = ManualClock::new(1_795_600_500_000_000);
    (
        Processor::new(config, clock, Arc::clone(&stats))
            .await
            .unwrap(),
        stats,
    )
}

async fn run_in_chunks(msgs: &[Message], chunk: usize, archive: Option<PathBuf>) -> Vec<OutRecord> {
    let (mut p, _) = processor(archive).await;
    let mut out = Vec::new();
    for c in msgs.chunks(chunk) {
        out.extend(p.process(c).await.unwrap());
    }
    out.extend(p.finish().unwrap());
    out
}

fn split(out: &[OutRecord]) -> (Vec<&OutRecord>, Vec<DeadLetter>) {
    let processed = out.iter().filter(|r| r.topic == PROCESSED).collect();
    let dead = out
        .iter()
        .filter(|r| r.topic == DLQ)
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    (processed, dead)
}

#[tokio::test]
async fn every_record_is_processed_once_or_dead_lettered_with_a_reason() {
    let payloads = inputs();
    let msgs = messages(&payloads);
    let dir = tempfile::tempdir().unwrap();
    let (mut p, stats) = processor(Some(dir.path().to_path_buf())).await;
    let out = p.process(&msgs).await.unwrap();
    let (processed, dead) = split(&out);
    assert_eq!(processed.len(), msgs.len() - 2);
    assert_eq!(
        stats.processed.load(std::sync::atomic::Ordering::Relaxed),
        (msgs.len() - 2) as u64
    );

    let mut reasons: Vec<(&str, i64)> = dead
        .iter()
        .map(|d| (d.reason.as_str(), d.source_offset.unwrap()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![("decode_error", 100), ("filtered_by_clean_sql", 200)]
    );
    assert_eq!(
        dead[0].original_payload(),
        payloads[dead[0].source_offset.unwrap() as usize]
    );

    // Same records, same order, every contract column, keyed by icao24.
    let contract = processed_contract_columns();
    let mut expected = payloads
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 100 && *i != 200);
    for r in &processed {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let obj = v.as_object().unwrap();
        for c in &contract {
            assert!(obj.contains_key(c), "missing {c}");
        }
        let (_, raw) = expected.next().unwrap();
        let raw: serde_json::Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(v["icao24"], raw["icao24"]);
        assert_eq!(v["last_contact"], raw["last_contact"]);
        assert_eq!(
            r.key.as_deref(),
            Some(v["icao24"].as_str().unwrap().as_bytes())
        );
        // The live store (serve, the dashboard) reads it with its fast parser, and reads
        // what serde_json reads.
        let fast = parse_state_fast(&r.payload);
        assert!(fast.is_some(), "{}", String::from_utf8_lossy(&r.payload));
        assert_eq!(fast, parse_state_with_serde(&r.payload).ok());
    }

    // The archive holds the same rows, one file set per source partition.
    let files: Vec<PathBuf> = walk(dir.path());
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "parquet"))
    );
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for p in 0..3 {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("part-p{p:03}-"))),
            "{names:?}"
        );
    }
    let rows: usize = files.iter().map(|f| parquet_rows(f)).sum();
    assert_eq!(rows, processed.len());
}

#[tokio::test]
async fn results_do_not_depend_on_where_batches_end() {
    let msgs = messages(&inputs());
    let whole = run_in_chunks(&msgs, msgs.len(), None).await;
    // Per topic, the same payloads in the same order (the clock is fixed, so even
    // processing_timestamp agrees). Continuity features cross batch boundaries intact.
    // The changelog is left out: it records the state after each batch.
    let by_topic = |o: &[OutRecord]| {
        let mut m: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for r in o.iter().filter(|r| r.topic != topic::WINDOW_STATE) {
            m.entry(r.topic.clone())
                .or_default()
                .push(r.payload.to_vec());
        }
        m
    };
    let expected = by_topic(&whole);
    assert_eq!(expected[PROCESSED].len(), msgs.len() - 2);
    assert!(!expected[topic::AIRCRAFT_AGGREGATES].is_empty());
    assert!(!expected[topic::AGGREGATED].is_empty());
    for chunk in [13, 500] {
        let parts = by_topic(&run_in_chunks(&msgs, chunk, None).await);
        for (t, rows) in &expected {
            let got = &parts[t];
            assert_eq!(got.len(), rows.len(), "chunks of {chunk}: {t} count");
            for (a, b) in got.iter().zip(rows) {
                assert!(
                    a == b,
                    "chunks of {chunk} changed {t}:\n{}\n{}",
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                );
            }
        }
        assert_eq!(parts.len(), expected.len());
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

fn parquet_rows(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

#[tokio::test]
async fn a_record_the_sql_cannot_handle_is_dead_lettered_and_its_neighbours_go_on() {
    // A user's features.sql that casts the callsign to a number: fine for numeric callsigns,
    // a run-time error for any other.
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    std::fs::copy(repo.join("clean.sql"), dir.path().join("clean.sql")).unwrap();
    std::fs::copy(repo.join("aggregate.sql"), dir.path().join("aggregate.sql")).unwrap();
    let features = std::fs::read_to_string(repo.join("features.sql"))
        .unwrap()
        .replace(
            "AS is_anomaly\nFROM scored",
            "AS is_anomaly, CAST(callsign AS INT) AS callsign_number\nFROM scored",
        );
    assert!(features.contains("callsign_number"));
    std::fs::write(dir.path().join("features.sql"), features).unwrap();
    let archive = tempfile::tempdir().unwrap();
    let (mut p, stats) =
        processor_with_sql(dir.path().to_path_buf(), Some(archive.path().to_path_buf())).await;

    let mut payloads: Vec<Vec<u8>> = inputs()
        .into_iter()
        .filter(|p| p.starts_with(b"{"))
        .take(50)
        .collect();
    for (i, payload) in payloads.iter_mut().enumerate() {
        let mut v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v["callsign"] = if i == 17 {
            "DLH4AB".into()
        } else {
            format!("{}", 1000 + i).into()
        };
        *payload = serde_json::to_vec(&v).unwrap();
    }
    let out = p.process(&messages(&payloads)).await.unwrap();
    let (processed, dead) = split(&out);
    assert_eq!(processed.len(), 49);
    // Retried in halves, every processed row is archived once. The parts that succeeded
    // are [0,12) [12,15) [15,16) [16,17) [18,25) [25,50): six batches and at most one file
    // per part and source partition (three here), where record by record made 49 of each.
    let files = walk(&archive.path().join("processed"));
    let archived: usize = files.iter().map(|f| parquet_rows(f)).sum();
    assert_eq!(archived, 49);
    assert_eq!(stats.batches.load(std::sync::atomic::Ordering::Relaxed), 6);
    assert!(files.len() <= 6 * 3, "{files:?}");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "sql_error");
    assert_eq!(dead[0].source_offset, Some(17));
    assert!(
        dead[0].message.contains("features.sql"),
        "{}",
        dead[0].message
    );
    let numbers: Vec<i64> = processed
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["callsign_number"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers.len(), 49);
    assert!(!numbers.contains(&1017));
    assert_eq!(
        stats.consumed.load(std::sync::atomic::Ordering::Relaxed),
        50
    );
    assert_eq!(
        stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/flight_anomaly_detector.json")
}

async fn processor_with_model(
    model: PathBuf,
) -> Result<(Processor, Arc<ProcessStats>), contrail::error::Error> {
    let mut config = ProcessConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql"));
    config.topics.processed = PROCESSED.into();
    config.topics.dead_letter = DLQ.into();
    config.model_path = Some(model);
    let stats = Arc::new(ProcessStats::default());
    let p = Processor::new(
        config,
        ManualClock::new(1_795_600_500_000_000),
        Arc::clone(&stats),
    )
    .await?;
    Ok((p, stats))
}

/// Writes `value` as the model file and moves its modification time forward.
fn write_model(path: &Path, value: &serde_json::Value, generation: u64) {
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
    let t = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(1_800_000_000 + generation);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn flagged(out: &[OutRecord]) -> usize {
    split(out)
        .0
        .iter()
        .filter(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["is_anomaly"] == true
        })
        .count()
}

#[tokio::test]
async fn the_model_reloads_at_a_batch_boundary_and_a_bad_file_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(default_model()).unwrap()).unwrap();
    write_model(&path, &good, 0);
    let (mut p, stats) = processor_with_model(path.clone()).await.unwrap();
    let msgs = messages(&inputs()[..2000]);
    let before = flagged(&p.process(&msgs[..1000]).await.unwrap());

    // A corrupt file: rejected, counted, and the old model keeps scoring the same way.
    std::fs::write(
        &path,
        b"{\"format\": \"contrail-isolation-forest\", \"format_version\": 1, \"features\": [",
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_001),
        )
        .unwrap();
    // What the good model makes of the second half, continuing from the same first half.
    let (mut q, _) = processor_with_model(default_model()).await.unwrap();
    q.process(&msgs[..1000]).await.unwrap();
    let expected = flagged(&q.process(&msgs[1000..]).await.unwrap());
    let out = p.process(&msgs[1000..]).await.unwrap();
    assert_eq!(
        stats
            .model_rejections
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        stats
            .model_reloads
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(flagged(&out), expected);

    // A valid model with a higher threshold: swapped in, fewer records flagged.
    let mut strict = good.clone();
    strict["threshold"] = 0.99.into();
    write_model(&path, &strict, 2);
    let out = p.process(&msgs[..1000]).await.unwrap();
    assert_eq!(
        stats
            .model_reloads
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(before > 0, "the default model flags some of these records");
    assert_eq!(flagged(&out), 0, "threshold 0.99 flags nothing here");

    // A valid model whose features differ from the running SQL's: rejected.
    let mut other = good.clone();
    other["features"][0] = "velocity_knots".into();
    write_model(&path, &other, 3);
    p.process(&msgs[..10]).await.unwrap();
    assert_eq!(
        stats
            .model_rejections
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn a_model_that_does_not_match_features_sql_stops_the_start_with_both_lists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    let mut model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(default_model()).unwrap()).unwrap();
    model["features"][1] = "altitude_ft".into();
    write_model(&path, &model, 0);
    let e = processor_with_model(path).await.unwrap_err().to_string();
    assert!(
        e.contains("features.sql") && e.contains("climb_mismatch_fpm") && e.contains("altitude_ft"),
        "{e}"
    );
    let e = processor_with_model(dir.path().join("missing.json"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.json") && e.contains("contrail train"),
        "{e}"
    );
}

/// `minutes` of simulator output from `aircraft` aircraft, valid and deduplicated.
fn long_inputs(minutes: i64, aircraft: usize) -> Vec<Vec<u8>> {
    let mut sim = Simulator::new(SimulatorConfig {
        seed: 5,
        aircraft,
        anomaly_rate: 0.005,
        invalid_rate: 0.0,
        report_interval_s: 5.0,
        start: DateTime::from_timestamp(1_795_600_000, 0).unwrap(),
    });
    let mut dedupe = Dedupe::default();
    let mut out = Vec::new();
    for e in sim.advance_to(sim.now() + minutes * 60) {
        let Emitted::Record(r) = e else { continue };
        let mut r = validate(&r.to_json()).unwrap();
        if !dedupe.is_repeat(&r.icao24, r.last_contact) {
            r.ingest_timestamp = Some(r.timestamp);
            out.push(r.to_json());
        }
    }
    out
}

fn json(r: &OutRecord) -> serde_json::Value {
    serde_json::from_slice(&r.payload).unwrap()
}

#[tokio::test]
async fn streamed_windows_equal_one_batch_query_over_the_same_records() {
    let msgs = messages(&long_inputs(45, 60));
    let (mut p, stats) = processor(None).await;
    p.keep_processed();
    let mut out = Vec::new();
    for c in msgs.chunks(997) {
        out.extend(p.process(c).await.unwrap());
    }
    let of = |t: &str| -> Vec<serde_json::Value> {
        out.iter().filter(|r| r.topic == t).map(json).collect()
    };
    let (globals, aircraft) = (of(topic::AGGREGATED), of(topic::AIRCRAFT_AGGREGATES));
    // 09:46:40 to 10:31:40 in 10-minute windows with a 5-minute delay: the watermark
    // (10:26:40) has passed the end of four of them.
    let starts: Vec<&str> = globals
        .iter()
        .map(|g| g["window_start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-11-25T09:40:00Z",
            "2026-11-25T09:50:00Z",
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:10:00Z"
        ][..],
        "{globals:?}"
    );
    let mut fields: Vec<String> = globals[0].as_object().unwrap().keys().cloned().collect();
    fields.sort();
    let mut original = [
        "window_start",
        "window_end",
        "event_count",
        "anomaly_count",
        "avg_velocity",
        "min_velocity",
        "max_velocity",
        "avg_altitude",
        "min_altitude",
        "max_altitude",
        "unique_aircraft",
        "avg_anomaly_score",
    ]
    .map(String::from)
    .to_vec();
    original.sort();
    assert_eq!(fields, original, "exactly the original design's fields");
    for g in &globals {
        let rows: Vec<&serde_json::Value> = aircraft
            .iter()
            .filter(|a| a["window_start"] == g["window_start"])
            .collect();
        assert_eq!(g["unique_aircraft"].as_u64().unwrap() as usize, rows.len());
        let events: u64 = rows
            .iter()
            .map(|a| a["event_count"].as_u64().unwrap())
            .sum();
        assert_eq!(g["event_count"].as_u64().unwrap(), events);
    }

    // The oracle: aggregate.sql once over every on-time processed record.
    let late: Vec<serde_json::Value> = of(topic::LATE);
    let is_late = |icao: &str, ts: &str| {
        late.iter()
            .any(|l| l["record"]["icao24"] == icao && l["record"]["timestamp"] == ts)
    };
    let mut on_time = Vec::new();
    for b in p.take_processed() {
        let rows = contrail::pipeline::encode::to_json_rows(&b).unwrap();
        let mask: arrow::array::BooleanArray = rows
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(r).unwrap();
                Some(!is_late(
                    v["icao24"].as_str().unwrap(),
                    v["timestamp"].as_str().unwrap(),
                ))
            })
            .collect();
        on_time.push(arrow::compute::filter_record_batch(&b, &mask).unwrap());
    }
    let (oracle_aircraft, oracle_global) = p.batch_windows(&on_time).await.unwrap();
    let rows = |b: &arrow::array::RecordBatch| -> Vec<serde_json::Value> {
        contrail::pipeline::encode::to_json_rows(b)
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .filter(|v: &serde_json::Value| starts.contains(&v["window_start"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(rows(&oracle_global), globals);
    // Streamed per-aircraft rows come partition by partition; compare in one order.
    let by_window_and_aircraft = |mut v: Vec<serde_json::Value>| {
        v.sort_by_key(|a| (a["window_start"].to_string(), a["icao24"].to_string()));
        v
    };
    assert_eq!(
        by_window_and_aircraft(rows(&oracle_aircraft)),
        by_window_and_aircraft(aircraft)
    );

    // A report from half an hour ago now is late: published as late, still processed,
    // never merged into a window.
    let mut old: serde_json::Value = serde_json::from_slice(&msgs[10].payload).unwrap();
    old["last_contact"] = (old["last_contact"].as_i64().unwrap() + 1).into();
    let mut m = msgs[10].clone();
    m.offset = 1_000_000;
    m.payload = serde_json::to_vec(&old).unwrap().into();
    let before = stats.late.load(std::sync::atomic::Ordering::Relaxed);
    let more = p.process(&[m]).await.unwrap();
    let late: Vec<serde_json::Value> = more
        .iter()
        .filter(|r| r.topic == topic::LATE)
        .map(json)
        .collect();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["reason"], "late");
    assert_eq!(late[0]["window_start"], "2026-11-25T09:40:00Z");
    assert_eq!(late[0]["record"]["icao24"], old["icao24"]);
    assert_eq!(more.iter().filter(|r| r.topic == PROCESSED).count(), 1);
    assert_eq!(
        stats.late.load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );
    // Closing everything now still leaves the 09:40 window as it was emitted.
    let rest = p.finish().unwrap();
    assert!(
        rest.iter()
            .filter(|r| r.topic == topic::AGGREGATED)
            .all(|r| json(r)["window_start"] != "2026-11-25T09:40:00Z")
    );
}

fn phases(out: &[OutRecord]) -> std::collections::BTreeSet<String> {
    split(out)
        .0
        .iter()
        .map(|r| json(r)["flight_phase"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn sql_edits_reload_at_a_batch_boundary_and_a_bad_edit_keeps_the_last_good_plan() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_sql(dir.path());
    let features = dir.path().join("features.sql");
    let original = std::fs::read_to_string(&features).unwrap();
    let edit = |from: &str, to: &str| {
        assert!(original.contains(from), "{from}");
        std::fs::write(&features, original.replace(from, to)).unwrap();
    };
    let (mut p, stats) = processor_with_sql(dir.path().to_path_buf(), None).await;
    let msgs = messages(&inputs()[..3000]);
    let load = |s: &Arc<ProcessStats>| {
        (
            s.sql_reloads.load(std::sync::atomic::Ordering::Relaxed),
            s.sql_rejections.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    // The reference: the shipped SQL over the same batches.
    let (mut q, _) = processor(None).await;
    let mut expected = Vec::new();
    for c in msgs.chunks(1000) {
        expected.push(q.process(c).await.unwrap());
    }
    let first = p.process(&msgs[..1000]).await.unwrap();
    assert_eq!(first, expected[0]);

    // A syntax error, then an edit that drops a contract column: both rejected, counted,
    // and the batch runs on the last good plan.
    edit("WITH units AS", "WITH units AS AS");
    assert_eq!(p.process(&msgs[1000..2000]).await.unwrap(), expected[1]);
    assert_eq!(load(&stats), (0, 1));
    edit("END AS flight_phase", "END AS phase");
    let third = p.process(&msgs[2000..]).await.unwrap();
    assert_eq!(third, expected[2]);
    assert_eq!(load(&stats), (0, 2));
    // One that changes the type of a column the pipeline reads itself: planned and run
    // on empty input it works, on rows it would fail (once a panic) every batch.
    edit(
        "* 3.28083989501 AS altitude_ft",
        "* 3.28083989501 AS altitude_ft_float,\n        CAST(COALESCE(baro_altitude, geo_altitude) * 3.28083989501 AS INT) AS altitude_ft",
    );
    let out = p.process(&msgs[..1000]).await.unwrap();
    let (processed, dead) = split(&out);
    assert_eq!(load(&stats), (0, 3));
    assert!(dead.iter().all(|d| d.reason != "sql_error"), "{dead:?}");
    assert!(
        processed.iter().any(|r| json(r)["altitude_ft"]
            .as_f64()
            .is_some_and(|a| a.fract() != 0.0)),
        "the retyped plan ran"
    );
    // One that plans and runs on empty input but fails on every real row (these
    // callsigns are not numbers): tried on the last batch's records and rejected.
    edit(
        "CAST(date_part('hour', timestamp) AS INT)          AS hour,",
        "CAST(date_part('hour', timestamp) + CAST(callsign AS INT) * 0 AS INT) AS hour,",
    );
    let out = p.process(&msgs[1000..2000]).await.unwrap();
    assert_eq!(load(&stats), (0, 4));
    let notice = &stats.notices()[0];
    assert!(
        notice.contains("Cast") && !notice.contains("columns"),
        "rejected on the rows, not the schema: {notice}"
    );
    let (processed, dead) = split(&out);
    assert!(dead.iter().all(|d| d.reason != "sql_error"), "{dead:?}");
    assert!(processed.len() > 900, "{}", processed.len());
    // One that adds a column: fine at start-up, but while running the topic and the
    // archive would hold records of two shapes.
    edit(
        "AS is_anomaly\nFROM scored",
        "AS is_anomaly, length(callsign) AS callsign_length\nFROM scored",
    );
    let out = p.process(&msgs[2000..]).await.unwrap();
    assert_eq!(load(&stats), (0, 5));
    assert!(
        stats.notices()[0].contains("+callsign_length"),
        "{:?}",
        stats.notices()
    );
    assert!(
        split(&out)
            .0
            .iter()
            .all(|r| json(r).get("callsign_length").is_none())
    );

    // A good edit (approach renamed): swapped in for the next batch.
    assert!(phases(&third).contains("approach"));
    edit("THEN 'approach'", "THEN 'final'");
    let out = p.process(&msgs[..1000]).await.unwrap();
    assert_eq!(load(&stats), (1, 5));
    assert!(stats.notices().is_empty());
    let got = phases(&out);
    assert!(
        got.contains("final") && !got.contains("approach"),
        "{got:?}"
    );
}

/// A bus whose commits finish in the background and can be made to fail: a log of
/// messages, a read position and a committed position, as a Kafka partition has.
struct BackgroundCommits {
    log: Vec<Message>,
    read: usize,
    committed: Arc<std::sync::Mutex<usize>>,
    published: Arc<std::sync::Mutex<Vec<OutRecord>>>,
    /// Set while a commit is under way.
    busy: Arc<std::sync::atomic::AtomicBool>,
    /// The commits (counted from 1) that fail after they began.
    fail: Vec<usize>,
    commits: usize,
    recoveries: usize,
}

#[async_trait::async_trait]
impl contrail::bus::BatchConsumer for BackgroundCommits {
    async fn next_batch(
        &mut self,
        limits: BatchLimits,
    ) -> contrail::error::Result<Option<Vec<Message>>> {
        if self.read == self.log.len() {
            return Ok(None);
        }
        let end = (self.read + limits.max_records).min(self.log.len());
        let batch = self.log[self.read..end].to_vec();
        self.read = end;
        Ok(Some(batch))
    }

    async fn commit(&mut self, outputs: Vec<OutRecord>) -> contrail::error::Result<()> {
        self.start_commit(outputs).await?.await
    }

    async fn start_commit(
        &mut self,
        outputs: Vec<OutRecord>,
    ) -> contrail::error::Result<contrail::bus::PendingCommit> {
        use std::sync::atomic::Ordering;
        assert!(
            !self.busy.swap(true, Ordering::SeqCst),
            "a commit began before the previous one was awaited"
        );
        self.commits += 1;
        let fails = self.fail.contains(&self.commits);
        let (read, busy) = (self.read, Arc::clone(&self.busy));
        let (committed, published) = (Arc::clone(&self.committed), Arc::clone(&self.published));
        Ok(Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            busy.store(false, Ordering::SeqCst);
            if fails {
                return Err(contrail::error::Error::Bus(
                    "injected commit failure".into(),
                ));
            }
            published.lock().unwrap().extend(outputs);
            *committed.lock().unwrap() = read;
            Ok(())
        }))
    }

    async fn recover(&mut self) -> contrail::error::Result<()> {
        self.recoveries += 1;
        self.read = *self.committed.lock().unwrap();
        Ok(())
    }
}

/// `run_process` processes a batch while the previous one commits: it never begins a
/// commit before the last one is done, and when a commit fails after the next batch was
/// processed, both batches are read and processed again: every record is published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failing_in_the_background_voids_the_batches_after_it() {
    let msgs = messages(&inputs());
    let run = |fail: Vec<usize>| {
        let msgs = msgs.clone();
        async move {
            let (mut p, stats) = processor(None).await;
            let mut bus = BackgroundCommits {
                log: msgs,
                read: 0,
                committed: Default::default(),
                published: Default::default(),
                busy: Default::default(),
                fail,
                commits: 0,
                recoveries: 0,
            };
            contrail::pipeline::run_process(&mut p, &mut bus, Default::default())
                .await
                .unwrap();
            // Each processed record by aircraft and report time.
            let processed: Vec<(String, i64)> = bus
                .published
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.topic == PROCESSED)
                .map(|r| {
                    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                    (v["icao24"].to_string(), v["last_contact"].as_i64().unwrap())
                })
                .collect();
            let committed = *bus.committed.lock().unwrap();
            let batches = stats.batch_records.count();
            let latencies = stats.latency.count();
            (
                processed,
                committed,
                bus.recoveries,
                bus.commits,
                batches,
                latencies,
            )
        }
    };
    let (reference, committed, recoveries, commits, batches, latencies) = run(Vec::new()).await;
    assert_eq!(committed, msgs.len());
    assert_eq!(recoveries, 0);
    assert!(
        commits > 3,
        "{} messages made only {commits} commits",
        msgs.len()
    );
    assert_eq!(
        batches as usize,
        commits - 1,
        "the final commit holds no batch"
    );
    assert_eq!(
        latencies as usize,
        reference.len(),
        "one latency per processed record, measured when its own batch committed"
    );
    let mut once = reference.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), reference.len(), "a record published twice");

    let (failed, committed, recoveries, commits_then, _, _) = run(vec![2]).await;
    assert_eq!(committed, msgs.len());
    assert_eq!(recoveries, 1);
    assert_eq!(commits_then, commits + 1, "batches 2 and 3 were read again");
    let (mut failed, mut reference) = (failed, reference);
    failed.sort();
    reference.sort();
    assert_eq!(failed, reference);
}

/// A batch that fails after it closed windows (here its Parquet files cannot be written)
/// is read again and processed from the committed state. What it publishes then must be
/// what it publishes when nothing fails: each closed window's partials once, not once
/// more for the failed attempt.
#[tokio::test]
async fn a_batch_processed_again_after_a_failure_publishes_the_same_records() {
    let msgs = messages(&long_inputs(25, 30));
    let processor = |archive: PathBuf| async move {
        let mut config = ProcessConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql"));
        config.topics.processed = PROCESSED.into();
        config.topics.dead_letter = DLQ.into();
        config.topics.partials = Some("partials".into());
        config.archive_dir = Some(archive);
        config.model_path = Some(default_model());
        let clock = ManualClock::new(1_795_600_500_000_000);
        Processor::new(config, clock, Arc::new(ProcessStats::default()))
            .await
            .unwrap()
    };
    let records = |out: Vec<OutRecord>| {
        out.into_iter()
            .map(|r| (r.topic, r.key, r.payload.to_vec()))
            .collect::<Vec<_>>()
    };
    let (clean, failing) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let want = records(
        processor(clean.path().into())
            .await
            .process(&msgs)
            .await
            .unwrap(),
    );
    let partials = want.iter().filter(|r| r.0 == "partials").count();
    assert!(partials > 0, "the batch closes windows");

    let mut p = processor(failing.path().into()).await;
    // A file where the processed rows' folder goes: their archive job fails.
    std::fs::write(failing.path().join("processed"), b"in the way").unwrap();
    let e = p.process(&msgs).await.unwrap_err();
    assert!(matches!(e, contrail::error::Error::Io { .. }), "{e:?}");
    // What `run_process` does after a failed batch: the state is dropped, the batch read again.
    p.reset();
    std::fs::remove_file(failing.path().join("processed")).unwrap();
    let got = records(p.process(&msgs).await.unwrap());
    assert_eq!(
        got.iter().filter(|r| r.0 == "partials").count(),
        partials,
        "window partials of the failed attempt were published with the retry"
    );
    assert!(got == want, "the retried batch published other records");
}

/// When aggregate.sql fails on one record, the batch is processed again one record at a
/// time. The failed attempt must leave no trace in the state the retry starts from (the
/// aircraft's fixes, the watermark): the other records come out as they do in a batch
/// without the failing one.
#[tokio::test]
async fn an_aggregate_sql_failure_leaves_the_state_as_it_was_for_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_sql(dir.path());
    // A user's aggregate.sql that only takes numeric callsigns: a run-time cast error on
    // any other.
    let aggregate = std::fs::read_to_string(dir.path().join("aggregate.sql"))
        .unwrap()
        .replace(
            "    FROM records\n",
            "    FROM records\n    WHERE CAST(callsign AS INT) > -1\n",
        );
    assert!(aggregate.contains("CAST(callsign AS INT)"));
    std::fs::write(dir.path().join("aggregate.sql"), aggregate).unwrap();

    // Long enough for windows to close within the batch: on a watermark already at the
    // batch's end, its first records would be late.
    let mut payloads = long_inputs(25, 2);
    let bad = payloads.len() / 2;
    for (i, payload) in payloads.iter_mut().enumerate() {
        let mut v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v["callsign"] = if i == bad { "DLH4AB" } else { "1234" }.into();
        *payload = serde_json::to_vec(&v).unwrap();
    }
    let processed = |out: &[OutRecord]| {
        let mut rows: Vec<serde_json::Value> = out
            .iter()
            .filter(|r| r.topic == PROCESSED)
            .map(json)
            .collect();
        rows.sort_by_key(|v| v.to_string());
        rows
    };
    let late = |out: &[OutRecord]| out.iter().filter(|r| r.topic == topic::LATE).count();

    let mut without = payloads.clone();
    without.remove(bad);
    let (mut p, _) = processor_with_sql(dir.path().to_path_buf(), None).await;
    let want = p.process(&messages(&without)).await.unwrap();

    let archive = tempfile::tempdir().unwrap();
    let (mut p, _) =
        processor_with_sql(dir.path().to_path_buf(), Some(archive.path().to_path_buf())).await;
    let got = p.process(&messages(&payloads)).await.unwrap();
    let archived: usize = walk(&archive.path().join("processed"))
        .iter()
        .map(|f| parquet_rows(f))
        .sum();
    assert_eq!(
        archived,
        payloads.len() - 1,
        "rows archived by the failed attempt stayed"
    );
    let (_, dead) = split(&got);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "sql_error");
    assert_eq!(processed(&got).len(), payloads.len() - 1);
    assert_eq!(late(&got), late(&want));
    assert!(
        processed(&got) == processed(&want),
        "the retry processed records on the failed attempt's state"
    );
}

#[tokio::test]
async fn a_record_from_a_clock_days_ahead_leaves_the_watermark_and_windows_alone() {
    let msgs = messages(&long_inputs(30, 20));
    // Batches end elsewhere in the two runs, so the rows come in another order.
    let windows = |out: &[OutRecord]| -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = out
            .iter()
            .filter(|r| r.topic == topic::AGGREGATED || r.topic == topic::AIRCRAFT_AGGREGATES)
            .map(|r| (r.topic.clone(), json(r).to_string()))
            .collect();
        rows.sort();
        rows
    };
    let (mut reference, _) = processor(None).await;
    let mut want = Vec::new();
    for c in msgs.chunks(500) {
        want.extend(reference.process(c).await.unwrap());
    }

    // The same records, and two reports two days ahead from an aircraft heard nowhere
    // else (so no later record's features see them): one with its ingest time, one whose
    // ingest time claims the same day (the writer's clock, not trusted).
    let (mut p, stats) = processor(None).await;
    let mut got = Vec::new();
    let (head, tail) = msgs.split_at(msgs.len() / 3);
    got.extend(p.process(head).await.unwrap());
    let mut ahead = Vec::new();
    for (n, forged) in [(1_000_000, false), (1_000_001, true)] {
        let mut v: serde_json::Value = serde_json::from_slice(&tail[0].payload).unwrap();
        let ts = DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
        v["timestamp"] = (ts + chrono::Duration::days(2)).to_rfc3339().into();
        v["last_contact"] = (v["last_contact"].as_i64().unwrap() + 2 * 86_400).into();
        v["icao24"] = "abcdef".into();
        if forged {
            v["ingest_timestamp"] = v["timestamp"].clone();
        }
        let mut m = messages(&[serde_json::to_vec(&v).unwrap()]).remove(0);
        m.offset = n;
        ahead.push(m);
    }
    got.extend(p.process(&ahead).await.unwrap());
    for c in tail.chunks(500) {
        got.extend(p.process(c).await.unwrap());
    }

    let late: Vec<serde_json::Value> = got
        .iter()
        .filter(|r| r.topic == topic::LATE)
        .map(json)
        .filter(|l| l["reason"] != "late_partial")
        .collect();
    let (_, dead) = split(&got);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(late.len(), 2, "{late:?}");
    for l in &late {
        assert_eq!(l["reason"], "ahead");
        let sent: serde_json::Value = serde_json::from_slice(&ahead[0].payload).unwrap();
        assert_eq!(l["record"]["icao24"], sent["icao24"]);
    }
    assert_eq!(
        [late[0]["offset"].as_i64(), late[1]["offset"].as_i64()],
        [Some(1_000_000), Some(1_000_001)]
    );
    let limit =
        |l: &serde_json::Value| DateTime::parse_from_rfc3339(l["limit"].as_str().unwrap()).unwrap();
    // A day past the later of the partition's largest event time and the processor's
    // clock (09:55, before it).
    let partition = ahead[0].partition;
    let max_event = head
        .iter()
        .filter(|m| m.partition == partition)
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap()
        })
        .max()
        .unwrap();
    for l in &late {
        assert_eq!(limit(l), max_event + chrono::Duration::days(1));
    }
    assert_eq!(stats.ahead.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stats.late.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Processed like any record, and counted in no window.
    assert_eq!(
        got.iter().filter(|r| r.topic == PROCESSED).count(),
        want.iter().filter(|r| r.topic == PROCESSED).count() + 2
    );
    assert!(!windows(&want).is_empty());
    assert_eq!(windows(&got), windows(&want));
}

/// A changelog as Kafka would serve it: the changelog records of the commits made so far.
#[derive(Clone, Default)]
struct CommittedChangelog(Arc<std::sync::Mutex<Vec<OutRecord>>>);

impl CommittedChangelog {
    fn commit(&self, outputs: &[OutRecord]) {
        self.0.lock().unwrap().extend(
            outputs
                .iter()
                .filter(|r| r.topic == topic::WINDOW_STATE)
                .cloned(),
        );
    }
}

#[async_trait::async_trait]
impl contrail::bus::ChangelogReader for CommittedChangelog {
    async fn read(
        &self,
        partition: i32,
    ) -> contrail::error::Result<Vec<contrail::bus::ChangelogRecord>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.partition == Some(partition))
            .map(|r| {
                let key = r.key.clone().unwrap_or_default();
                (key, (!r.tombstone).then(|| r.payload.to_vec()))
            })
            .collect())
    }
}

/// Rows in the Parquet files a reader of `dir` sees (hidden and staged files are not).
fn visible_rows(dir: &Path) -> usize {
    walk(dir)
        .iter()
        .filter(|f| {
            f.extension().is_some_and(|x| x == "parquet")
                && !f.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .map(|f| parquet_rows(f))
        .sum()
}

/// With a changelog, a batch's Parquet files are staged and move into place only once its
/// commit has succeeded, so the archive holds committed rows only:
/// - a processor cut off from its group that finishes a batch after the partitions' new
///   owner restored them (its transaction is fenced and never commits) adds no row, even
///   where it cut the batch differently from the new owner;
/// - a crash between a commit and the renames loses no row: the next owner finds the
///   batch committed in the changelog and moves its files into place;
/// - the files of a batch that never committed are removed when the partition is taken over.
#[tokio::test]
async fn only_committed_batches_reach_the_archive() {
    let msgs = messages(&inputs());
    let dir = tempfile::tempdir().unwrap();
    let processed_dir = dir.path().join("processed");
    let changelog = CommittedChangelog::default();
    let owner = || async {
        let (p, stats) = processor(Some(dir.path().to_path_buf())).await;
        (p.with_changelog(Arc::new(changelog.clone())), stats)
    };
    let published = |out: &[OutRecord]| out.iter().filter(|r| r.topic == PROCESSED).count();
    let (head, tail) = msgs.split_at(600);
    let (first, second) = head.split_at(300);

    // The new owner restores every partition and commits its first batch.
    let (mut new_owner, _) = owner().await;
    let out = new_owner.process(first).await.unwrap();
    assert_eq!(
        visible_rows(&processed_dir),
        0,
        "files in place before the commit"
    );
    changelog.commit(&out);
    contrail::archive::promote(&new_owner.take_staged()).unwrap();
    let mut processed = published(&out);
    assert_eq!(visible_rows(&processed_dir), processed);

    // The old owner, its state restored before the handover, finishes a batch cut
    // elsewhere (offsets 0-449); its commit is fenced, so it never promotes.
    let (mut old_owner, _) = owner().await;
    let fenced = old_owner.process(&head[..450]).await.unwrap();
    assert!(published(&fenced) > processed);
    assert!(
        !old_owner.take_staged().is_empty(),
        "the old owner staged its files"
    );
    assert_eq!(
        visible_rows(&processed_dir),
        processed,
        "the fenced batch's rows reached the archive"
    );

    // The new owner commits its second batch, then crashes before moving its files.
    let out = new_owner.process(second).await.unwrap();
    changelog.commit(&out);
    processed += published(&out);
    assert!(!new_owner.take_staged().is_empty());
    drop(new_owner);

    // The next owner restarts at offset 600: the committed batch's files move into place,
    // the fenced batch's go.
    let (mut next, stats) = owner().await;
    let out = next.process(&tail[..100]).await.unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert!(stats.archive_files_promoted_on_restore.load(Relaxed) > 0);
    assert!(stats.uncommitted_files_removed.load(Relaxed) > 0);
    assert_eq!(
        visible_rows(&processed_dir),
        processed,
        "the crashed commit's rows"
    );
    changelog.commit(&out);
    contrail::archive::promote(&next.take_staged()).unwrap();
    processed += published(&out);
    assert_eq!(visible_rows(&processed_dir), processed);
    let hidden: Vec<PathBuf> = walk(dir.path())
        .into_iter()
        .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
}
