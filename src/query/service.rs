//! The `contrail.v1.Contrail` service and the gRPC server around it (health, reflection,
//! optional bearer token).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use datafusion::error::DataFusionError;
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::proto::contrail_server::{Contrail, ContrailServer};
use super::proto::*;
use super::sql::QueryEngine;
use super::store::{LiveStore, micros};

/// Limits on `Query`.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_rows: u64,
    pub timeout: Duration,
    pub memory_bytes: usize,
}

const MAX_LIMIT: u32 = 10_000;

pub struct QueryService {
    store: Arc<LiveStore>,
    engine: Arc<QueryEngine>,
    limits: QueryLimits,
}

impl QueryService {
    pub fn new(
        store: Arc<LiveStore>,
        archive: Option<std::path::PathBuf>,
        limits: QueryLimits,
    ) -> datafusion::error::Result<Self> {
        Ok(Self {
            store,
            engine: Arc::new(QueryEngine::new(archive, limits.memory_bytes)?),
            limits,
        })
    }

    fn ready(&self) -> Result<(), Status> {
        if self.store.is_ready() {
            Ok(())
        } else {
            Err(Status::unavailable(
                "the live store is warming up (reading the output topics); retry shortly",
            ))
        }
    }
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn limit(field: &str, value: u32, default: u32) -> Result<usize, Status> {
    match value {
        0 => Ok(default as usize),
        v if v > MAX_LIMIT => Err(invalid(
            field,
            format!("{v} is over the maximum {MAX_LIMIT}"),
        )),
        v => Ok(v as usize),
    }
}

/// [start, end) in microseconds; unset ends are unbounded.
fn range(r: Option<&TimeRange>) -> Result<(i64, i64), Status> {
    let bound = |t: Option<&prost_types::Timestamp>, name: &str, default: i64| match t {
        None => Ok(default),
        Some(t) => micros(t).ok_or_else(|| invalid(name, "not a valid timestamp")),
    };
    let start = bound(r.and_then(|r| r.start.as_ref()), "range.start", i64::MIN)?;
    let end = bound(r.and_then(|r| r.end.as_ref()), "range.end", i64::MAX)?;
    if start >= end {
        return Err(invalid("range", "start must be before end"));
    }
    Ok((start, end))
}

/// Lower-case six-digit hex, or None for empty.
fn icao24(field: &str, s: &str) -> Result<Option<String>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    let t = s.trim().to_ascii_lowercase();
    if t.len() == 6 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(t))
    } else {
        Err(invalid(
            field,
            format!("{s:?} is not a 24-bit ICAO address (6 hex digits)"),
        ))
    }
}

fn min_score(v: f64) -> Result<f64, Status> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid("min_score", format!("{v} is not in [0, 1]")))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A broadcast subscription as a response stream: a client too slow to keep up gets
/// RESOURCE_EXHAUSTED naming how many items it missed (it may subscribe again).
fn watch<T: Clone + Send + 'static>(
    mut rx: broadcast::Receiver<T>,
    keep: impl Fn(&T) -> bool + Send + 'static,
) -> BoxStream<T> {
    Box::pin(async_stream(
        move |tx: mpsc::Sender<Result<T, Status>>| async move {
            loop {
                let item = match rx.recv().await {
                    Ok(item) => item,
                    Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "the client fell behind and missed {n} items; subscribe again"
                            ))))
                            .await;
                        return;
                    }
                };
                if keep(&item) && tx.send(Ok(item)).await.is_err() {
                    return; // the client went away
                }
            }
        },
    ))
}

/// Runs `produce` on a task and streams what it sends.
fn async_stream<T, F, Fut>(produce: F) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(produce(tx));
    ReceiverStream::new(rx)
}

/// Most bytes of Arrow data per `QueryResponse`: gRPC clients refuse messages over 4 MiB
/// by default (grpcio, grpc-go, tonic), and IPC framing adds a little.
const MESSAGE_BYTES: usize = 1 << 20;

