//! The OpenSky client and source against the project's loopback imitation of the API
//! (tests/common/opensky.rs): OAuth2 tokens and their renewal, anonymous access, credits
//! and 429, faults with backoff, unchanged states, and record -> replay through the binary.

#[path = "common/opensky.rs"]
mod server;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contrail::ingest::opensky::{
    ClientConfig, Credentials, OpenSkyClient, OpenSkySource, PollConfig, parse_states,
};
use contrail::ingest::record::RawRecord;
use server::{Config, Fault, OpenSkyServer, simulated_snapshots};

fn client(s: &OpenSkyServer, credentials: bool, timeout: Duration) -> OpenSkyClient {
    let (id, secret) = s.credentials();
    OpenSkyClient::new(ClientConfig {
        api_url: s.api_url(),
        auth_url: s.auth_url(),
        credentials: credentials.then_some(Credentials {
            client_id: id,
            client_secret: secret,
        }),
        bbox: None,
        timeout,
    })
    .unwrap()
}

fn poll_config() -> PollConfig {
    PollConfig {
        interval: Duration::from_secs(5),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        max_polls: None,
    }
}

#[tokio::test]
async fn token_is_fetched_once_cached_and_renewed_after_a_401() {
    let s = OpenSkyServer::start(Config::default(), simulated_snapshots(50, 4, 1)).await;
    let mut c = client(&s, true, Duration::from_secs(10));
    let first = c.states().await.unwrap();
    let states = parse_states(&first.body).unwrap();
    assert_eq!(states.payloads.len(), 50);
    assert_eq!(
        first.remaining,
        Some(3996),
        "4000 credits, a world snapshot costs 4"
    );
    c.states().await.unwrap();
    assert_eq!(s.seen().token_requests, 1, "the token is cached");
    s.inject(Fault::ExpireTokens);
    c.states().await.unwrap();
    let seen = s.seen();
    assert_eq!(seen.token_requests, 2, "a 401 renews the token once");
    let statuses: Vec<u16> = seen.calls.iter().map(|c| c.2).collect();
    assert_eq!(statuses, [200, 200, 401, 200]);
    assert!(
        seen.calls
            .iter()
            .all(|c| c.1.as_deref().is_some_and(|a| a.starts_with("Bearer tok-")))
    );
}

#[tokio::test]
async fn a_token_near_expiry_is_renewed_before_use() {
    let config = Config {
        token_lifetime_s: 31, // inside the 30 s margin after a second
        ..Config::default()
    };
    let s = OpenSkyServer::start(config, simulated_snapshots(10, 2, 2)).await;
    let mut c = client(&s, true, Duration::from_secs(10));
    c.states().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.states().await.unwrap();
    assert_eq!(s.seen().token_requests, 2);
    assert!(s.seen().calls.iter().all(|c| c.2 == 200), "never a 401");
}

