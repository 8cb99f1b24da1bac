//! The gRPC query service in process: a live store fed with output-topic payloads made
//! here, served on a loopback port, called through the generated tonic client. Every RPC,
//! its error paths, the bearer token, health checking and reflection.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::Int64Type;
use contrail::query::proto::contrail_client::ContrailClient;
use contrail::query::proto::*;
use contrail::query::store::{Feed, LiveStore, StoreLimits, timestamp};
use contrail::query::{GrpcServer, QueryLimits, QueryService};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

/// 2026-11-25T10:00:00Z.
const T0: i64 = 1_795_600_800_000_000;
const MIN: i64 = 60_000_000;

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn state(icao: &str, at: i64, lat: f64, score: f64) -> Vec<u8> {
    serde_json::json!({
        "timestamp": rfc3339(at), "icao24": icao, "callsign": format!("T{icao}  "),
        "origin_country": "Germany", "latitude": lat, "longitude": 8.5,
        "velocity": 200.0, "velocity_knots": 388.8, "altitude_ft": 35000.0,
        "vertical_rate_fpm": 0.0, "heading": 90.0, "on_ground": false,
        "squawk": if score >= 0.85 { serde_json::json!("7700") } else { serde_json::Value::Null },
        "flight_phase": "cruise", "anomaly_score": score, "is_anomaly": score >= 0.65,
        "speed_mismatch_knots": 3.0, "climb_mismatch_fpm": 10.0, "position_jump_km": 1.0,
        "seconds_since_previous": 5.0, "processing_timestamp": rfc3339(at + 1_000_000),
    })
    .to_string()
    .into_bytes()
}

fn window(start: i64, events: i64) -> Vec<u8> {
    serde_json::json!({
        "window_start": rfc3339(start), "window_end": rfc3339(start + 10 * MIN),
        "event_count": events, "anomaly_count": events / 10, "avg_velocity": 200.0,
        "min_velocity": 100.0, "max_velocity": 300.0, "avg_altitude": 9000.0,
        "min_altitude": null, "max_altitude": null, "unique_aircraft": events / 2,
        "avg_anomaly_score": 0.4,
    })
    .to_string()
    .into_bytes()
}

fn aircraft_window(start: i64, icao: &str, events: i64) -> Vec<u8> {
    serde_json::json!({
        "window_start": rfc3339(start), "window_end": rfc3339(start + 10 * MIN),
        "icao24": icao, "event_count": events, "anomaly_count": 0, "avg_velocity": 200.0,
        "min_velocity": 100.0, "max_velocity": 300.0, "avg_altitude": 9000.0,
        "min_altitude": 8000.0, "max_altitude": 10000.0, "avg_anomaly_score": 0.3,
    })
    .to_string()
    .into_bytes()
}

/// 24 windows (4 hours), 3 aircraft with 10 states each (aircraft "cccccc" anomalous
/// in its last 3), per-aircraft windows for each.
fn filled_store() -> Arc<LiveStore> {
    let store = Arc::new(LiveStore::new(StoreLimits::default()));
    for w in 0..24 {
        store
            .add(Feed::Windows, &window(T0 + w * 10 * MIN, 100 + w))
            .unwrap();
        for icao in ["aaaaaa", "bbbbbb", "cccccc"] {
            store
                .add(
                    Feed::AircraftWindows,
                    &aircraft_window(T0 + w * 10 * MIN, icao, w + 1),
                )
                .unwrap();
        }
    }
    for i in 0..10 {
        for (k, icao) in ["aaaaaa", "bbbbbb", "cccccc"].iter().enumerate() {
            let score = if *icao == "cccccc" && i >= 7 {
                0.7 + 0.1 * (i - 7) as f64
            } else {
                0.3
            };
            store
                .add(
                    Feed::Processed,
                    &state(
                        icao,
                        T0 + i * 5_000_000 + k as i64,
                        50.0 + i as f64 * 0.01,
                        score,
                    ),
                )
                .unwrap();
        }
    }
    store.set_ready();
    store
}

