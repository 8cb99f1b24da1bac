//! The web dashboard: its JSON API and server-sent events against a real `contrail demo`,
//! and the page itself in Debian's Chromium driven by playwright-core
//! (`tests/browser/dashboard.mjs`; `#[ignore]`d for a bare `cargo test`, run by
//! scripts/test, which installs Chromium and the npm packages).

mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `contrail demo` and its dashboard's base URL.
struct Demo {
    child: Child,
    url: String,
    lines: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "demo",
            "--keep-serving",
            "--grpc-bind",
            "127.0.0.1:0",
            "--http-bind",
            "127.0.0.1:0",
            "--status-interval",
            "60",
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.path().to_str().unwrap().into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = common::spawn(&args, Stdio::inherit());
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("dashboard: ").map(str::to_string))
            .expect("demo printed no dashboard address");
        // Keep draining stdout so the demo never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                println!("demo: {line}");
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            url,
            lines: rx,
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::get(&url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the source has ended and the store went stale (values hold still).
    fn wait_stale(&self, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the source did not finish");
            if line.starts_with("source finished: still serving") {
                break;
            }
        }
        loop {
            let s = self.json("/api/summary");
            if s["status"] == "stale" {
                return s;
            }
            assert!(started.elapsed() < limit, "never went stale: {s}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            common::terminate(&mut self.child, Duration::from_secs(20));
        }
    }
}

