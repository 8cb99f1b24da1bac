//! The routers of `ingest`'s and `process`'s HTTP endpoints (served by
//! [`crate::http::HttpServer`]). Ingest's: `GET /health` answers 200 with its counters as JSON
//! (records read, published, duplicates, dead-lettered by reason, and the source's own:
//! OpenSky polls, failures by kind, credits left); `GET /metrics` has the same counters in
//! Prometheus text format; `GET /ready` is 200 once the broker answered for both topics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::routing::get;
use serde_json::json;

use crate::ingest::{IngestStats, SourceHealth};

/// `contrail ingest`'s endpoint: `/health` (counters as JSON) and `/metrics`.
pub fn ingest_router(
    source: &'static str,
    stats: Arc<IngestStats>,
    source_health: Option<SourceHealth>,
    ready: Arc<AtomicBool>,
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
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", readiness(ready))
        .route(
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

/// `contrail process`'s endpoint: `/metrics` (the stage's counters), `/health` (alive, and
/// the edits it rejected: [`crate::pipeline::ProcessStats::notices`]) and `/ready` (200 once topics, model and SQL were checked and the consumer created).
pub fn process_router(stats: Arc<crate::pipeline::ProcessStats>, ready: Arc<AtomicBool>) -> Router {
    let health = Arc::clone(&stats);
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
            get(move || {
                let notices = health.notices();
                async move { axum::Json(json!({ "status": "ok", "notices": notices })) }
            }),
        )
        .route("/ready", readiness(ready))
}

/// `GET /ready`: 200 `{"ready":true}` once `ready` is set, 503 until then.
fn readiness(ready: Arc<AtomicBool>) -> axum::routing::MethodRouter {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_is_503_until_the_flag_is_set() {
        let ready = Arc::new(AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let router = ingest_router(
            "simulator",
            Arc::new(IngestStats::default()),
            None,
            Arc::clone(&ready),
        );
        let server =
            crate::http::HttpServer::start("127.0.0.1:0".parse().unwrap(), router, stop.clone())
                .await
                .unwrap();
        let url = format!("http://{}/ready", server.local_addr);
        let status =
            |url: String| async move { reqwest::get(url).await.unwrap().status().as_u16() };
        assert_eq!(status(url.clone()).await, 503);
        ready.store(true, Ordering::Release);
        assert_eq!(status(url.clone()).await, 200);
        assert_eq!(
            status(format!("http://{}/health", server.local_addr)).await,
            200
        );
        stop.cancel();
        server.join().await.unwrap();
    }
}
