//! The routers of `ingest`'s and `process`'s HTTP endpoints (served by
//! [`crate::http::HttpServer`]). Ingest's: `GET /health` answers 200 with its counters as JSON
//! (records read, published, duplicates, dead-lettered by reason, and the source's own:
//! OpenSky polls, failures by kind, credits left); `GET /metrics` has the same counters in
//! Prometheus text format.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::routing::get;
use serde_json::json;

use crate::ingest::{IngestStats, SourceHealth};

/// `contrail ingest`'s endpoint: `/health` (counters as JSON) and `/metrics`.
pub fn ingest_router(
    source: &'static str,
    stats: Arc<IngestStats>,
    source_health: Option<SourceHealth>,
) -> Router {
    let metrics = {
        let (stats, source_health) = (Arc::clone(&stats), source_health.clone());
        move || {
            let (stats, source_health) = (Arc::clone(&stats), source_health.clone());
            async move {
                let mut e = crate::metrics::Exposition::default();
                crate::metrics::ingest(&mut e, &stats);
                if let Some(h) = source_health {
                    crate::metrics::source(&mut e, &h());
                }
                e.into_response()
            }
        }
    };
    Router::new().route("/metrics", get(metrics)).route(
        "/health",
        get(move || {
            let (stats, source_health) = (Arc::clone(&stats), source_health.clone());
            async move {
                let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
                let rejected = stats.rejected.lock().expect("stats lock").clone();
                axum::Json(json!({
                    "status": "ok",
                    "source": source,
                    "records": {
                        "read": l(&stats.read),
                        "published": l(&stats.published),
                        "duplicates": l(&stats.duplicates),
                        "dead_lettered": l(&stats.dead_lettered),
                        "rejected_by_reason": rejected,
                    },
                    "source_counters": source_health.map(|h| h()),
                }))
            }
        }),
    )
}

/// `contrail process`'s endpoint: `/metrics` (the stage's counters), `/health` (alive) and
/// `/ready` (200 once topics, model and SQL were checked and the consumer created).
pub fn process_router(
    stats: Arc<crate::pipeline::ProcessStats>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let stats = Arc::clone(&stats);
                async move {
                    let mut e = crate::metrics::Exposition::default();
                    crate::metrics::process(&mut e, &stats);
                    e.into_response()
                }
            }),
        )
        .route(
            "/health",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    let status = if ready {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, axum::Json(json!({ "ready": ready })))
                }
            }),
        )
}