fn error_of(demo: &Demo, path: &str) -> (u16, String) {
    let (status, body) = demo.get(path);
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
    (status, v["error"].as_str().unwrap_or_default().to_string())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn json_api_and_events() {
    let demo = Demo::start(&[
        "--aircraft",
        "60",
        "--speed",
        "20",
        "--max-records",
        "4000",
        "--anomaly-rate",
        "0.01",
        "--stale-after",
        "2s",
        "--window-length",
        "1m",
        "--watermark-delay",
        "10s",
        "--no-archive",
    ]);
    let summary = demo.wait_stale(Duration::from_secs(120));

    // KPIs against the aircraft list.
    let all = demo.json("/api/aircraft?limit=1000");
    let items = all["aircraft"].as_array().unwrap();
    assert_eq!(summary["aircraft"], all["tracked"]);
    assert_eq!(all["tracked"], all["matched"]);
    assert_eq!(items.len() as u64, all["tracked"].as_u64().unwrap());
    assert!(items.len() > 50, "{} aircraft", items.len());
    let airborne: Vec<&Value> = items.iter().filter(|a| a["on_ground"] == false).collect();
    let mean = |key: &str| {
        let v: Vec<f64> = airborne.iter().filter_map(|a| a[key].as_f64()).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    // Items carry rounded values; the summary averages the same rounded values.
    assert!((f(&summary["avg_altitude_ft"]) - mean("altitude_ft")).abs() < 0.051);
    assert!((f(&summary["avg_speed_knots"]) - mean("speed_knots")).abs() < 0.051);
    assert!(f(&summary["events_per_s"]) > 0.0);
    let rate = f(&summary["anomaly_rate"]);
    assert!(rate > 0.0 && rate < 0.2, "anomaly rate {rate}");
    assert!(summary["records"].as_u64().unwrap() >= 3_900);
    assert_eq!(
        summary["emergencies"].as_u64().unwrap() as usize,
        items.iter().filter(|a| !a["emergency"].is_null()).count()
    );
    // Newest report first.
    let times: Vec<&str> = items.iter().map(|a| a["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(summary["newest_record"].as_str().unwrap(), times[0]);
    assert!(items.iter().all(|a| {
        let trail = a["trail"].as_array().unwrap();
        !trail.is_empty() && trail.len() <= 12
    }));

    // Limit and filters.
    let five = demo.json("/api/aircraft?limit=5");
    assert_eq!(five["aircraft"].as_array().unwrap().len(), 5);
    assert_eq!(five["aircraft"][0], items[0]);
    let high = demo.json("/api/aircraft?min_alt=20000&max_alt=40000");
    let high_items = high["aircraft"].as_array().unwrap();
    assert!(!high_items.is_empty() && high_items.len() < items.len());
    assert!(
        high_items
            .iter()
            .all(|a| (20_000.0..=40_000.0).contains(&f(&a["altitude_ft"])))
    );
    let expected_high = items
        .iter()
        .filter(|a| {
            a["altitude_ft"]
                .as_f64()
                .is_some_and(|v| (20_000.0..=40_000.0).contains(&v))
        })
        .count();
    assert_eq!(high_items.len(), expected_high);
    let callsign = items
        .iter()
        .find_map(|a| a["callsign"].as_str())
        .unwrap()
        .to_string();
    let prefix = &callsign[..3];
    let found = demo.json(&format!("/api/aircraft?q={}", prefix.to_lowercase()));
    let found_items = found["aircraft"].as_array().unwrap();
    assert!(
        found_items
            .iter()
            .any(|a| a["callsign"] == callsign.as_str())
    );
    assert!(
        found_items
            .iter()
            .all(|a| a["callsign"].as_str().is_some_and(|c| c.contains(prefix)))
    );
    let flagged = demo.json("/api/aircraft?anomalies=true");
    let flagged_items = flagged["aircraft"].as_array().unwrap();
    assert!(!flagged_items.is_empty());
    assert!(flagged_items.iter().all(|a| a["recent_anomaly"] == true));

    // One aircraft: its held track, oldest first, ending with its latest report.
    let icao24 = items[0]["icao24"].as_str().unwrap();
    let one = demo.json(&format!("/api/aircraft/{icao24}"));
    let track = one["track"].as_array().unwrap();
    assert!(track.len() > 1);
    let track_times: Vec<&str> = track.iter().map(|p| p["time"].as_str().unwrap()).collect();
    assert!(track_times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*track_times.last().unwrap(), times[0]);
    assert_eq!(one["latest"], items[0]);

    // Anomalies newest first, each with its signal; windows closed then open.
    let anomalies = demo.json("/api/anomalies?limit=10");
    let anomalies = anomalies.as_array().unwrap();
    assert!(!anomalies.is_empty());
    assert!(anomalies.iter().all(|a| a["signal"].is_string()));
    let windows = demo.json("/api/windows");
    let windows = windows.as_array().unwrap();
    let closed: Vec<&Value> = windows.iter().filter(|w| w["open"] == false).collect();
    assert!(!closed.is_empty(), "no closed window: {windows:?}");
    assert!(closed.iter().all(|w| w["aircraft"].as_u64().unwrap() > 0));
    let first_open = windows.iter().position(|w| w["open"] == true);
    if let Some(i) = first_open {
        assert!(windows[i..].iter().all(|w| w["open"] == true));
    }

    // Bad input: a 400 naming the parameter, unknown aircraft 404.
    for (path, status, starts) in [
        ("/api/aircraft?limit=0", 400, "limit:"),
        ("/api/aircraft?limit=abc", 400, "limit:"),
        ("/api/aircraft?min_alt=5000&max_alt=1000", 400, "min_alt:"),
        ("/api/aircraft?anomalies=maybe", 400, "anomalies:"),
        ("/api/aircraft?colour=red", 400, "colour: unknown parameter"),
        ("/api/stream?interval=11", 400, "interval:"),
        ("/api/stream?interval=0", 400, "interval:"),
        ("/api/summary?x=1", 400, "x: unknown parameter"),
        ("/api/aircraft/zzzzzz", 400, "icao24:"),
        ("/api/aircraft/abcdef", 404, "icao24: abcdef"),
        ("/app/%2e%2e/Cargo.toml", 404, ""),
        ("/nothing-here", 404, "no such page"),
    ] {
        let (got, message) = error_of(&demo, path);
        assert_eq!(got, status, "{path}: {message}");
        assert!(message.starts_with(starts), "{path}: {message}");
    }

    // Prometheus metrics, health and readiness on the same port.
    let (status, metrics) = demo.get("/metrics");
    assert_eq!(status, 200);
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    // Counts are integers: exact in an f64 far beyond these.
    let value = |name: &str| -> u64 { metric(name) as u64 };
    let records = summary["records"].as_u64().unwrap();
    assert_eq!(value("contrail_store_states_total"), records);
    assert_eq!(value("contrail_process_processed_total"), records);
    assert!(value("contrail_ingest_published_total") >= records);
    assert_eq!(value("contrail_store_ready"), 1);
    // Every consumed record went through one observed micro-batch.
    assert_eq!(
        value("contrail_process_batch_records_sum"),
        value("contrail_process_consumed_total")
    );
    assert_eq!(
        value("contrail_process_batch_records_count"),
        value("contrail_process_batch_seconds_count")
    );
    assert!(value("contrail_process_batch_records_count") > 1);
    // A committed batch's time is its processing, then its commit (and the wait between).
    for part in ["stage", "commit"] {
        assert_eq!(
            value(&format!("contrail_process_{part}_seconds_count")),
            value("contrail_process_batch_seconds_count")
        );
    }
    let (stage, commit) = (
        metric("contrail_process_stage_seconds_sum"),
        metric("contrail_process_commit_seconds_sum"),
    );
    assert!(stage > 0.0 && commit > 0.0, "{stage} {commit}");
    assert!(stage + commit <= metric("contrail_process_batch_seconds_sum"));
    // One latency observation per processed record, each after its batch committed.
    assert_eq!(
        value("contrail_process_latency_seconds_count"),
        value("contrail_process_processed_total")
    );
    let le_inf = value("contrail_process_latency_seconds_bucket{le=\"+Inf\"}");
    assert_eq!(le_inf, records);
    // Late input by reason: the label set is always there.
    for reason in ["behind_watermark", "late_partial"] {
        let _ = value(&format!(
            "contrail_process_late_total{{reason=\"{reason}\"}}"
        ));
    }
    // The embedded demo's gRPC port counts requests too (none were made here).
    assert!(metrics.contains("# TYPE contrail_grpc_requests_total counter"));
    assert_eq!(demo.get("/health").0, 200);
    assert_eq!(demo.get("/ready").0, 200);

    // The page and its modules.
    let (status, html) = demo.get("/");
    assert_eq!(status, 200);
    assert!(html.contains("/app/main.js"));
    assert_eq!(demo.get("/app/main.js").0, 200);

    // Server-sent events: a snapshot at once, then one per interval, with the limit applied.
    let url = format!("{}api/stream?interval=1&limit=3", demo.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (snapshots, elapsed) = rt.block_on(async {
        let mut r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let started = Instant::now();
        let mut text = String::new();
        let mut snapshots = Vec::new();
        while snapshots.len() < 3 {
            text.push_str(std::str::from_utf8(&r.chunk().await.unwrap().unwrap()).unwrap());
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                if frame.starts_with("event: snapshot\n") {
                    let data = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap();
                    snapshots.push(serde_json::from_str::<Value>(data).unwrap());
                }
            }
        }
        (snapshots, started.elapsed())
    });
    assert!(elapsed >= Duration::from_millis(1_800), "{elapsed:?}");
    for s in &snapshots {
        assert_eq!(s["aircraft"]["aircraft"].as_array().unwrap().len(), 3);
        assert_eq!(s["aircraft"]["tracked"], all["tracked"]);
        assert_eq!(s["summary"]["newest_record"], summary["newest_record"]);
    }
}

impl Demo {
    /// Polls `/api/summary` until `done` holds of it.
    fn wait_summary(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let s = self.json("/api/summary");
            if done(&s) {
                return s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{what}: not seen in 120 s: {s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        let line = text
            .lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

/// The shipped SQL files in a folder of their own, for a demo whose edits a test makes.
fn copy_of_sql() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_sql(dir.path());
    dir
}

#[test]
fn a_rejected_sql_edit_is_on_the_dashboard_until_it_is_fixed() {
    let sql = copy_of_sql();
    let demo = Demo::start(&[
        "--sql-dir",
        sql.path().to_str().unwrap(),
        "--aircraft",
        "100",
        "--speed",
        "20",
        "--no-archive",
    ]);
    // Edits are tried on the last batch's records: wait for one.
    let first = demo.wait_summary("records", |s| s["records"].as_u64() > Some(0));
    assert_eq!(first["notices"], serde_json::json!([]));

    let features = sql.path().join("features.sql");
    let good = std::fs::read_to_string(&features).unwrap();
    // Renamed into place, so the processor never reads a file half written.
    let replace = |text: &str| {
        let tmp = sql.path().join("features.sql.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &features).unwrap();
    };
    replace(&format!("{good}\nSELEC broken"));
    let rejected = demo.wait_summary("the rejection", |s| {
        s["notices"].as_array().is_some_and(|n| !n.is_empty())
    });
    let notices = rejected["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let text = notices[0].as_str().unwrap();
    assert!(
        text.starts_with("SQL edit rejected; the last good plan keeps running")
            && text.contains("features.sql"),
        "{text}"
    );
    assert_eq!(demo.metric("contrail_process_sql_rejections_total"), 1.0);
    // The last good plan goes on: records keep coming.
    let before = rejected["records"].as_u64().unwrap();
    demo.wait_summary("records after the rejection", |s| {
        s["records"].as_u64() > Some(before)
    });

    replace(&good);
    demo.wait_summary("the notice gone", |s| s["notices"] == serde_json::json!([]));
    assert_eq!(demo.metric("contrail_process_sql_reloads_total"), 1.0);
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("CONTRAIL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "{} not found: scripts/test installs Debian's chromium (or set CONTRAIL_CHROMIUM)",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs Chromium and web/node_modules; scripts/test installs both"]
fn dashboard_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("web/node_modules/playwright-core").exists(),
        "web/node_modules is missing: run `npm ci --prefix web` (scripts/test does)"
    );
    let empty = tempfile::NamedTempFile::new().unwrap();
    let waiting = Demo::start(&[
        "--source",
        "replay",
        "--replay-file",
        empty.path().to_str().unwrap(),
        "--no-archive",
    ]);
    let sql = copy_of_sql();
    let live = Demo::start(&[
        "--sql-dir",
        sql.path().to_str().unwrap(),
        "--aircraft",
        "200",
        "--speed",
        "5",
        "--max-records",
        "8000",
        "--anomaly-rate",
        "0.01",
        "--stale-after",
        "3s",
        "--window-length",
        "1m",
        "--watermark-delay",
        "10s",
        "--no-archive",
    ]);
    // The vendored-by-npm assets come from this server, not a CDN.
    let (status, js) = live.get("/vendor/plotly.js");
    assert_eq!(status, 200);
    assert!(js.len() > 1_000_000);
    let (status, geo) = live.get("/vendor/topojson/world_110m.json");
    assert_eq!(status, 200);
    assert!(geo.contains("\"Topology\""));

    let shots = root.join("target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .env("CONTRAIL_CHROMIUM", chromium())
        .env("MODE", "test")
        .env("LIVE_URL", &live.url)
        .env("WAITING_URL", &waiting.url)
        .env("SCREENSHOT", &screenshot)
        .env("SQL_DIR", sql.path())
        .stderr(Stdio::inherit())
        .output()
        .expect("node not found");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "the browser test failed:\n{stdout}");
    assert!(stdout.contains("figure: {\"name\":\"first_paint_with_data_ms\""));
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 50_000);
}

#[tokio::test]
async fn ready_waits_for_the_live_store() {
    use contrail::query::store::{LiveStore, StoreLimits};
    let store = std::sync::Arc::new(LiveStore::new(StoreLimits::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let server = contrail::dashboard::start(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::clone(&store),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("web"),
        contrail::dashboard::snapshot::Settings {
            stale_after: 30_000_000,
            track_timeout: 300_000_000,
        },
        std::sync::Arc::new(|_| {}),
        std::sync::Arc::new(Vec::new),
        stop.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{}/ready", server.local_addr);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 503);
    store.set_ready();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    stop.cancel();
    server.join().await.unwrap();
}
