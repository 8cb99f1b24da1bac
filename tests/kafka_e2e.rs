//! End to end through a real Apache Kafka broker, with the `contrail` binary:
//! topics create -> ingest (50k simulator records) -> process -> read `flight-processed-data`
//! and `flight-dead-letter` as a `read_committed` consumer, open the archive with DuckDB and
//! pyarrow, then run `contrail serve` over it and check it with a Python grpcio client.
//!
//! Needs a broker (`KAFKA_BOOTSTRAP`, default 127.0.0.1:9092) and `CONTRAIL_PYTHON` (a Python
//! with duckdb and pyarrow); `scripts/test` provides both and runs the ignored tests.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::DateTime;
use common::{bootstrap, contrail, partitions, read_all};
use contrail::dead_letter::DeadLetter;
use contrail::ingest::simulator::{Emitted, Simulator, SimulatorConfig};
use contrail::ingest::validate::{Dedupe, validate};
use contrail::schema::processed_contract_columns;
use rdkafka::message::Message as _;

const RECORDS: usize = 50_000;
const SEED: u64 = 21;
const START: &str = "2026-11-25T08:00:00Z";
const INVALID_RATE: f64 = 0.01;

/// What ingest must publish: the simulator's first RECORDS records through validation and
/// dedupe, computed here independently of the binary.
fn expected() -> (Vec<(String, i64)>, usize) {
    let mut sim = Simulator::new(SimulatorConfig {
        seed: SEED,
        aircraft: 300,
        anomaly_rate: 0.002,
        invalid_rate: INVALID_RATE,
        report_interval_s: 5.0,
        start: DateTime::parse_from_rfc3339(START).unwrap().to_utc(),
    });
    let mut emitted = Vec::new();
    while emitted.len() < RECORDS {
        emitted.extend(sim.tick());
    }
    emitted.truncate(RECORDS);
    let (mut valid, mut invalid, mut dedupe) = (Vec::new(), 0, Dedupe::default());
    for e in emitted {
        match validate(&e.to_bytes()) {
            Ok(r) if !dedupe.is_repeat(&r.icao24, r.last_contact) => {
                valid.push((r.icao24, r.last_contact))
            }
            Ok(_) => {}
            Err(_) => invalid += 1,
        }
        assert!(!matches!(e, Emitted::Invalid(_)) || validate(&e.to_bytes()).is_err());
    }
    (valid, invalid)
}