/// `batch` cut into slices of about [`MESSAGE_BYTES`] each (one when it is small). A live
/// table is one batch of the whole store; a slice shares its buffers, so this copies
/// nothing until the IPC writer writes it. The size is the slice's own (a `LIMIT` is a
/// slice of a larger batch), and a view column's data buffers count whole, as the IPC
/// writer writes them whole with every slice.
fn message_parts(batch: &arrow::array::RecordBatch) -> Vec<arrow::array::RecordBatch> {
    let rows = batch.num_rows();
    if rows == 0 {
        return vec![batch.clone()];
    }
    let bytes: usize = batch
        .columns()
        .iter()
        .map(|c| {
            let data = c.to_data();
            data.get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum();
    let per_row = (bytes / rows).max(1);
    let step = (MESSAGE_BYTES / per_row).clamp(1, rows);
    (0..rows)
        .step_by(step)
        .map(|offset| batch.slice(offset, step.min(rows - offset)))
        .collect()
}

fn query_status(e: &DataFusionError) -> Status {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => {
            Status::resource_exhausted(format!("query memory limit: {m}"))
        }
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => invalid("sql", e.find_root()),
        // What the query's own values make fail: a division by zero, a cast.
        DataFusionError::ArrowError(a, _)
            if matches!(
                **a,
                ArrowError::DivideByZero
                    | ArrowError::CastError(_)
                    | ArrowError::ArithmeticOverflow(_)
                    | ArrowError::ParseError(_)
            ) =>
        {
            invalid("sql", e.find_root())
        }
        other => Status::internal(format!("query failed: {other}")),
    }
}

#[tonic::async_trait]
impl Contrail for QueryService {
    async fn list_windows(
        &self,
        request: Request<ListWindowsRequest>,
    ) -> Result<Response<ListWindowsResponse>, Status> {
        self.ready()?;
        let r = request.into_inner();
        let limit = limit("limit", r.limit, 1_000)?;
        let (mut start, end) = range(r.range.as_ref())?;
        if !r.page_token.is_empty() {
            let next: i64 = r
                .page_token
                .parse()
                .map_err(|_| invalid("page_token", "not a token from a previous response"))?;
            start = start.max(next);
        }
        let mut windows = self.store.windows(start, end, limit + 1);
        let next_page_token = if windows.len() > limit {
            let next = windows
                .pop()
                .and_then(|w| w.window_start)
                .as_ref()
                .and_then(micros);
            next.map(|n| n.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListWindowsResponse {
            windows,
            next_page_token,
        }))
    }

    async fn list_aircraft_windows(
        &self,
        request: Request<ListAircraftWindowsRequest>,
    ) -> Result<Response<ListAircraftWindowsResponse>, Status> {
        self.ready()?;
        let r = request.into_inner();
        let icao = icao24("icao24", &r.icao24)?;
        let limit = limit("limit", r.limit, 1_000)?;
        if icao.is_none() && r.range.as_ref().and_then(|r| r.start.as_ref()).is_none() {
            return Err(invalid("range.start", "required when no icao24 is given"));
        }
        let (start, end) = range(r.range.as_ref())?;
        let after = if r.page_token.is_empty() {
            None
        } else {
            let (t, i) = r
                .page_token
                .split_once('/')
                .and_then(|(t, i)| Some((t.parse::<i64>().ok()?, i.to_string())))
                .ok_or_else(|| invalid("page_token", "not a token from a previous response"))?;
            Some((t, i))
        };
        let mut windows =
            self.store
                .aircraft_windows(icao.as_deref(), start, end, after.as_ref(), limit + 1);
        let next_page_token = if windows.len() > limit {
            windows.pop();
            let last = windows.last().expect("limit >= 1");
            let t = last.window_start.as_ref().and_then(micros).unwrap_or(start);
            format!("{t}/{}", last.icao24)
        } else {
            String::new()
        };
        Ok(Response::new(ListAircraftWindowsResponse {
            windows,
            next_page_token,
        }))
    }

    async fn list_anomalies(
        &self,
        request: Request<ListAnomaliesRequest>,
    ) -> Result<Response<ListAnomaliesResponse>, Status> {
        self.ready()?;
        let r = request.into_inner();
        let (start, end) = range(r.range.as_ref())?;
        let min = min_score(r.min_score)?;
        let icao = icao24("icao24", &r.icao24)?;
        let limit = limit("limit", r.limit, 100)?;
        let anomalies = self.store.anomalies(
            |s| {
                let t = s.timestamp.as_ref().and_then(micros).unwrap_or(i64::MIN);
                t >= start
                    && t < end
                    && s.anomaly_score.unwrap_or(0.0) >= min
                    && icao.as_ref().is_none_or(|i| *i == s.icao24)
            },
            limit,
        );
        Ok(Response::new(ListAnomaliesResponse { anomalies }))
    }

    async fn get_aircraft(
        &self,
        request: Request<GetAircraftRequest>,
    ) -> Result<Response<Aircraft>, Status> {
        self.ready()?;
        let r = request.into_inner();
        let icao = icao24("icao24", &r.icao24)?.ok_or_else(|| invalid("icao24", "required"))?;
        let mut track = self.store.track(&icao).ok_or_else(|| {
            Status::not_found(format!("aircraft {icao} is not in the live store"))
        })?;
        if r.track_limit > 0 && track.len() > r.track_limit as usize {
            track.drain(..track.len() - r.track_limit as usize);
        }
        Ok(Response::new(Aircraft {
            latest: track.last().cloned(),
            track,
        }))
    }

    type WatchAnomaliesStream = BoxStream<Anomaly>;

    async fn watch_anomalies(
        &self,
        request: Request<WatchAnomaliesRequest>,
    ) -> Result<Response<Self::WatchAnomaliesStream>, Status> {
        // Before the store has read the topics' history, that history would arrive as if
        // it were new.
        self.ready()?;
        let r = request.into_inner();
        let min = min_score(r.min_score)?;
        let icao = icao24("icao24", &r.icao24)?;
        let states = watch(self.store.subscribe_anomalies(), move |s: &State| {
            s.anomaly_score.unwrap_or(0.0) >= min && icao.as_ref().is_none_or(|i| *i == s.icao24)
        });
        Ok(Response::new(Box::pin(
            states.map(|s| s.map(|state| Anomaly { state: Some(state) })),
        )))
    }

    type WatchWindowsStream = BoxStream<Window>;

    async fn watch_windows(
        &self,
        _request: Request<WatchWindowsRequest>,
    ) -> Result<Response<Self::WatchWindowsStream>, Status> {
        self.ready()?;
        Ok(Response::new(watch(self.store.subscribe_windows(), |_| {
            true
        })))
    }

    type QueryStream = BoxStream<QueryResponse>;

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let r = request.into_inner();
        if r.sql.trim().is_empty() {
            return Err(invalid("sql", "empty"));
        }
        let max_rows = match r.max_rows {
            0 => self.limits.max_rows.min(10_000),
            n if n > self.limits.max_rows => {
                return Err(Status::resource_exhausted(format!(
                    "max_rows: {n} is over the server's limit {}",
                    self.limits.max_rows
                )));
            }
            n => n,
        };
        let timeout = match r.timeout_ms {
            0 => self.limits.timeout,
            ms if Duration::from_millis(u64::from(ms)) > self.limits.timeout => {
                return Err(Status::resource_exhausted(format!(
                    "timeout_ms: {ms} is over the server's limit {} ms",
                    self.limits.timeout.as_millis()
                )));
            }
            ms => Duration::from_millis(u64::from(ms)),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let started = tokio::time::timeout_at(deadline, self.engine.execute(&r.sql, &self.store))
            .await
            .map_err(|_| Status::deadline_exceeded(format!("query ran over {timeout:?}")))?;
        let mut batches = started.map_err(|e| query_status(&e))?;
        let schema = batches.schema();
        let stream = async_stream(move |tx| async move {
            // The query runs in here and owns `batches`: whatever ends it, the query's
            // memory (the shared pool's) is freed before the last message or the error is
            // sent, however long the client takes to read them.
            let last_tx = tx.clone();
            let run = async move {
                let mut writer = StreamWriter::try_new(Vec::new(), &schema)
                    .map_err(|e| Status::internal(e.to_string()))?;
                let mut rows = 0u64;
                let mut truncated = false;
                while rows < max_rows {
                    let next = tokio::time::timeout_at(deadline, batches.next())
                        .await
                        .map_err(|_| {
                            Status::deadline_exceeded(format!("query ran over {timeout:?}"))
                        })?;
                    let Some(batch) = next else { break };
                    let mut batch = batch.map_err(|e| query_status(&e))?;
                    if rows + batch.num_rows() as u64 > max_rows {
                        batch = batch.slice(0, (max_rows - rows) as usize);
                        truncated = true;
                    }
                    rows += batch.num_rows() as u64;
                    for part in message_parts(&batch) {
                        writer
                            .write(&part)
                            .map_err(|e| Status::internal(e.to_string()))?;
                        let bytes = std::mem::take(writer.get_mut());
                        // A client that stops reading is held to the deadline too.
                        let sent = tokio::time::timeout_at(
                            deadline,
                            tx.send(Ok(QueryResponse {
                                arrow_ipc: bytes,
                                truncated: false,
                            })),
                        )
                        .await
                        .map_err(|_| {
                            Status::deadline_exceeded(format!(
                                "query ran over {timeout:?} (the client did not read its results)"
                            ))
                        })?;
                        if sent.is_err() {
                            return Ok(None); // the client went away
                        }
                    }
                }
                if rows >= max_rows && !truncated {
                    // Exactly at the limit: more rows would have followed if there are any.
                    truncated = tokio::time::timeout_at(deadline, batches.next())
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|b| b.is_ok_and(|b| b.num_rows() > 0));
                }
                writer
                    .finish()
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok(Some(QueryResponse {
                    arrow_ipc: std::mem::take(writer.get_mut()),
                    truncated,
                }))
            };
            let last = match run.await {
                Ok(None) => return,
                Ok(Some(last)) => Ok(last),
                Err(status) => Err(status),
            };
            // After the data already queued, so the client sees the end or the error.
            let _ = last_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The gRPC server: `contrail.v1.Contrail`, `grpc.health.v1.Health` (SERVING once the
/// live store is ready) and server reflection.
pub struct GrpcServer {
    pub local_addr: SocketAddr,
    /// Requests by method and status code, for `/metrics`.
    pub stats: Arc<super::counting::GrpcStats>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    pub async fn start(
        bind: SocketAddr,
        service: QueryService,
        auth_token: Option<String>,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("--grpc-bind {bind}: cannot listen"))?;
        let local_addr = listener.local_addr()?;
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_not_serving::<ContrailServer<QueryService>>()
            .await;
        let store = Arc::clone(&service.store);
        let ready_stop = stop.clone();
        tokio::spawn(async move {
            while !store.is_ready() {
                tokio::select! {
                    () = ready_stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            reporter.set_serving::<ContrailServer<QueryService>>().await;
        });
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(super::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let token: Option<Arc<str>> = auth_token.map(Into::into);
        let contrail = ContrailServer::with_interceptor(service, move |req: Request<()>| {
            check_token(token.as_deref(), &req)?;
            Ok(req)
        });
        // No Nagle: small unary replies would wait for the peer's delayed ACK (~40 ms).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let stats = Arc::new(super::counting::GrpcStats::default());
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(super::counting::layer(Arc::clone(&stats)))
                .add_service(health)
                .add_service(reflection)
                .add_service(contrail)
                .serve_with_incoming_shutdown(incoming, async move {
                    stop.cancelled().await;
                }),
        );
        Ok(Self {
            local_addr,
            stats,
            task,
        })
    }

    /// Waits until the server has stopped (after `stop` is cancelled).
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

fn check_token(expected: Option<&str>, req: &Request<()>) -> Result<(), Status> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110).
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .ok_or_else(|| Status::unauthenticated("authorization: a bearer token is required"))?;
    // Same time whatever prefix matches.
    let equal = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if equal {
        Ok(())
    } else {
        Err(Status::unauthenticated(
            "authorization: the bearer token is not valid",
        ))
    }
}
