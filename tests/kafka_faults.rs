//! Exactly-once under faults, through a real Apache Kafka broker with the `contrail` binary.
//!
//! 300k simulator records are ingested once; then four processor runs read them, each in its
//! own consumer group with its own output, changelog and partials topics:
//! 1. reference: one processor, undisturbed;
//! 2. crashes: one processor killed with SIGKILL at random moments, five times, and
//!    restarted each time;
//! 3. scale-out: two processors sharing the group;
//! 4. broker restart: the broker is stopped and started again mid-run.
//!
//! The `read_committed` outputs of runs 2-4 (processed records without their processing
//! time, both aggregate topics, late data) must equal the reference's: nothing lost,
//! nothing duplicated. The crash run's Parquet archive must hold every processed record
//! once, and the windows it implies (the same aggregate.sql, one batch query over the
//! archive) must equal the streamed ones.
//!
//! Needs the broker `scripts/test` starts (it sets CONTRAIL_KAFKA_RESTART to restart it).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bootstrap, committed, contrail, end_offsets, read_all, spawn, terminate};
use contrail::pipeline::window::WindowSpec;
use contrail::pipeline::{ProcessConfig, ProcessStats, Processor};
use rand::{Rng, SeedableRng};
use rdkafka::message::Message as _;

const RECORDS: u64 = 300_000;
const CRASHES: usize = 5;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One processor run: its group, topics and archive.
struct Run {
    name: &'static str,
    sfx: String,
    data: PathBuf,
}

impl Run {
    fn topic(&self, t: &str) -> String {
        format!("{t}-{}-{}", self.name, self.sfx)
    }

    fn group(&self) -> String {
        self.topic("group")
    }

    fn raw(&self) -> String {
        format!("raw-{}", self.sfx)
    }

    fn topic_flags(&self) -> Vec<String> {
        let mut f = vec![
            "--kafka-bootstrap".to_string(),
            bootstrap(),
            "--topic-raw".into(),
            self.raw(),
        ];
        for (flag, t) in [
            ("--topic-processed", "processed"),
            ("--topic-dead-letter", "dead-letter"),
            ("--topic-aggregated", "agg"),
            ("--topic-aircraft-aggregates", "aircraft-agg"),
            ("--topic-window-state", "state"),
            ("--topic-window-partials", "partials"),
            ("--topic-late", "late"),
        ] {
            f.push(flag.into());
            f.push(self.topic(t));
        }
        f
    }

    fn create_topics(&self) {
        let mut args = vec!["topics".to_string(), "create".into()];
        args.extend(self.topic_flags());
        args.extend(["--partitions".into(), "6".into()]);
        contrail(&args, Duration::from_secs(60));
    }

    fn spawn(&self, instance: &str) -> Child {
        let mut args = vec!["process".to_string()];
        args.extend(self.topic_flags());
        args.extend(
            [
                "--http-bind",
                "127.0.0.1:0",
                "--group-id",
                &self.group(),
                "--instance-id",
                instance,
                "--data-dir",
                &self.data.display().to_string(),
                "--sql-dir",
                &repo().join("sql").display().to_string(),
                "--model",
                &repo()
                    .join("models/flight_anomaly_detector.json")
                    .display()
                    .to_string(),
                "--batch-max-records",
                "5000",
                "--batch-max-wait-ms",
                "200",
                "--window-length",
                "2m",
                "--watermark-delay",
                "30s",
                // No partition is idle in these runs; wall-clock time must not matter.
                "--idle-timeout",
                "1h",
                "--status-interval",
                "2",
            ]
            .map(String::from),
        );
        let log = std::fs::File::create(self.data.join(format!("{instance}.log"))).unwrap();
        spawn(&args, Stdio::from(log))
    }

    fn progress(&self) -> i64 {
        committed(&self.group(), &self.raw())
    }