#[test]
#[ignore = "needs Apache Kafka and CONTRAIL_PYTHON: run scripts/test"]
fn simulator_through_kafka_exactly_once_with_archive() {
    let python = std::env::var("CONTRAIL_PYTHON").expect(
        "CONTRAIL_PYTHON must point at a Python with duckdb and pyarrow (scripts/test sets it)",
    );
    let bootstrap = bootstrap();
    let sfx = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let t = |name: &str| format!("{name}-{sfx}");
    let (raw, processed, dlq) = (t("raw"), t("processed"), t("dead-letter"));
    let topic_flags = vec![
        "--kafka-bootstrap".to_string(),
        bootstrap.clone(),
        "--topic-raw".into(),
        raw.clone(),
        "--topic-processed".into(),
        processed.clone(),
        "--topic-dead-letter".into(),
        dlq.clone(),
        "--topic-aggregated".into(),
        t("agg"),
        "--topic-aircraft-aggregates".into(),
        t("aircraft-agg"),
        "--topic-window-state".into(),
        t("state"),
        "--topic-window-partials".into(),
        t("partials"),
        "--topic-late".into(),
        t("late"),
    ];
    let with = |cmd: &[&str], extra: &[String]| -> Vec<String> {
        cmd.iter()
            .map(|s| s.to_string())
            .chain(topic_flags.iter().cloned())
            .chain(extra.iter().cloned())
            .collect()
    };
    let run = |args: Vec<String>, secs: u64| contrail(&args, Duration::from_secs(secs));

    // Topics: created once, harmless the second time.
    let first = run(
        with(&["topics", "create"], &["--partitions".into(), "3".into()]),
        60,
    );
    assert_eq!(first.matches(": created").count(), 8, "{first}");
    let second = run(
        with(&["topics", "create"], &["--partitions".into(), "3".into()]),
        60,
    );
    assert_eq!(second.matches(": exists").count(), 8, "{second}");
    assert_eq!(partitions(&processed), 3);
    assert_eq!(
        partitions(&t("partials")),
        1,
        "one processor merges the global windows"
    );

    let (valid, invalid) = expected();
    assert!(
        invalid > 100,
        "the run must exercise the dead-letter path ({invalid})"
    );

    run(
        with(
            &["ingest"],
            &[
                "--seed".into(),
                SEED.to_string(),
                "--start-time".into(),
                START.into(),
                "--speed".into(),
                "max".into(),
                "--max-records".into(),
                RECORDS.to_string(),
                "--invalid-rate".into(),
                INVALID_RATE.to_string(),
                "--http-bind".into(),
                "127.0.0.1:0".into(),
            ],
        ),
        300,
    );

    let data = tempfile::tempdir().unwrap();
    run(
        with(
            &["process"],
            &[
                "--http-bind".into(),
                "127.0.0.1:0".into(),
                "--group-id".into(),
                t("group"),
                "--data-dir".into(),
                data.path().display().to_string(),
                "--batch-max-records".into(),
                "5000".into(),
                "--batch-max-wait-ms".into(),
                "300".into(),
                // Short windows, so some close within the run's 14 minutes of event time.
                "--window-length".into(),
                "1m".into(),
                "--watermark-delay".into(),
                "1m".into(),
                "--stop-after".into(),
                valid.len().to_string(),
                "--sql-dir".into(),
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("sql")
                    .display()
                    .to_string(),
            ],
        ),
        600,
    );

    // Every valid record exactly once, with the contract's columns and key.
    let out = read_all(&processed);
    let contract: Vec<String> = processed_contract_columns();
    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    for m in &out {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&String> = obj.keys().collect();
        keys.sort();
        let mut want: Vec<&String> = contract.iter().collect();
        want.sort();
        assert_eq!(keys, want, "processed record columns");
        let icao = v["icao24"].as_str().unwrap().to_string();
        assert_eq!(m.key(), Some(icao.as_bytes()));
        *seen
            .entry((icao, v["last_contact"].as_i64().unwrap()))
            .or_default() += 1;
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dupes.is_empty(),
        "duplicates on {processed}: {:?}",
        &dupes[..dupes.len().min(5)]
    );
    assert_eq!(out.len(), valid.len(), "processed count");
    for v in &valid {
        assert!(seen.contains_key(v), "missing {v:?}");
    }

    // Every invalid record in the dead-letter topic, with its reason and original bytes.
    let dead = read_all(&dlq);
    assert_eq!(dead.len(), invalid, "dead-letter count");
    for m in &dead {
        let d: DeadLetter = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(d.stage, "ingest");
        assert!(!d.reason.is_empty() && !d.message.is_empty());
        assert!(validate(&d.original_payload()).is_err());
    }

    // The archive, as DuckDB and pyarrow see it.
    let columns = contract.join(",");
    let status = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_archive.py"))
        .arg(data.path().join("processed"))
        .arg(valid.len().to_string())
        .arg(&columns)
        .status()
        .expect("running the Python archive check");
    assert!(status.success(), "the Python archive check failed");

    // The query service over those topics and that archive, called by a grpcio client.
    let windows: Vec<serde_json::Value> = read_all(&t("agg"))
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect();
    assert!(windows.len() >= 5, "closed windows: {}", windows.len());
    let expected = data.path().join("expected-windows.json");
    std::fs::write(&expected, serde_json::to_vec(&windows).unwrap()).unwrap();
    let mut serve = common::spawn(
        &with(
            &["serve"],
            &[
                "--grpc-bind".into(),
                "127.0.0.1:0".into(),
                "--http-bind".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                data.path().display().to_string(),
            ],
        ),
        std::process::Stdio::inherit(),
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(serve.stdout.take().unwrap()));
    let address = lines
        .find_map(|l| {
            l.unwrap()
                .strip_prefix("grpc: ")
                .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        })
        .expect("serve prints its gRPC address");
    let status = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpc_client.py"))
        .arg(&address)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"))
        .arg(&expected)
        .arg(valid.len().to_string())
        .status()
        .expect("running the Python gRPC client");
    assert!(status.success(), "the Python gRPC client check failed");

    // The dashboard's API over the same live store (ready: the gRPC client waited for it).
    let dashboard = lines
        .find_map(|l| l.unwrap().strip_prefix("dashboard: ").map(str::to_string))
        .expect("serve prints its dashboard address");
    let get = |path: &str| -> serde_json::Value {
        let url = format!("{dashboard}{path}");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { reqwest::get(&url).await.unwrap().json().await.unwrap() })
    };
    let summary = get("api/summary");
    assert_eq!(
        summary["records"].as_u64(),
        Some(valid.len() as u64),
        "{summary}"
    );
    let served_windows = get("api/windows?limit=10000");
    let closed = served_windows
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["open"] == false)
        .count();
    assert_eq!(closed, windows.len());
    common::terminate(&mut serve, Duration::from_secs(30));

    // Topics: deleted only when confirmed, then gone (the broker says so the second time).
    let refused = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .args(with(&["topics", "delete"], &[]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("--yes") && stderr.contains(&raw),
        "{stderr}"
    );
    assert_eq!(
        partitions(&raw),
        3,
        "a refused delete left the topics alone"
    );
    let deleted = run(with(&["topics", "delete"], &["--yes".into()]), 60);
    assert_eq!(deleted.matches(": deleted").count(), 8, "{deleted}");
    let again = run(with(&["topics", "delete"], &["--yes".into()]), 60);
    assert_eq!(again.matches(": absent").count(), 8, "{again}");
}