struct Running {
    stop: CancellationToken,
    addr: std::net::SocketAddr,
    store: Arc<LiveStore>,
    stats: Arc<contrail::query::counting::GrpcStats>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn limits() -> QueryLimits {
    QueryLimits {
        max_rows: 1_000,
        timeout: Duration::from_secs(10),
        memory_bytes: 64 << 20,
    }
}

async fn start(store: Arc<LiveStore>, token: Option<&str>, limits: QueryLimits) -> Running {
    let stop = CancellationToken::new();
    let service = QueryService::new(Arc::clone(&store), None, limits).unwrap();
    let server = GrpcServer::start(
        "127.0.0.1:0".parse().unwrap(),
        service,
        token.map(str::to_string),
        stop.clone(),
    )
    .await
    .unwrap();
    Running {
        stop,
        addr: server.local_addr,
        store,
        stats: Arc::clone(&server.stats),
    }
}

async fn channel(r: &Running) -> Channel {
    Channel::from_shared(format!("http://{}", r.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn client(r: &Running) -> ContrailClient<Channel> {
    ContrailClient::new(channel(r).await)
}

fn range(start: Option<i64>, end: Option<i64>) -> Option<TimeRange> {
    Some(TimeRange {
        start: start.map(timestamp),
        end: end.map(timestamp),
    })
}

fn starts(ws: &[Window]) -> Vec<i64> {
    ws.iter()
        .map(|w| contrail::query::store::micros(w.window_start.as_ref().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn list_windows_by_range_with_paging() {
    let r = start(filled_store(), None, limits()).await;
    let mut c = client(&r).await;
    let all = c
        .list_windows(ListWindowsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.windows.len(), 24);
    assert!(all.next_page_token.is_empty());
    assert_eq!(all.windows[3].event_count, 103);
    assert_eq!(all.windows[3].unique_aircraft, 51);
    assert_eq!(all.windows[3].min_altitude, None);
    assert_eq!(all.windows[3].max_velocity, Some(300.0));

    // [T0 + 1h, T0 + 2h): six windows, read five then one.
    let want: Vec<i64> = (6..12).map(|w| T0 + w * 10 * MIN).collect();
    let first = c
        .list_windows(ListWindowsRequest {
            range: range(Some(T0 + 60 * MIN), Some(T0 + 120 * MIN)),
            limit: 5,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(starts(&first.windows), want[..5]);
    assert_eq!(first.next_page_token, want[5].to_string());
    let second = c
        .list_windows(ListWindowsRequest {
            range: range(Some(T0 + 60 * MIN), Some(T0 + 120 * MIN)),
            limit: 5,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(starts(&second.windows), want[5..]);
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn bad_arguments_name_the_field() {
    let r = start(filled_store(), None, limits()).await;
    let mut c = client(&r).await;
    let cases: Vec<(tonic::Status, &str)> = vec![
        (
            c.list_windows(ListWindowsRequest {
                limit: 10_001,
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "limit",
        ),
        (
            c.list_windows(ListWindowsRequest {
                range: range(Some(T0), Some(T0)),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "range",
        ),
        (
            c.list_windows(ListWindowsRequest {
                page_token: "zz".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "page_token",
        ),
        (
            c.list_aircraft_windows(ListAircraftWindowsRequest {
                icao24: "xyz".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "icao24",
        ),
        (
            c.list_aircraft_windows(ListAircraftWindowsRequest::default())
                .await
                .unwrap_err(),
            "range.start",
        ),
        (
            c.list_anomalies(ListAnomaliesRequest {
                min_score: 1.5,
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "min_score",
        ),
        (
            c.get_aircraft(GetAircraftRequest::default())
                .await
                .unwrap_err(),
            "icao24",
        ),
        (
            c.list_windows(ListWindowsRequest {
                range: Some(TimeRange {
                    start: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -5,
                    }),
                    end: None,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "range.start",
        ),
    ];
    for (status, field) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{field}: {status:?}"
        );
    }
}

#[tokio::test]
async fn aircraft_windows_by_aircraft_and_time_with_paging() {
    let r = start(filled_store(), None, limits()).await;
    let mut c = client(&r).await;
    let one = c
        .list_aircraft_windows(ListAircraftWindowsRequest {
            icao24: "BBBBBB".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.windows.len(), 24);
    assert!(one.windows.iter().all(|w| w.icao24 == "bbbbbb"));
    assert_eq!(one.windows[23].event_count, 24);
    assert_eq!(one.windows[0].max_altitude, Some(10_000.0));

    // Every aircraft in [T0, T0 + 20m): 2 windows x 3 aircraft, pages of 4 then 2.
    let req = |token: String| ListAircraftWindowsRequest {
        icao24: String::new(),
        range: range(Some(T0), Some(T0 + 20 * MIN)),
        limit: 4,
        page_token: token,
    };
    let p1 = c
        .list_aircraft_windows(req(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.windows.len(), 4);
    assert!(!p1.next_page_token.is_empty());
    let p2 = c
        .list_aircraft_windows(req(p1.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.windows.len(), 2);
    assert!(p2.next_page_token.is_empty());
    let mut keys: Vec<(i64, String)> = p1
        .windows
        .iter()
        .chain(&p2.windows)
        .map(|w| (w.window_start.unwrap().seconds, w.icao24.clone()))
        .collect();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "no window twice across pages");

    // A token from a wider range, at or past this range's end (or made up): an empty
    // page, not a panic that resets the stream.
    let narrow = |token: &str, end: i64| ListAircraftWindowsRequest {
        icao24: String::new(),
        range: range(Some(T0), Some(end)),
        limit: 4,
        page_token: token.into(),
    };
    for (token, end) in [
        (format!("{}/x", T0 + 10 * MIN), T0 + 10 * MIN),
        (format!("{}/", T0 + 10 * MIN), T0 + 10 * MIN),
        ("9223372036854775807/a".to_string(), T0 + 20 * MIN),
    ] {
        let page = c
            .list_aircraft_windows(narrow(&token, end))
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.windows.is_empty() && page.next_page_token.is_empty(),
            "{token}"
        );
    }
}

#[tokio::test]
async fn anomalies_aircraft_and_not_found() {
    let r = start(filled_store(), None, limits()).await;
    let mut c = client(&r).await;
    let all = c
        .list_anomalies(ListAnomaliesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .anomalies;
    assert_eq!(all.len(), 3, "cccccc's last three reports");
    let scores: Vec<f64> = all
        .iter()
        .map(|a| a.state.as_ref().unwrap().anomaly_score.unwrap())
        .collect();
    assert!(
        scores[0] > scores[1] && scores[1] > scores[2],
        "newest first: {scores:?}"
    );
    let strong = c
        .list_anomalies(ListAnomaliesRequest {
            min_score: 0.85,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .anomalies;
    assert_eq!(strong.len(), 1);
    assert_eq!(
        strong[0].state.as_ref().unwrap().squawk.as_deref(),
        Some("7700")
    );
    let none = c
        .list_anomalies(ListAnomaliesRequest {
            icao24: "aaaaaa".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .anomalies;
    assert!(none.is_empty());
    let early = c
        .list_anomalies(ListAnomaliesRequest {
            range: range(None, Some(T0 + 40_000_000)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .anomalies;
    assert_eq!(early.len(), 1, "only the report at T0+35s is before T0+40s");

    let a = c
        .get_aircraft(GetAircraftRequest {
            icao24: "aaaaaa".into(),
            track_limit: 4,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.track.len(), 4);
    let latest = a.latest.unwrap();
    assert_eq!(latest, a.track[3]);
    assert_eq!(
        latest.callsign.as_deref(),
        Some("Taaaaaa"),
        "callsign trimmed"
    );
    assert!((latest.latitude.unwrap() - 50.09).abs() < 1e-9);
    let missing = c
        .get_aircraft(GetAircraftRequest {
            icao24: "abcdef".into(),
            track_limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn watch_streams_deliver_new_items_with_filters() {
    let r = start(filled_store(), None, limits()).await;
    let mut c = client(&r).await;
    let mut anomalies = c
        .watch_anomalies(WatchAnomaliesRequest {
            min_score: 0.8,
            icao24: "dddddd".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut windows = c
        .watch_windows(WatchWindowsRequest {})
        .await
        .unwrap()
        .into_inner();
    // Subscriptions are taken when the call returns; give the server task a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = T0 + 24 * 10 * MIN;
    r.store
        .add(Feed::Processed, &state("dddddd", later, 51.0, 0.7))
        .unwrap(); // below min
    r.store
        .add(Feed::Processed, &state("eeeeee", later, 51.0, 0.95))
        .unwrap(); // other aircraft
    r.store
        .add(
            Feed::Processed,
            &state("dddddd", later + 5_000_000, 51.0, 0.95),
        )
        .unwrap();
    r.store.add(Feed::Windows, &window(later, 77)).unwrap();
    let a = tokio::time::timeout(Duration::from_secs(5), anomalies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let s = a.state.unwrap();
    assert_eq!((s.icao24.as_str(), s.anomaly_score), ("dddddd", Some(0.95)));
    let w = tokio::time::timeout(Duration::from_secs(5), windows.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(w.event_count, 77);
}

/// Runs `sql` and decodes the concatenated IPC bytes.
async fn query(
    c: &mut ContrailClient<Channel>,
    sql: &str,
    max_rows: u64,
) -> Result<(Vec<arrow::array::RecordBatch>, bool), tonic::Status> {
    let mut stream = c
        .query(QueryRequest {
            sql: sql.into(),
            max_rows,
            timeout_ms: 0,
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Some(m) = stream.next().await {
        let m = m?;
        bytes.extend_from_slice(&m.arrow_ipc);
        truncated |= m.truncated;
    }
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    Ok((reader.map(Result::unwrap).collect(), truncated))
}

#[tokio::test]
async fn query_returns_arrow_ipc_and_refuses_writes_and_limits() {
    let r = start(filled_store(), None, limits()).await;
    let mut c = client(&r).await;
    let (batches, truncated) = query(
        &mut c,
        "SELECT count(*) AS n, sum(event_count) AS events FROM windows",
        0,
    )
    .await
    .unwrap();
    assert!(!truncated);
    let b = &batches[0];
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 24);
    assert_eq!(
        b.column(1).as_primitive::<Int64Type>().value(0),
        (100..124).sum::<i64>()
    );
    let (batches, _) = query(
        &mut c,
        "SELECT icao24, count(*) AS n FROM processed WHERE is_anomaly GROUP BY icao24",
        0,
    )
    .await
    .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "cccccc");
    assert_eq!(
        batches[0]
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0),
        3
    );

    // The catalog lists every table, though the statement names none of them.
    for sql in [
        "SHOW TABLES",
        "SELECT table_name FROM information_schema.tables",
    ] {
        let (batches, _) = query(&mut c, sql, 0).await.unwrap();
        let mut names: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let column = b.column(b.schema().index_of("table_name").unwrap());
                let names =
                    arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
                (0..b.num_rows())
                    .map(|i| names.as_string::<i32>().value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|n| ["processed", "windows", "aircraft_windows"].contains(&n.as_str()))
            .collect();
        names.sort();
        assert_eq!(names, ["aircraft_windows", "processed", "windows"], "{sql}");
    }

    // max_rows truncates and says so.
    let (batches, truncated) = query(&mut c, "SELECT * FROM aircraft_windows", 10)
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
    assert!(truncated);

    for (sql, code) in [
        ("DROP TABLE windows", Code::InvalidArgument),
        ("CREATE TABLE x AS SELECT 1", Code::InvalidArgument),
        (
            "INSERT INTO windows SELECT * FROM windows",
            Code::InvalidArgument,
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            Code::InvalidArgument,
        ),
        ("SELECT nope FROM windows", Code::InvalidArgument),
        ("SELEC 1", Code::InvalidArgument),
        ("", Code::InvalidArgument),
        // Values the query itself cannot compute: the client's mistake, not INTERNAL.
        (
            "SELECT event_count / (event_count - event_count) FROM windows",
            Code::InvalidArgument,
        ),
        (
            "SELECT CAST(icao24 AS INT) FROM aircraft_windows",
            Code::InvalidArgument,
        ),
    ] {
        let e = query(&mut c, sql, 0).await.unwrap_err();
        assert_eq!(e.code(), code, "{sql}: {e:?}");
        assert!(e.message().starts_with("sql:"), "{sql}: {e:?}");
    }
    let e = query(&mut c, "SELECT 1", 1_000_000).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().starts_with("max_rows:"), "{e:?}");
}

#[tokio::test]
async fn a_large_result_comes_in_messages_a_grpc_client_takes() {
    // 30,000 per-aircraft windows: one live batch of ~3 MB of Arrow data.
    let store = Arc::new(LiveStore::new(StoreLimits::default()));
    for w in 0..10 {
        for a in 0..3_000 {
            store
                .add(
                    Feed::AircraftWindows,
                    &aircraft_window(T0 + w * 10 * MIN, &format!("{a:06x}"), 1),
                )
                .unwrap();
        }
    }
    let limits = QueryLimits {
        max_rows: 100_000,
        ..limits()
    };
    let r = start(store, None, limits).await;
    let mut c = client(&r).await;
    let mut stream = c
        .query(QueryRequest {
            sql: "SELECT * FROM aircraft_windows".into(),
            max_rows: 100_000,
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    let mut bytes = Vec::new();
    while let Some(m) = stream.next().await {
        let m = m.unwrap();
        sizes.push(m.arrow_ipc.len());
        bytes.extend_from_slice(&m.arrow_ipc);
    }
    assert!(sizes.len() > 2, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 2 << 20), "{sizes:?}");
    let rows: usize = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 30_000);

    // A few rows of that batch (a slice of it) are sized as themselves: one message of
    // data, and the stream's end.
    let messages = c
        .query(QueryRequest {
            sql: "SELECT * FROM aircraft_windows LIMIT 10".into(),
            max_rows: 0,
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(messages.len(), 2, "{}", messages.len());
}

#[tokio::test]
async fn a_live_table_copy_is_charged_to_the_query_pool() {
    let store = Arc::new(LiveStore::new(StoreLimits::default()));
    for a in 0..30_000 {
        store
            .add(
                Feed::AircraftWindows,
                &aircraft_window(T0, &format!("{a:06x}"), 1),
            )
            .unwrap();
    }
    // ~3 MB of Arrow data against a 1 MiB pool: refused, and the pool is free again.
    let small = QueryLimits {
        memory_bytes: 1 << 20,
        ..limits()
    };
    let r = start(store, None, small).await;
    let mut c = client(&r).await;
    let e = query(&mut c, "SELECT count(*) FROM aircraft_windows", 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("live table aircraft_windows"), "{e:?}");
    let (batches, _) = query(&mut c, "SELECT count(*) AS n FROM windows", 0)
        .await
        .unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 0);
}

#[tokio::test]
async fn query_memory_and_time_limits() {
    let tight = QueryLimits {
        max_rows: 1_000,
        timeout: Duration::from_millis(300),
        memory_bytes: 1 << 20,
    };
    let r = start(filled_store(), None, tight).await;
    let mut c = client(&r).await;
    // A sort of 50M generated rows needs far more than 1 MiB (and than 300 ms).
    let e = query(
        &mut c,
        "SELECT v FROM generate_series(1, 50000000) AS t(v) ORDER BY v DESC",
        0,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::DeadlineExceeded),
        "{e:?}"
    );
    // A cross join that takes longer than 300 ms but little memory.
    let e = query(
        &mut c,
        "SELECT count(*) FROM generate_series(1, 200000) a, generate_series(1, 20000) b WHERE a.value + b.value = 7",
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
}

#[tokio::test]
async fn unavailable_until_ready_and_health_follows() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let store = Arc::new(LiveStore::new(StoreLimits::default()));
    let r = start(Arc::clone(&store), None, limits()).await;
    let mut c = client(&r).await;
    let mut health = HealthClient::new(channel(&r).await);
    let check = HealthCheckRequest {
        service: "contrail.v1.Contrail".into(),
    };
    let e = c
        .list_windows(ListWindowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // The watches too: before the store has read the topics, their history would stream
    // as if it were new.
    let e = c.watch_windows(WatchWindowsRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let e = c
        .watch_anomalies(WatchAnomaliesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        health
            .check(check.clone())
            .await
            .unwrap()
            .into_inner()
            .status,
        ServingStatus::NotServing as i32
    );
    store.set_ready();
    let mut serving = false;
    for _ in 0..50 {
        if health
            .check(check.clone())
            .await
            .unwrap()
            .into_inner()
            .status
            == ServingStatus::Serving as i32
        {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serving);
    assert!(c.list_windows(ListWindowsRequest::default()).await.is_ok());
}

#[tokio::test]
async fn bearer_token_guards_the_service_but_not_health() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let r = start(filled_store(), Some("s3cret-token"), limits()).await;
    let mut c = client(&r).await;
    let e = c
        .list_windows(ListWindowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let with = |token: &str| {
        let mut req = tonic::Request::new(ListWindowsRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let e = c.list_windows(with("wrong-token!")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        !e.message().contains("s3cret"),
        "the token never appears in errors"
    );
    assert_eq!(
        c.list_windows(with("s3cret-token"))
            .await
            .unwrap()
            .into_inner()
            .windows
            .len(),
        24
    );
    // The scheme's name in any case (RFC 9110).
    let mut lower = tonic::Request::new(ListWindowsRequest::default());
    lower
        .metadata_mut()
        .insert("authorization", "bearer s3cret-token".parse().unwrap());
    assert!(c.list_windows(lower).await.is_ok());
    let mut health = HealthClient::new(channel(&r).await);
    assert!(
        health
            .check(HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_ok()
    );

    // `/metrics` counts each request by method and the code the client saw.
    let count = |method: &str, code: &str| r.stats.requests.get(&[method, code]);
    assert_eq!(
        count("contrail.v1.Contrail/ListWindows", "UNAUTHENTICATED"),
        2
    );
    assert_eq!(count("contrail.v1.Contrail/ListWindows", "OK"), 2);
    assert_eq!(count("grpc.health.v1.Health/Check", "OK"), 1);
    let e = c
        .get_aircraft(with_token(GetAircraftRequest {
            icao24: "nothex".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        count("contrail.v1.Contrail/GetAircraft", "INVALID_ARGUMENT"),
        1
    );
    let mut e = contrail::metrics::Exposition::default();
    contrail::metrics::grpc(&mut e, &r.stats);
    assert!(
        e.text().lines().any(|l| l
            == "contrail_grpc_requests_total{method=\"contrail.v1.Contrail/ListWindows\",code=\"UNAUTHENTICATED\"} 2"),
        "{}",
        e.text()
    );
}

fn with_token<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret-token".parse().unwrap());
    req
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let r = start(filled_store(), None, limits()).await;
    let mut reflection = ServerReflectionClient::new(channel(&r).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "contrail.v1.Contrail",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );
}
