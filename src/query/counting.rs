//! Counts gRPC requests by method and status code for `/metrics`, as a tower layer in front
//! of every service the server hosts (Contrail, health, reflection).
//!
//! The code is the response's `grpc-status` header: tonic answers a handler's error (and an
//! unknown method, and the token check) "trailers-only", with the status in the headers. A
//! response without it started normally and is counted `OK`; a stream that fails later
//! (a watcher that fell behind) keeps that count.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http;

use crate::metrics::Counts;

/// Requests by (method, code).
#[derive(Debug, Default)]
pub struct GrpcStats {
    pub requests: Counts,
}

/// Canonical names of the gRPC status codes, as the gRPC documentation spells them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Services whose methods are named in the metric; anything else is `other`, so a client
/// probing random paths cannot grow the label set.
const SERVICES: [&str; 3] = [
    "/contrail.v1.Contrail/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
];

fn method_label(path: &str) -> String {
    if SERVICES.iter().any(|s| path.starts_with(s))
        && path.len() < 80
        && path[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        path[1..].to_string()
    } else {
        "other".to_string()
    }
}

fn code_label<B>(response: &http::Response<B>) -> &'static str {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    CODES.get(code).copied().unwrap_or("UNKNOWN")
}

/// The tower service that counts; made by [`layer`].
#[derive(Debug, Clone)]
pub struct Counting<S> {
    inner: S,
    stats: Arc<GrpcStats>,
}

pub fn layer<S>(stats: Arc<GrpcStats>) -> impl tower::Layer<S, Service = Counting<S>> + Clone {
    tower::layer::layer_fn(move |inner| Counting {
        inner,
        stats: Arc::clone(&stats),
    })
}

impl<S, B, RB> tower::Service<http::Request<B>> for Counting<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let stats = Arc::clone(&self.stats);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(r) => code_label(r),
                // The transport failed before a status existed.
                Err(_) => "UNAVAILABLE",
            };
            stats.requests.add(&[&method, code], 1);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_of_known_services_are_named_and_others_are_not() {
        assert_eq!(
            method_label("/contrail.v1.Contrail/ListWindows"),
            "contrail.v1.Contrail/ListWindows"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/evil.Service/X"), "other");
        assert_eq!(method_label("/contrail.v1.Contrail/a\"b"), "other");
        assert_eq!(
            method_label(&format!("/contrail.v1.Contrail/{}", "x".repeat(100))),
            "other"
        );
    }

    #[test]
    fn status_header_names_the_code() {
        let with = |v: &str| {
            http::Response::builder()
                .header("grpc-status", v)
                .body(())
                .unwrap()
        };
        assert_eq!(code_label(&with("3")), "INVALID_ARGUMENT");
        assert_eq!(code_label(&with("16")), "UNAUTHENTICATED");
        assert_eq!(code_label(&with("99")), "UNKNOWN");
        assert_eq!(code_label(&http::Response::new(())), "OK");
    }
}