#[tokio::test]
async fn wrong_credentials_fail_the_poll_without_leaking_the_secret() {
    let s = OpenSkyServer::start(Config::default(), simulated_snapshots(10, 2, 3)).await;
    let mut c = OpenSkyClient::new(ClientConfig {
        api_url: s.api_url(),
        auth_url: s.auth_url(),
        credentials: Some(Credentials {
            client_id: "someone".into(),
            client_secret: "wrong-secret-d41d8".into(),
        }),
        bbox: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let e = c.states().await.unwrap_err().to_string();
    assert!(e.contains("token endpoint") && e.contains("401"), "{e}");
    assert!(!e.contains("wrong-secret"), "{e}");
}

#[tokio::test]
async fn anonymous_polls_send_no_authorization_and_bounding_boxes_filter_and_cost_less() {
    let snapshots = simulated_snapshots(300, 2, 4);
    let s = OpenSkyServer::start(Config::default(), snapshots.clone()).await;
    let mut c = client(&s, false, Duration::from_secs(10));
    let all = c.states().await.unwrap();
    assert_eq!(all.remaining, Some(396));
    assert!(s.seen().calls[0].1.is_none());
    assert_eq!(s.seen().token_requests, 0);

    // A 10 x 10 degree box around the first aircraft: cost 2, only aircraft inside.
    let states = parse_states(&all.body).unwrap();
    let r: RawRecord = serde_json::from_slice(&states.payloads[0]).unwrap();
    let (lat, lon) = (r.latitude.unwrap(), r.longitude.unwrap());
    let bbox = format!("{},{},{},{}", lat - 5.0, lon - 5.0, lat + 5.0, lon + 5.0)
        .parse()
        .unwrap();
    let mut boxed = OpenSkyClient::new(ClientConfig {
        bbox: Some(bbox),
        ..ClientConfig {
            api_url: s.api_url(),
            auth_url: s.auth_url(),
            credentials: None,
            bbox: None,
            timeout: Duration::from_secs(10),
        }
    })
    .unwrap();
    let inside = boxed.states().await.unwrap();
    assert_eq!(
        inside.remaining,
        Some(394),
        "a 100 square-degree box costs 2"
    );
    let inside = parse_states(&inside.body).unwrap();
    assert!(!inside.payloads.is_empty() && inside.payloads.len() < states.payloads.len());
    for p in &inside.payloads {
        let r: RawRecord = serde_json::from_slice(p).unwrap();
        assert!(bbox.contains(r.latitude.unwrap(), r.longitude.unwrap()));
    }
}

#[tokio::test]
async fn faults_back_off_and_never_stop_the_source() {
    let s = OpenSkyServer::start(Config::default(), simulated_snapshots(40, 3, 5)).await;
    let mut source =
        OpenSkySource::new(client(&s, true, Duration::from_millis(500)), poll_config());
    for f in [
        Fault::Status(503),
        Fault::Truncated,
        Fault::Delay(Duration::from_secs(2)), // over the 500 ms timeout
        Fault::Status(500),
    ] {
        s.inject(f);
    }
    let started = Instant::now();
    let mut chunks = Vec::new();
    for _ in 0..5 {
        chunks.push(source.cycle().await);
    }
    assert_eq!(source.stats().failures, 4);
    assert_eq!(source.stats().polls, 1);
    assert!(chunks[..4].iter().all(Vec::is_empty));
    assert_eq!(
        chunks[4].len(),
        40,
        "the first good poll publishes every state"
    );
    // Backoff 20 ms doubling (jitter over the upper half): at least 10+20+40+80 ms waited.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = s.seen().calls.iter().map(|c| c.2).collect();
    assert_eq!(statuses, [503, 200, 200, 500, 200]);
}

#[tokio::test]
async fn unchanged_states_are_not_published_again() {
    // From one snapshot to the next, every other aircraft keeps its last report.
    let mut snapshots = simulated_snapshots(30, 22, 6).split_off(2);
    for i in 1..snapshots.len() {
        assert_eq!(snapshots[i].rows.len(), 30);
        for j in (0..30).step_by(2) {
            snapshots[i].rows[j] = snapshots[i - 1].rows[j].clone();
        }
    }
    let s = OpenSkyServer::start(Config::default(), snapshots).await;
    let mut source = OpenSkySource::new(client(&s, true, Duration::from_secs(10)), poll_config());
    let first = source.cycle().await;
    assert_eq!(first.len(), 30);
    let second = source.cycle().await; // 5 s later: the next snapshot
    let keys = |p: &[Vec<u8>]| -> HashSet<(String, i64)> {
        p.iter()
            .map(|x| serde_json::from_slice::<RawRecord>(x).unwrap())
            .map(|r| (r.icao24, r.last_contact))
            .collect()
    };
    assert!(
        keys(&first).is_disjoint(&keys(&second)),
        "a state published twice"
    );
    assert!(source.stats().unchanged >= 15, "{:?}", source.stats());
    assert_eq!(second.len() + source.stats().unchanged as usize, 30);
    assert_eq!(source.stats().polls, 2);
}

#[tokio::test]
async fn out_of_credits_waits_for_retry_after() {
    let config = Config {
        retry_after_s: 2,
        ..Config::default()
    };
    let s = OpenSkyServer::start(config, simulated_snapshots(20, 2, 7)).await;
    s.set_credits("anonymous", 0);
    let mut source = OpenSkySource::new(client(&s, false, Duration::from_secs(10)), poll_config());
    assert!(source.cycle().await.is_empty());
    s.set_credits("anonymous", 400);
    let started = Instant::now();
    let chunk = source.cycle().await;
    assert_eq!(chunk.len(), 20);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    let seen = s.seen();
    assert_eq!(
        seen.calls.iter().map(|c| c.2).collect::<Vec<_>>(),
        [429, 200]
    );
    assert!(seen.calls[1].0 - seen.calls[0].0 >= Duration::from_millis(1900));
    assert_eq!(source.stats().credits_remaining, Some(396));
}

fn contrail(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .args(args)
        .env(
            "CONTRAIL_LOG",
            "debug,rdkafka=warn,h2=info,hyper=info,rustls=info",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number after `label` in a status line.
fn count(line: &str, label: &str) -> u64 {
    let line = line.strip_prefix("done: ").unwrap_or(line);
    line.split(" | ")
        .find_map(|p| p.trim().strip_prefix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{label} in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_through_the_demo() {
    let s = OpenSkyServer::start(Config::default(), simulated_snapshots(80, 6, 8)).await;
    let dir = tempfile::tempdir().unwrap();
    let (id, secret) = s.credentials();
    let creds = dir.path().join("credentials.json");
    std::fs::write(
        &creds,
        serde_json::json!({"clientId": id, "clientSecret": secret}).to_string(),
    )
    .unwrap();
    let recording = dir.path().join("rec.jsonl");
    let (api, auth) = (s.api_url(), s.auth_url());
    let args: Vec<String> = [
        "record",
        "--out",
        recording.to_str().unwrap(),
        "--opensky-api-url",
        &api,
        "--opensky-auth-url",
        &auth,
        "--opensky-credentials",
        creds.to_str().unwrap(),
        "--polls",
        "2",
        "--poll-interval",
        "5s",
    ]
    .map(String::from)
    .to_vec();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        contrail(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("2 polls recorded"), "{out}");
    assert!(
        !out.contains(&secret) && !err.contains(&secret),
        "the secret leaked into the output"
    );
    assert!(err.contains("authenticated"), "{err}");

    // What the recording holds: unique (icao24, last_contact) over both polls.
    let text = std::fs::read_to_string(&recording).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let mut unique = HashSet::new();
    for l in &lines {
        assert!(l["poll_time"].as_str().unwrap().ends_with('Z'));
        let states = parse_states(l["response"].to_string().as_bytes()).unwrap();
        for p in states.payloads {
            let r: RawRecord = serde_json::from_slice(&p).unwrap();
            unique.insert((r.icao24, r.last_contact));
        }
    }
    assert!(unique.len() >= 80);

    let data = dir.path().join("data");
    let out = replay_demo(&recording, "max", &data).await;
    let done = out
        .lines()
        .find(|l| l.starts_with("done: "))
        .expect("done line");
    assert_eq!(count(done, "processed") as usize, unique.len(), "{done}");
    assert_eq!(
        count(done, "read"),
        count(done, "published") + count(done, "duplicates") + count(done, "dead-lettered")
    );

    // The archive's processed Parquet files as a replay source: raw columns only.
    let files: Vec<std::path::PathBuf> = walk(&dir.path().join("data/processed"));
    assert!(!files.is_empty());
    let rows: i64 = files
        .iter()
        .map(|f| {
            parquet::file::reader::FileReader::metadata(
                &parquet::file::serialized_reader::SerializedFileReader::new(
                    std::fs::File::open(f).unwrap(),
                )
                .unwrap(),
            )
            .file_metadata()
            .num_rows()
        })
        .sum();
    let first = files[0].clone();
    let first_rows = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(
            std::fs::File::open(&first).unwrap(),
        )
        .unwrap(),
    )
    .file_metadata()
    .num_rows();
    assert_eq!(
        rows as usize,
        unique.len(),
        "the archive holds every processed record"
    );
    let data3 = dir.path().join("data3");
    let out = replay_demo(&first, "max", &data3).await;
    let done = out
        .lines()
        .find(|l| l.starts_with("done: "))
        .expect("done line");
    assert_eq!(count(done, "processed") as i64, first_rows, "{done}");

    // The same records as flat JSON lines, replayed with their time spacing (x1000).
    let flat = dir.path().join("flat.jsonl");
    let mut body = String::new();
    for l in &lines {
        for p in parse_states(l["response"].to_string().as_bytes())
            .unwrap()
            .payloads
        {
            body.push_str(std::str::from_utf8(&p).unwrap());
            body.push('\n');
        }
    }
    body.push_str("{\"not\": \"a record\"}\n");
    std::fs::write(&flat, body).unwrap();
    let data2 = dir.path().join("data2");
    let out = replay_demo(&flat, "1000", &data2).await;
    let done = out
        .lines()
        .find(|l| l.starts_with("done: "))
        .expect("done line");
    assert_eq!(count(done, "processed") as usize, unique.len(), "{done}");
    assert_eq!(count(done, "dead-lettered"), 1, "{done}");
}

/// `contrail demo --source replay` over `file` (it must exit 0 at the end of the file);
/// returns its stdout.
async fn replay_demo(file: &std::path::Path, speed: &str, data: &std::path::Path) -> String {
    let args: Vec<String> = [
        "demo",
        "--source",
        "replay",
        "--replay-file",
        file.to_str().unwrap(),
        "--speed",
        speed,
        "--data-dir",
        data.to_str().unwrap(),
        "--grpc-bind",
        "127.0.0.1:0",
        "--http-bind",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        contrail(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("stopping: source finished"), "{out}");
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn replay_without_a_file_names_the_flag() {
    let (ok, _, err) = contrail(&["demo", "--source", "replay"]);
    assert!(!ok);
    assert!(err.contains("--replay-file"), "{err}");
    let (ok, _, err) = contrail(&["record", "--out", "/tmp/x.jsonl", "--bbox", "1,2,3"]);
    assert!(!ok);
    assert!(err.contains("--bbox"), "{err}");
}

/// (icao24, last_contact) of every row of the Parquet files under `dir`.
fn archived_keys(dir: &std::path::Path) -> Vec<(String, i64)> {
    use arrow::array::AsArray;
    let mut keys = Vec::new();
    for f in walk(dir) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in reader {
            let b = b.unwrap();
            let icao = b
                .column_by_name("icao24")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let last = b
                .column_by_name("last_contact")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone();
            for i in 0..b.num_rows() {
                keys.push((icao.value(i).to_string(), last.value(i)));
            }
        }
    }
    keys
}

/// The definition of done: the demo pointed at an OpenSky-like server archives
/// exactly the states that server served (after validation and dedupe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_opensky_archives_exactly_what_the_server_served() {
    let s = OpenSkyServer::start(Config::default(), simulated_snapshots(120, 40, 9)).await;
    s.inject(Fault::Status(502)); // a failed cycle on the way changes nothing
    let dir = tempfile::tempdir().unwrap();
    let (id, secret) = s.credentials();
    let creds = dir.path().join("credentials.json");
    std::fs::write(
        &creds,
        serde_json::json!({"clientId": id, "clientSecret": secret}).to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "demo",
        "--source",
        "opensky",
        "--opensky-api-url",
        &s.api_url(),
        "--opensky-auth-url",
        &s.auth_url(),
        "--opensky-credentials",
        creds.to_str().unwrap(),
        "--poll-interval",
        "5s",
        "--polls",
        "3",
        "--backoff-min",
        "50ms",
        "--data-dir",
        data.to_str().unwrap(),
        "--grpc-bind",
        "127.0.0.1:0",
        "--http-bind",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        contrail(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(!err.contains(&secret) && !out.contains(&secret));
    let seen = s.seen();
    assert_eq!(
        seen.calls.iter().map(|c| c.2).collect::<Vec<_>>(),
        [502, 200, 200, 200]
    );
    let mut archived = archived_keys(&data.join("processed"));
    let n = archived.len();
    archived.sort();
    archived.dedup();
    assert_eq!(archived.len(), n, "a state archived twice");
    let mut served: Vec<_> = seen.served.into_iter().collect();
    served.sort();
    assert_eq!(archived, served);
}

/// Imitation server -> `contrail ingest` -> real Kafka: the raw topic holds exactly the
/// states served, once each, keyed by icao24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: run scripts/test"]
async fn ingest_from_opensky_into_kafka() {
    let s = OpenSkyServer::start(Config::default(), simulated_snapshots(150, 40, 10)).await;
    let topic = format!(
        "opensky-raw-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let dlq = format!("{topic}-dlq");
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let create: Vec<String> = [
        "topics",
        "create",
        "--kafka-bootstrap",
        &bootstrap,
        "--topic-raw",
        &topic,
        "--topic-dead-letter",
        &dlq,
        "--partitions",
        "3",
    ]
    .map(String::from)
    .to_vec();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        contrail(&create.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok, "{out}\n{err}");
    let args: Vec<String> = [
        "ingest",
        "--kafka-bootstrap",
        &bootstrap,
        "--topic-raw",
        &topic,
        "--topic-dead-letter",
        &dlq,
        "--source",
        "opensky",
        "--opensky-api-url",
        &s.api_url(),
        "--poll-interval",
        "10s",
        "--polls",
        "2",
        "--http-bind",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let mut child = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .args(&args)
        .env("CONTRAIL_LOG", "info,rdkafka=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let http = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        lines
            .find_map(|l| {
                l.unwrap()
                    .strip_prefix("http: ")
                    .map(|r| r.split(' ').next().unwrap().to_string())
            })
            .expect("ingest prints its HTTP address")
    })
    .await
    .unwrap();
    // The health endpoint while polling: after the first poll (the second is 10 s later).
    let mut health = serde_json::Value::Null;
    for _ in 0..50 {
        health = reqwest::get(format!("http://{http}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["source_counters"]["polls"] == 1
            && health["records"]["published"].as_u64() > Some(0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["source"], "opensky");
    assert_eq!(health["source_counters"]["polls"], 1, "{health}");
    assert_eq!(health["source_counters"]["authenticated"], false);
    assert_eq!(
        health["source_counters"]["credits_remaining"], 396,
        "{health}"
    );
    assert_eq!(health["records"]["published"], 150, "{health}");
    // The same counters for Prometheus.
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "contrail_opensky_polls_total 1",
        "contrail_opensky_credits_remaining 396",
        "contrail_ingest_published_total 150",
        "# TYPE contrail_ingest_read_total counter",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
    // Ready: the broker answered for the raw and dead-letter topics.
    let mut ready = 0;
    for _ in 0..100 {
        ready = reqwest::get(format!("http://{http}/ready"))
            .await
            .unwrap()
            .status()
            .as_u16();
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("anonymous"),
        "the anonymous mode is logged: {err}"
    );
    let t = topic.clone();
    let messages = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &t))
        .await
        .unwrap();
    let mut got: Vec<(String, i64)> = messages
        .iter()
        .map(|(key, payload)| {
            let r: RawRecord = serde_json::from_slice(payload).unwrap();
            assert_eq!(key.as_deref(), Some(r.icao24.as_bytes()));
            assert!(r.ingest_timestamp.is_some());
            (r.icao24, r.last_contact)
        })
        .collect();
    let n = got.len();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n, "a state published twice");
    let mut served: Vec<_> = s.seen().served.into_iter().collect();
    served.sort();
    assert_eq!(got, served);
}

/// Every committed record of `topic` (all partitions, from the start to the end).
fn read_topic(bootstrap: &str, topic: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len();
    let mut eof = HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            _ => {}
        }
    }
    assert_eq!(eof.len(), partitions, "{topic} not read to the end");
    out
}
