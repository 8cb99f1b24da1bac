//! The malformed-input corpus (`common/corpus.rs`) through a real Apache Kafka broker, both
//! ways bad input arrives:
//! - as lines of a replay file read by `contrail ingest` (validation at the front door);
//! - produced straight onto the raw topic, past ingest, for `contrail process` to decode.
//!
//! Each way, valid records sit between the bad ones. Nothing may crash; every bad payload
//! must be on the dead-letter topic exactly once with its stage, a reason code and its
//! bytes (the head of them when over the kept size); every valid neighbour must come out on
//! the processed topic exactly once. The running processor's `/metrics` must count the same
//! reasons and show no lag left, and it must stop cleanly on SIGTERM.
//!
//! Needs a broker (`KAFKA_BOOTSTRAP`, default 127.0.0.1:9092); `scripts/test` provides one.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::corpus::{LENIENT, malformed, valid_record};
use common::{bootstrap, contrail, read_all, spawn, terminate};
use contrail::dead_letter::{DeadLetter, MAX_KEPT_BYTES};
use rdkafka::config::ClientConfig;
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

const VALID_PER_WAY: usize = 300;

fn get(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

/// The value of the sample `name` (with its labels) on a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.parse().unwrap())
}

#[test]
#[ignore = "needs the Apache Kafka broker scripts/test starts: run scripts/test"]
fn malformed_corpus_is_dead_lettered_by_ingest_and_process_and_neighbours_pass() {
    let sfx = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let t = |name: &str| format!("{name}-malformed-{sfx}");
    let (raw, processed, dlq) = (t("raw"), t("processed"), t("dead-letter"));
    let mut flags: Vec<String> = vec!["--kafka-bootstrap".into(), bootstrap()];
    for (flag, topic) in [
        ("--topic-raw", raw.clone()),
        ("--topic-processed", processed.clone()),
        ("--topic-dead-letter", dlq.clone()),
        ("--topic-aggregated", t("agg")),
        ("--topic-aircraft-aggregates", t("aircraft-agg")),
        ("--topic-window-state", t("state")),
        ("--topic-window-partials", t("partials")),
        ("--topic-late", t("late")),
    ] {
        flags.extend([flag.to_string(), topic]);
    }
    let with = |cmd: &[&str], extra: &[&str]| -> Vec<String> {
        cmd.iter()
            .chain(extra)
            .map(|s| s.to_string())
            .chain(flags.iter().cloned())
            .collect()
    };
    contrail(
        &with(&["topics", "create"], &["--partitions", "2"]),
        Duration::from_secs(60),
    );
    let corpus = malformed();

    // Way 1: a replay file, bad lines between good ones, through ingest.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corpus.jsonl");
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut valid_keys = Vec::new();
    let per_gap = VALID_PER_WAY / corpus.len();
    let mut i = 0;
    // A blank line of a JSON-lines file is no record (replay skips it): the empty payload
    // takes the second way only.
    let by_file: Vec<&(&str, Vec<u8>)> = corpus.iter().filter(|(_, b)| !b.is_empty()).collect();
    for (_, bad) in &by_file {
        for _ in 0..per_gap {
            let v = valid_record(i);
            valid_keys.push((
                v["icao24"].as_str().unwrap().to_string(),
                v["last_contact"].as_i64().unwrap(),
            ));
            lines.push(serde_json::to_vec(&v).unwrap());
            i += 1;
        }
        lines.push(bad.clone());
    }
    std::fs::write(&file, lines.join(&b'\n')).unwrap();
    let out = contrail(
        &with(
            &["ingest"],
            &[
                "--source",
                "replay",
                "--replay-file",
                file.to_str().unwrap(),
                "--speed",
                "max",
                "--http-bind",
                "127.0.0.1:0",
            ],
        ),
        Duration::from_secs(120),
    );
    eprintln!("{out}");

    // Way 2: straight onto the raw topic, past validation, with valid neighbours.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("message.max.bytes", "1048576")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // (partition, offset) -> case name, for the process stage's dead letters.
    let mut produced: HashMap<(i32, i64), &str> = HashMap::new();
    rt.block_on(async {
        for (name, bad) in &corpus {
            // The broker's default message limit is 1 MiB: the process way gets a payload
            // just under it (ingest got the full MiB above).
            let bad = if bad.len() > 1_000_000 {
                let mut v = valid_record(9_999);
                v["callsign"] = serde_json::json!("X".repeat(1_000_000 - 600));
                serde_json::to_vec(&v).unwrap()
            } else {
                bad.clone()
            };
            for _ in 0..per_gap {
                let mut v = valid_record(i);
                v["ingest_timestamp"] = serde_json::json!(chrono::Utc::now().to_rfc3339());
                let key = v["icao24"].as_str().unwrap().to_string();
                valid_keys.push((key.clone(), v["last_contact"].as_i64().unwrap()));
                let payload = serde_json::to_vec(&v).unwrap();
                producer
                    .send(
                        FutureRecord::to(&raw).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap();
                i += 1;
            }
            let d = producer
                .send(
                    FutureRecord::to(&raw).key(*name).payload(&bad),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("producing {name}: {e}"));
            produced.insert((d.partition, d.offset), name);
        }
    });
    let total = valid_keys.len() + corpus.len();

    // The processor drains the raw topic; its /metrics is read while it runs.
    let data = tempfile::tempdir().unwrap();
    let mut child = spawn(
        &with(
            &["process"],
            &[
                "--http-bind",
                "127.0.0.1:0",
                "--group-id",
                &t("group"),
                "--data-dir",
                data.path().to_str().unwrap(),
                "--batch-max-wait-ms",
                "200",
            ],
        ),
        Stdio::inherit(),
    );
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let http = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("process prints its http address");
        if let Some(rest) = line.strip_prefix("http: ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    // The lag comes from librdkafka's statistics (every 5 s): wait for a report that
    // covers both raw partitions after everything was consumed.
    let raw_lag = |page: &str| -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with(&format!("contrail_process_consumer_lag{{topic=\"{raw}\"")))
            .map(str::to_string)
            .collect()
    };
    let page = loop {
        let page = get(&format!("http://{http}/metrics"));
        if sample(&page, "contrail_process_consumed_total") == Some(total as f64)
            && raw_lag(&page).len() == 2
            && raw_lag(&page).iter().all(|l| l.ends_with(" 0"))
        {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "process did not consume {total} records with no lag left:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(child.try_wait().unwrap(), None, "process is still running");
    terminate(&mut child, Duration::from_secs(60));

    // Dead letters: each bad payload once per way, with its stage and a reason code.
    let dead: Vec<DeadLetter> = read_all(&dlq)
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect();
    let mut by_stage: BTreeMap<&str, Vec<&DeadLetter>> = BTreeMap::new();
    for d in &dead {
        assert!(!d.reason.is_empty() && !d.message.is_empty(), "{d:?}");
        by_stage.entry(d.stage.as_str()).or_default().push(d);
    }
    let ingest_dead = by_stage.remove("ingest").unwrap_or_default();
    let process_dead = by_stage.remove("process").unwrap_or_default();
    assert!(by_stage.is_empty(), "unknown stages: {:?}", by_stage.keys());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (name, bad) in &by_file {
        let matching: Vec<_> = ingest_dead
            .iter()
            .filter(|d| {
                let kept = d.original_payload();
                d.payload_bytes == bad.len()
                    && bad.starts_with(&kept)
                    && (kept.len() == bad.len() || d.payload_truncated)
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "ingest dead letters for {name}: {}",
            matching.len()
        );
        if bad.len() > MAX_KEPT_BYTES {
            assert!(matching[0].payload_truncated, "{name}");
        }
        eprintln!(
            "ingest  {name:<32} {:<16} {}",
            matching[0].reason, matching[0].message
        );
    }
    assert_eq!(
        ingest_dead.len(),
        by_file.len(),
        "ingest dead-lettered only the corpus"
    );
    for d in &process_dead {
        let at = (d.source_partition.unwrap(), d.source_offset.unwrap());
        let name = produced
            .remove(&at)
            .unwrap_or_else(|| panic!("process dead-lettered {at:?}, not a corpus record: {d:?}"));
        assert_eq!(d.source_topic.as_deref(), Some(raw.as_str()));
        *reasons.entry(d.reason.clone()).or_default() += 1;
        eprintln!(
            "process {name:<32} {:<22} {}",
            d.reason,
            d.message.chars().take(120).collect::<String>()
        );
    }
    let mut left: Vec<&str> = produced.values().copied().collect();
    left.sort_unstable();
    let mut lenient: Vec<&str> = LENIENT.iter().map(|l| l.0).collect();
    lenient.sort_unstable();
    assert_eq!(left, lenient, "not dead-lettered by process");

    // The metrics counted the same reasons, and nothing is left to consume.
    for (reason, n) in &reasons {
        let name = format!("contrail_process_dead_lettered_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&page, &name), Some(*n as f64), "{name}\n{page}");
    }
    for l in page
        .lines()
        .filter(|l| l.starts_with("contrail_process_consumer_lag{"))
    {
        assert!(l.ends_with(" 0"), "lag left: {l}");
    }

    // Every valid neighbour, once.
    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    let base = valid_record(9_999);
    let mut lenient_seen = 0;
    for m in read_all(&processed) {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        if v["icao24"] == base["icao24"] {
            // A lenient case: the value it spelt, everything else as in the base record.
            let (case, field, value) = LENIENT
                .iter()
                .find(|(_, f, value)| v[*f].as_f64() == Some(*value))
                .unwrap_or_else(|| panic!("a corpus record was processed: {v}"));
            assert_eq!(v["callsign"], "TST9999", "{case}");
            eprintln!("process {case:<32} processed, {field} = {value}");
            lenient_seen += 1;
            continue;
        }
        *seen
            .entry((
                v["icao24"].as_str().unwrap().to_string(),
                v["last_contact"].as_i64().unwrap(),
            ))
            .or_default() += 1;
    }
    for k in &valid_keys {
        assert_eq!(seen.get(k), Some(&1), "valid record {k:?}");
    }
    assert_eq!(seen.len(), valid_keys.len(), "nothing else was processed");
    assert_eq!(lenient_seen, LENIENT.len());
}