    /// From each processor's log, for a failure message (the run's folder is deleted when
    /// the test ends): the first and last 30 warnings and errors, and the last 20 lines.
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let alarms: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let mut shown: Vec<&str> = alarms.iter().take(30).copied().collect();
            if alarms.len() > 60 {
                shown.push("...");
            }
            shown.extend(alarms.iter().skip(30.max(alarms.len().saturating_sub(30))));
            let tail = &lines[lines.len().saturating_sub(20)..];
            out += &format!(
                "\n--- {}: {} warnings and errors\n{}\n--- its last lines\n{}",
                path.display(),
                alarms.len(),
                shown.join("\n"),
                tail.join("\n")
            );
        }
        out
    }

    /// Waits until the group has committed every raw record and the merger has taken
    /// the last partials (its committed offset stops moving).
    fn wait_done(&self, total: i64, limit: Duration) {
        let started = Instant::now();
        while self.progress() < total {
            assert!(
                started.elapsed() < limit,
                "{}: {} of {total} committed after {limit:?}{}",
                self.name,
                self.progress(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let partials = self.topic("partials");
        let mut last = (committed(&self.group(), &partials), Instant::now());
        while last.1.elapsed() < Duration::from_secs(4) {
            assert!(
                started.elapsed() < limit,
                "{}: partials still moving{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
            let now = committed(&self.group(), &partials);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
    }

    fn outputs(&self) -> Outputs {
        let sorted = |t: &str| {
            let mut v: Vec<String> = read_all(&self.topic(t))
                .iter()
                .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
                .collect();
            v.sort();
            v
        };
        let mut processed: Vec<String> = read_all(&self.topic("processed"))
            .iter()
            .map(|m| {
                let mut v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap()).unwrap();
                v.as_object_mut().unwrap().remove("processing_timestamp");
                v.to_string()
            })
            .collect();
        processed.sort();
        Outputs {
            processed,
            aggregated: sorted("agg"),
            aircraft: sorted("aircraft-agg"),
            late: sorted("late"),
            dead: sorted("dead-letter"),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Outputs {
    processed: Vec<String>,
    aggregated: Vec<String>,
    aircraft: Vec<String>,
    late: Vec<String>,
    dead: Vec<String>,
}

/// The fields by which the same records (one icao24 and `last_contact`, or the same
/// whole record) differ, for up to five of them; the rest as they are.
fn differences(missing: &[&String], extra: &[&String]) -> String {
    let key = |r: &str| {
        let v: serde_json::Value = serde_json::from_str(r).ok()?;
        let v = v.get("record").unwrap_or(&v).clone();
        Some((
            v.get("icao24")?.to_string(),
            v.get("last_contact")?.to_string(),
            v,
        ))
    };
    let extra_by_key: BTreeMap<(String, String), serde_json::Value> = extra
        .iter()
        .filter_map(|r| key(r))
        .map(|(id, lc, v)| ((id, lc), v))
        .collect();
    let mut out = Vec::new();
    for r in missing {
        let Some((id, lc, want)) = key(r) else {
            continue;
        };
        let Some(got) = extra_by_key.get(&(id.clone(), lc.clone())) else {
            continue;
        };
        let fields: Vec<String> = want
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| got.get(k.as_str()) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: {v} -> {}",
                    got.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                )
            })
            .collect();
        out.push(format!(
            "icao24 {id} last_contact {lc}: {}",
            fields.join(", ")
        ));
    }
    let paired = out.len();
    out.truncate(5);
    format!(
        "{paired} records differ in fields (reference -> this run): [{}]; missing {:?}; extra {:?}",
        out.join("; "),
        &missing[..missing.len().min(3)],
        &extra[..extra.len().min(3)]
    )
}

fn assert_same(name: &str, got: &Outputs, want: &Outputs) {
    for (what, g, w) in [
        ("processed", &got.processed, &want.processed),
        ("aggregated", &got.aggregated, &want.aggregated),
        ("aircraft aggregates", &got.aircraft, &want.aircraft),
        ("late", &got.late, &want.late),
        ("dead letters", &got.dead, &want.dead),
    ] {
        if g != w {
            let gs: HashSet<&String> = g.iter().collect();
            let ws: HashSet<&String> = w.iter().collect();
            let missing: Vec<&String> = ws.difference(&gs).copied().collect();
            let extra: Vec<&String> = gs.difference(&ws).copied().collect();
            panic!(
                "{name}: {what} differ from the reference: {} vs {} records, {} missing, {} extra; {}",
                g.len(),
                w.len(),
                missing.len(),
                extra.len(),
                differences(&missing, &extra)
            );
        }
    }
    eprintln!(
        "{name}: identical to the reference ({} processed, {} windows, {} aircraft windows, {} late, {} dead letters)",
        got.processed.len(),
        got.aggregated.len(),
        got.aircraft.len(),
        got.late.len(),
        got.dead.len()
    );
}

/// Every row of the processed archive under `dir`.
fn archive(dir: &Path) -> Vec<arrow::array::RecordBatch> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let f = std::fs::File::open(&p).unwrap();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                        .unwrap()
                        .build()
                        .unwrap();
                out.extend(reader.map(Result::unwrap));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Apache Kafka broker scripts/test starts: run scripts/test"]
async fn processors_survive_crashes_scale_out_and_broker_restarts() {
    let restart = std::env::var("CONTRAIL_KAFKA_RESTART").expect(
        "CONTRAIL_KAFKA_RESTART must name a command that restarts the test broker (scripts/test sets it)",
    );
    let sfx = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &'static str| {
        let r = Run {
            name,
            sfx: sfx.clone(),
            data: tmp.path().join(name),
        };
        std::fs::create_dir_all(&r.data).unwrap();
        r.create_topics();
        r
    };
    // Ingest's dead letters go to a topic of their own; the runs' hold the processor's.
    let ingest_topics = run("ingest");
    let reference = run("reference");

    // 300k records, 1000 aircraft from 06:00, a little bad input for the dead-letter path.
    let mut ingest = vec!["ingest".to_string()];
    ingest.extend(ingest_topics.topic_flags());
    ingest.extend(
        [
            "--seed",
            "7",
            "--aircraft",
            "1000",
            "--start-time",
            "2026-11-25T06:00:00Z",
            "--speed",
            "max",
            "--max-records",
            &RECORDS.to_string(),
            "--invalid-rate",
            "0.001",
            "--http-bind",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    contrail(&ingest, Duration::from_secs(600));
    let total = end_offsets(&reference.raw());
    assert!(total > (RECORDS as i64) * 9 / 10, "ingested {total}");
    let limit = Duration::from_secs(600);

    // 1. Reference.
    let t0 = Instant::now();
    let mut p = reference.spawn("a");
    reference.wait_done(total, limit);
    terminate(&mut p, Duration::from_secs(60));
    eprintln!("reference run: {total} records in {:?}", t0.elapsed());
    let want = reference.outputs();
    assert_eq!(want.processed.len() + want.dead.len(), total as usize);
    assert!(
        want.aggregated.len() >= 10,
        "{} windows",
        want.aggregated.len()
    );
    let keys: HashSet<(String, i64)> = want
        .processed
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            (
                v["icao24"].as_str().unwrap().into(),
                v["last_contact"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys.len(),
        want.processed.len(),
        "duplicates in the reference"
    );

    // 2. Crashes: SIGKILL at random moments, restart each time.
    let crashes = run("crashes");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut marks: Vec<f64> = (0..CRASHES).map(|_| rng.random_range(0.05..0.9)).collect();
    marks.sort_by(f64::total_cmp);
    let mut p = crashes.spawn("a");
    let mut last_kill = 0;
    for (i, mark) in marks.iter().enumerate() {
        // Each life commits something before it dies, so the run moves on.
        let target = ((*mark * total as f64) as i64).max(last_kill + 1);
        let started = Instant::now();
        while crashes.progress() < target {
            assert!(
                started.elapsed() < limit,
                "crash run stalled before crash {i}{}",
                crashes.logs()
            );
            assert!(
                p.try_wait().unwrap().is_none(),
                "processor exited by itself"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..700)));
        let at = crashes.progress();
        assert!(at < total, "crash {i} came after the run had finished");
        last_kill = at;
        p.kill().unwrap();
        p.wait().unwrap();
        eprintln!("crash {}: SIGKILL with {at} of {total} committed", i + 1);
        p = crashes.spawn("a");
    }
    crashes.wait_done(total, limit);
    terminate(&mut p, Duration::from_secs(60));
    let got = crashes.outputs();
    assert_same("crashes", &got, &want);

    // The crash run's archive: each processed record once, and the windows it implies
    // equal the streamed ones.
    let batches = archive(&crashes.data.join("processed"));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        rows,
        want.processed.len(),
        "archived rows after {CRASHES} crashes"
    );
    let mut config = ProcessConfig::new(repo().join("sql"));
    config.model_path = Some(repo().join("models/flight_anomaly_detector.json"));
    config.window = WindowSpec {
        length_us: 120_000_000,
        delay_us: 30_000_000,
        ..WindowSpec::default()
    };
    let oracle = Processor::new(
        config,
        Arc::new(contrail::clock::SystemClock),
        Arc::new(ProcessStats::default()),
    )
    .await
    .unwrap();
    // Late records are processed and archived but belong to no window.
    let late: HashSet<(String, i64)> = want
        .late
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            let rec = &v["record"];
            (
                rec["icao24"].as_str().unwrap().into(),
                rec["last_contact"].as_i64().unwrap(),
            )
        })
        .collect();
    let on_time: Vec<arrow::array::RecordBatch> = batches
        .iter()
        .map(|b| {
            use arrow::array::AsArray;
            let ids = b.column_by_name("icao24").unwrap().as_string::<i32>();
            let lc = b
                .column_by_name("last_contact")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>();
            let mask: arrow::array::BooleanArray = (0..b.num_rows())
                .map(|i| Some(!late.contains(&(ids.value(i).to_string(), lc.value(i)))))
                .collect();
            arrow::compute::filter_record_batch(b, &mask).unwrap()
        })
        .collect();
    let (aircraft, global) = oracle.batch_windows(&on_time).await.unwrap();
    let streamed: BTreeMap<String, serde_json::Value> = want
        .aggregated
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            (v["window_start"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let mut compared = 0;
    let global_rows = contrail::pipeline::encode::to_json_rows(&global).unwrap();
    for r in global_rows.iter() {
        let v: serde_json::Value = serde_json::from_slice(r).unwrap();
        if let Some(s) = streamed.get(v["window_start"].as_str().unwrap()) {
            assert_eq!(&v, s, "window from the archive vs the stream");
            compared += 1;
        }
    }
    assert_eq!(
        compared,
        streamed.len(),
        "every streamed window has its batch twin"
    );
    let streamed_aircraft: HashSet<String> = got.aircraft.iter().cloned().collect();
    let matching = contrail::pipeline::encode::to_json_rows(&aircraft)
        .unwrap()
        .iter()
        .filter(|r| streamed_aircraft.contains(std::str::from_utf8(r).unwrap()))
        .count();
    assert_eq!(
        matching,
        streamed_aircraft.len(),
        "aircraft windows from the archive"
    );
    eprintln!("oracle: {compared} windows and {matching} aircraft windows equal the batch query");

    // 3. Two processors in one group.
    let scale = run("scale");
    let mut a = scale.spawn("a");
    let mut b = scale.spawn("b");
    scale.wait_done(total, limit);
    terminate(&mut a, Duration::from_secs(60));
    terminate(&mut b, Duration::from_secs(60));
    for i in ["a", "b"] {
        let log = std::fs::read_to_string(scale.data.join(format!("{i}.log"))).unwrap();
        let consumed = log
            .lines()
            .rev()
            .find_map(|l| l.split("consumed=").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(consumed > 0, "instance {i} did no work:\n{log}");
    }
    assert_same("two processors", &scale.outputs(), &want);

    // 4. The broker goes away mid-run and comes back.
    let outage = run("outage");
    let mut p = outage.spawn("a");
    let started = Instant::now();
    while outage.progress() < total / 3 {
        assert!(
            started.elapsed() < limit,
            "outage run stalled{}",
            outage.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("sh").args(["-c", &restart]).status().unwrap();
    assert!(status.success(), "restarting the broker failed");
    eprintln!(
        "broker restarted with {} of {total} committed",
        outage.progress()
    );
    outage.wait_done(total, limit);
    assert!(
        p.try_wait().unwrap().is_none(),
        "the processor gave up during the outage{}",
        outage.logs()
    );
    terminate(&mut p, Duration::from_secs(60));
    assert_same("broker restart", &outage.outputs(), &want);
}
