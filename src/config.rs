//! Command-line configuration: every flag has a long name, a `CONTRAIL_*` environment
//! variable and a doc comment that becomes its `--help` text. Values are checked when
//! parsed, so a bad value fails with the flag's name before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::archive::ArchiveCompression;
use crate::ingest::Speed;

#[derive(Debug, Parser)]
#[command(
    name = "contrail",
    version,
    about = "Real-time flight-data analytics: OpenSky -> Kafka -> Arrow/DataFusion -> Kafka + Parquet"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `contrail=debug,rdkafka=warn`.
    #[arg(long, env = "CONTRAIL_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Settings file (TOML; see contrail.example.toml) [default: contrail.toml when present].
    #[arg(long, env = "CONTRAIL_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Log lines as human-readable `text` or one JSON object per line (`json`).
    #[arg(
        long,
        env = "CONTRAIL_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Write logs to files in this folder, one per day (`contrail.log.YYYY-MM-DD`), instead
    /// of stderr.
    #[arg(long, env = "CONTRAIL_LOG_DIR", global = true)]
    pub log_dir: Option<PathBuf>,

    /// Daily log files kept in `--log-dir` (older ones are deleted).
    #[arg(long, env = "CONTRAIL_LOG_MAX_FILES", default_value_t = 14, global = true, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub log_max_files: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process, no broker: simulator -> pipeline -> Parquet archive.
    Demo(DemoArgs),
    /// Read a source, validate, drop repeats, publish to the raw topic (Kafka).
    Ingest(IngestArgs),
    /// Consume the raw topic in micro-batches, run the SQL pipeline, publish and archive (Kafka).
    Process(ProcessArgs),
    /// Write simulator output, as ingest would publish it, to a JSON-lines file.
    Simulate(SimulateArgs),
    /// Run the SQL pipeline over a raw JSON-lines file and write the result as Parquet.
    Features(FeaturesArgs),
    /// Train the anomaly model from raw JSON lines or processed Parquet.
    Train(TrainArgs),
    /// Save raw OpenSky `/states/all` responses, one JSON line per poll (for `--source replay`).
    Record(RecordArgs),
    /// The query service: gRPC over the output topics (live) and the Parquet archive.
    Serve(ServeArgs),
    /// Manage Contrail's Kafka topics.
    Topics {
        #[command(subcommand)]
        action: TopicsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every topic Contrail uses; topics that exist are left as they are.
    Create(TopicsCreateArgs),
    /// Delete every topic Contrail uses, with all their records (asks for --yes).
    Delete(TopicsDeleteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers [default: $KAFKA_BOOTSTRAP, else 127.0.0.1:9092].
    #[arg(long = "kafka-bootstrap", env = "CONTRAIL_KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
}

impl KafkaArgs {
    pub fn bootstrap(&self) -> String {
        self.bootstrap
            .clone()
            .or_else(|| {
                std::env::var("KAFKA_BOOTSTRAP")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "127.0.0.1:9092".to_string())
    }
}

/// Default topic names (DESIGN.md): the one place they are spelled.
pub mod topic {
    pub const RAW: &str = "flight-raw-data";
    pub const PROCESSED: &str = "flight-processed-data";
    pub const AGGREGATED: &str = "flight-aggregated-data";
    pub const AIRCRAFT_AGGREGATES: &str = "flight-aircraft-aggregates";
    pub const DEAD_LETTER: &str = "flight-dead-letter";
    pub const WINDOW_STATE: &str = "contrail-window-state";
    pub const WINDOW_PARTIALS: &str = "contrail-window-partials";
    pub const LATE: &str = "flight-late-data";
}

#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Raw state vectors (key icao24).
    #[arg(long, env = "CONTRAIL_TOPIC_RAW", default_value = topic::RAW)]
    pub topic_raw: String,
    /// Processed records with features (key icao24).
    #[arg(
        long,
        env = "CONTRAIL_TOPIC_PROCESSED",
        default_value = topic::PROCESSED
    )]
    pub topic_processed: String,
    /// Global 10-minute window aggregates (key window start).
    #[arg(
        long,
        env = "CONTRAIL_TOPIC_AGGREGATED",
        default_value = topic::AGGREGATED
    )]
    pub topic_aggregated: String,
    /// Per-aircraft window aggregates (key window start).
    #[arg(
        long,
        env = "CONTRAIL_TOPIC_AIRCRAFT_AGGREGATES",
        default_value = topic::AIRCRAFT_AGGREGATES
    )]
    pub topic_aircraft_aggregates: String,
    /// Records refused by a stage, with a reason code.
    #[arg(
        long,
        env = "CONTRAIL_TOPIC_DEAD_LETTER",
        default_value = topic::DEAD_LETTER
    )]
    pub topic_dead_letter: String,
    /// Window-state changelog (compacted).
    #[arg(
        long,
        env = "CONTRAIL_TOPIC_WINDOW_STATE",
        default_value = topic::WINDOW_STATE
    )]
    pub topic_window_state: String,
    /// Per-partition window partials on their way to the merger (one partition).
    #[arg(
        long,
        env = "CONTRAIL_TOPIC_WINDOW_PARTIALS",
        default_value = topic::WINDOW_PARTIALS
    )]
    pub topic_window_partials: String,
    /// Records (and partials) that arrived after their window was emitted.
    #[arg(long, env = "CONTRAIL_TOPIC_LATE", default_value = topic::LATE)]
    pub topic_late: String,
}

impl Default for TopicArgs {
    fn default() -> Self {
        Self {
            topic_raw: topic::RAW.into(),
            topic_processed: topic::PROCESSED.into(),
            topic_aggregated: topic::AGGREGATED.into(),
            topic_aircraft_aggregates: topic::AIRCRAFT_AGGREGATES.into(),
            topic_dead_letter: topic::DEAD_LETTER.into(),
            topic_window_state: topic::WINDOW_STATE.into(),
            topic_window_partials: topic::WINDOW_PARTIALS.into(),
            topic_late: topic::LATE.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// The built-in flight simulator.
    Simulator,
    /// The OpenSky Network REST API (`GET /states/all`), polled.
    Opensky,
    /// A file: a `contrail record` recording, raw JSON lines or raw Parquet (`--replay-file`).
    Replay,
}

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Where raw records come from.
    #[arg(long, env = "CONTRAIL_SOURCE", value_enum, default_value_t = SourceKind::Simulator)]
    pub source: SourceKind,
    #[command(flatten)]
    pub simulator: SimulatorArgs,
    #[command(flatten)]
    pub opensky: OpenSkyArgs,
    /// The file `--source replay` reads (its records keep their time spacing / `--speed`).
    #[arg(long, env = "CONTRAIL_REPLAY_FILE", required_if_eq("source", "replay"))]
    pub replay_file: Option<PathBuf>,
}

/// The OpenSky client's settings (`--source opensky`, `contrail record`).
#[derive(Debug, Clone, Args)]
pub struct OpenSkyArgs {
    /// Bounding box lamin,lomin,lamax,lomax in degrees [default: the whole world].
    #[arg(long, env = "CONTRAIL_BBOX", allow_hyphen_values = true)]
    pub bbox: Option<crate::ingest::opensky::BoundingBox>,
    /// OAuth2 client credentials file as downloaded from OpenSky ({"clientId", "clientSecret"});
    /// else OPENSKY_CLIENT_ID / OPENSKY_CLIENT_SECRET; else anonymous.
    #[arg(long, env = "CONTRAIL_OPENSKY_CREDENTIALS")]
    pub opensky_credentials: Option<PathBuf>,
    /// OpenSky API base URL (for proxies and tests).
    #[arg(long, env = "CONTRAIL_OPENSKY_API_URL", default_value = crate::ingest::opensky::DEFAULT_API_URL)]
    pub opensky_api_url: String,
    /// OAuth2 token URL.
    #[arg(long, env = "CONTRAIL_OPENSKY_AUTH_URL", default_value = crate::ingest::opensky::DEFAULT_AUTH_URL)]
    pub opensky_auth_url: String,
    /// Time between two polls; never shorter than the tier's resolution (10 s anonymous,
    /// 5 s authenticated).
    #[arg(long, env = "CONTRAIL_POLL_INTERVAL", default_value = "15s", value_parser = duration)]
    pub poll_interval: Duration,
    /// Timeout of one API call (a global snapshot is ~1 MB).
    #[arg(long, env = "CONTRAIL_OPENSKY_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub opensky_timeout: Duration,
    /// First wait after a failed poll; it doubles (with jitter) up to --backoff-max.
    #[arg(long, env = "CONTRAIL_BACKOFF_MIN", default_value = "1s", value_parser = positive_duration)]
    pub backoff_min: Duration,
    #[arg(long, env = "CONTRAIL_BACKOFF_MAX", default_value = "5m", value_parser = positive_duration)]
    pub backoff_max: Duration,
    /// Stop after this many successful polls [default: never].
    #[arg(long, env = "CONTRAIL_POLLS")]
    pub polls: Option<u64>,
}

impl OpenSkyArgs {
    /// The polling settings; the one check clap cannot make alone is that the backoff
    /// range is not upside down.
    pub fn poll_config(&self) -> Result<crate::ingest::opensky::PollConfig, String> {
        if self.backoff_max < self.backoff_min {
            return Err(format!(
                "--backoff-max ({:?}) is shorter than --backoff-min ({:?})",
                self.backoff_max, self.backoff_min
            ));
        }
        Ok(crate::ingest::opensky::PollConfig {
            interval: self.poll_interval,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            max_polls: self.polls,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub opensky: OpenSkyArgs,
    /// Where to append the recording: one JSON line per poll, {"poll_time", "response"}.
    #[arg(long, env = "CONTRAIL_RECORD_OUT")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Simulator seed: the same seed and start time give the same records.
    #[arg(long, env = "CONTRAIL_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Number of simulated aircraft.
    #[arg(long, env = "CONTRAIL_AIRCRAFT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub aircraft: u64,
    /// Simulated seconds per real second (e.g. 1, 10), or `max`.
    #[arg(long, env = "CONTRAIL_SPEED", default_value = "1")]
    pub speed: Speed,
    /// Probability per report that an injected anomaly starts.
    #[arg(long, env = "CONTRAIL_ANOMALY_RATE", default_value_t = 0.002, value_parser = probability)]
    pub anomaly_rate: f64,
    /// Probability per report that a corrupted record is emitted too (it must be dead-lettered).
    #[arg(long, env = "CONTRAIL_INVALID_RATE", default_value_t = 0.001, value_parser = probability)]
    pub invalid_rate: f64,
    /// Mean seconds between two reports of one aircraft.
    #[arg(long, env = "CONTRAIL_REPORT_INTERVAL", default_value_t = 5.0, value_parser = positive_seconds)]
    pub report_interval: f64,
    /// Simulated start time, RFC 3339 [default: now].
    #[arg(long, env = "CONTRAIL_START_TIME")]
    pub start_time: Option<DateTime<Utc>>,
    /// Stop after this many records.
    #[arg(long, env = "CONTRAIL_MAX_RECORDS")]
    pub max_records: Option<u64>,
    /// Write labels of injected anomalies here (JSON lines: icao24, timestamp, kind).
    #[arg(long, env = "CONTRAIL_LABELS_OUT")]
    pub labels_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Length of the tumbling event-time windows (e.g. 10m, 600s, 1h).
    #[arg(long, env = "CONTRAIL_WINDOW_LENGTH", default_value = "10m", value_parser = whole_seconds)]
    pub window_length: Duration,
    /// Watermark = largest event time seen minus this.
    #[arg(long, env = "CONTRAIL_WATERMARK_DELAY", default_value = "5m", value_parser = duration)]
    pub watermark_delay: Duration,
    /// Extra wait after the watermark passes a window's end before it is emitted.
    #[arg(long, env = "CONTRAIL_ALLOWED_LATENESS", default_value = "0s", value_parser = duration)]
    pub allowed_lateness: Duration,
    /// A partition silent this long (wall clock) stops holding back the global watermark.
    #[arg(long, env = "CONTRAIL_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// An aircraft's continuity state is dropped this long (event time) after its last
    /// report.
    #[arg(long, env = "CONTRAIL_STATE_TTL", default_value = "1h", value_parser = duration)]
    pub state_ttl: Duration,
    /// A record whose event time is further than this past both the processor's clock and
    /// its partition's largest event time is left out of the windows (late topic, reason
    /// `ahead`) instead of moving the watermark.
    #[arg(long, env = "CONTRAIL_MAX_EVENT_LEAD", default_value = "1d", value_parser = duration)]
    pub max_event_lead: Duration,
}

impl WindowArgs {
    pub fn spec(&self) -> crate::pipeline::window::WindowSpec {
        let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        crate::pipeline::window::WindowSpec {
            length_us: us(self.window_length),
            delay_us: us(self.watermark_delay),
            lateness_us: us(self.allowed_lateness),
            state_ttl_us: us(self.state_ttl),
            idle_timeout_us: us(self.idle_timeout),
            max_lead_us: us(self.max_event_lead),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub sql: SqlArgs,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Root of the Parquet archive.
    #[arg(long, env = "CONTRAIL_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Do not write the Parquet archive.
    #[arg(long, env = "CONTRAIL_NO_ARCHIVE")]
    pub no_archive: bool,
    /// Compression of the archive's Parquet files.
    #[arg(long, env = "CONTRAIL_ARCHIVE_COMPRESSION", value_enum, default_value_t = ArchiveCompression::Snappy)]
    pub archive_compression: ArchiveCompression,
    /// Most records in one micro-batch.
    #[arg(long, env = "CONTRAIL_BATCH_MAX_RECORDS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub batch_max_records: u64,
    /// Anomaly model file (made by `contrail train`); hot-reloaded when it changes.
    #[arg(
        long,
        env = "CONTRAIL_MODEL",
        default_value = "models/flight_anomaly_detector.json"
    )]
    pub model: PathBuf,
    /// Longest wait for a micro-batch to fill, in milliseconds.
    #[arg(long, env = "CONTRAIL_BATCH_MAX_WAIT_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub batch_max_wait_ms: u64,
    /// A micro-batch also closes once the input has paused this long (milliseconds) after
    /// its first record: a burst is processed as it ends. 0: as soon as nothing is queued.
    #[arg(long, env = "CONTRAIL_BATCH_IDLE_MS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub batch_idle_ms: u64,
}

impl PipelineArgs {
    pub fn batch_limits(&self) -> crate::bus::BatchLimits {
        crate::bus::BatchLimits::new(
            self.batch_max_records as usize,
            Duration::from_millis(self.batch_max_wait_ms),
        )
        .with_idle(Duration::from_millis(self.batch_idle_ms))
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long, env = "CONTRAIL_DURATION", value_parser = positive_seconds)]
    pub duration: Option<f64>,
    /// Seconds between two status lines.
    #[arg(long, env = "CONTRAIL_STATUS_INTERVAL", default_value_t = 5.0, value_parser = positive_seconds)]
    pub status_interval: f64,
    #[command(flatten)]
    pub grpc: GrpcArgs,
    #[command(flatten)]
    pub dashboard: DashboardArgs,
    /// When the source ends (a replay file, --max-records), keep serving the dashboard and
    /// gRPC over what was processed until Ctrl-C instead of exiting.
    #[arg(long, env = "CONTRAIL_KEEP_SERVING")]
    pub keep_serving: bool,
}

/// The web dashboard's settings (`serve` and `demo`).
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Address of the dashboard and its JSON API (`/`, `/api/...`); port 0 picks one.
    #[arg(long, env = "CONTRAIL_HTTP_BIND", default_value = "127.0.0.1:8501")]
    pub http_bind: std::net::SocketAddr,
    /// The dashboard's files (index.html, app/, and node_modules/ from `npm ci`).
    #[arg(long, env = "CONTRAIL_WEB_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/web"))]
    pub web_dir: PathBuf,
    /// The dashboard warns that data is stale when nothing arrived for this long.
    #[arg(long, env = "CONTRAIL_STALE_AFTER", default_value = "30s", value_parser = duration)]
    pub stale_after: Duration,
    /// An aircraft leaves the map when its last report is this much older than the newest
    /// record.
    #[arg(long, env = "CONTRAIL_TRACK_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub track_timeout: Duration,
}

/// The gRPC query service's settings (`serve` and `demo`).
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// Address of the gRPC service.
    #[arg(long, env = "CONTRAIL_GRPC_BIND", default_value = "127.0.0.1:50051")]
    pub grpc_bind: std::net::SocketAddr,
    /// Require `authorization: Bearer <token>` on every query RPC (health and reflection
    /// stay open for probes).
    #[arg(long, env = "CONTRAIL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Aircraft held in the live store (the least recently seen go first).
    #[arg(long, env = "CONTRAIL_MAX_AIRCRAFT", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_aircraft: u64,
    /// States kept per aircraft (its recent track).
    #[arg(long, env = "CONTRAIL_TRACK_POINTS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub track_points: u64,
    /// Anomalies held in the live store.
    #[arg(long, env = "CONTRAIL_MAX_ANOMALIES", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_anomalies: u64,
    /// Global windows held in the live store (4,320 = 30 days of 10-minute windows).
    #[arg(long, env = "CONTRAIL_MAX_WINDOWS", default_value_t = 4_320, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_windows: u64,
    /// Per-aircraft windows held in the live store.
    #[arg(long, env = "CONTRAIL_MAX_AIRCRAFT_WINDOWS", default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_aircraft_windows: u64,
    /// Rows one `Query` may return.
    #[arg(long, env = "CONTRAIL_QUERY_MAX_ROWS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub query_max_rows: u64,
    /// Longest a `Query` may run (e.g. 30s).
    #[arg(long, env = "CONTRAIL_QUERY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub query_timeout: Duration,
    /// Memory all running queries may use together, in MiB (beyond it a query fails with
    /// RESOURCE_EXHAUSTED).
    #[arg(long, env = "CONTRAIL_QUERY_MEMORY_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(16..))]
    pub query_memory_mb: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub grpc: GrpcArgs,
    #[command(flatten)]
    pub dashboard: DashboardArgs,
    /// Root of the Parquet archive `Query` reads history from.
    #[arg(long, env = "CONTRAIL_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// How far back the live store starts reading `flight-processed-data` (by record time).
    #[arg(long, env = "CONTRAIL_LIVE_HISTORY", default_value = "30m", value_parser = duration)]
    pub live_history: Duration,
    /// How far back it starts reading the window topics.
    #[arg(long, env = "CONTRAIL_WINDOW_HISTORY", default_value = "30d", value_parser = duration)]
    pub window_history: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Seconds between two status log lines.
    #[arg(long, env = "CONTRAIL_STATUS_INTERVAL", default_value_t = 5.0, value_parser = positive_seconds)]
    pub status_interval: f64,
    /// Address of the HTTP endpoint (`/health` with the ingest counters); port 0 picks one.
    #[arg(long, env = "CONTRAIL_HTTP_BIND", default_value = "127.0.0.1:8502")]
    pub http_bind: std::net::SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Consumer group shared by all processors (scale out by starting more).
    #[arg(long, env = "CONTRAIL_GROUP_ID", default_value = "contrail-process")]
    pub group_id: String,
    /// Stable name of this processor instance (e.g. the host or pod name): static group
    /// membership, so a restarted instance gets its partitions back at once, and a
    /// transactional.id that fences the crashed instance's open transaction.
    #[arg(long, env = "CONTRAIL_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Kafka transactional.id of this processor [default: GROUP-INSTANCE, else derived
    /// from group and process id].
    #[arg(long, env = "CONTRAIL_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// At-least-once instead of exactly-once: outputs, then offsets, no transaction. Only
    /// for measuring what transactions cost.
    #[arg(long, env = "CONTRAIL_NO_TRANSACTIONS")]
    pub no_transactions: bool,
    /// Exit once this many records were consumed (for benchmarks and tests).
    #[arg(long, env = "CONTRAIL_STOP_AFTER")]
    pub stop_after: Option<u64>,
    /// Seconds between two status log lines.
    #[arg(long, env = "CONTRAIL_STATUS_INTERVAL", default_value_t = 5.0, value_parser = positive_seconds)]
    pub status_interval: f64,
    /// Address of the HTTP endpoint (`/metrics`, `/health`, `/ready`); port 0 picks one.
    #[arg(long, env = "CONTRAIL_HTTP_BIND", default_value = "127.0.0.1:8503")]
    pub http_bind: std::net::SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub simulator: SimulatorArgs,
    /// Output file: one raw record (JSON) per line, validated and deduplicated.
    #[arg(long, env = "CONTRAIL_OUT")]
    pub out: PathBuf,
    /// Where records that fail validation go [default: OUT with .dead-letter.jsonl].
    #[arg(long, env = "CONTRAIL_DEAD_LETTER_OUT")]
    pub dead_letter_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SqlArgs {
    /// Folder holding clean.sql and features.sql.
    #[arg(long, env = "CONTRAIL_SQL_DIR", default_value = "sql")]
    pub sql_dir: PathBuf,
    /// Grid cell size in degrees for grid_x/grid_y.
    #[arg(long, env = "CONTRAIL_GRID_CELL_DEG", default_value_t = 1.0, value_parser = grid_cell)]
    pub grid_cell_deg: f64,
}

#[derive(Debug, Clone, Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub sql: SqlArgs,
    /// Raw records, one JSON object per line (e.g. from `contrail simulate`).
    #[arg(long, env = "CONTRAIL_INPUT")]
    pub input: PathBuf,
    /// Parquet file to write.
    #[arg(long, env = "CONTRAIL_OUTPUT")]
    pub output: PathBuf,
    /// Anomaly model file; without it the score columns are null.
    #[arg(long, env = "CONTRAIL_MODEL")]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub sql: SqlArgs,
    /// Training data: a raw JSON-lines file (run through the SQL features), or processed
    /// Parquet (a file, or an archive folder such as data/processed).
    #[arg(long, env = "CONTRAIL_INPUT")]
    pub input: PathBuf,
    /// Model file to write.
    #[arg(
        long,
        env = "CONTRAIL_MODEL_OUT",
        default_value = "models/flight_anomaly_detector.json"
    )]
    pub output: PathBuf,
    /// Number of trees.
    #[arg(long, env = "CONTRAIL_TREES", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub trees: u64,
    /// Rows drawn for each tree.
    #[arg(long, env = "CONTRAIL_MAX_SAMPLES", default_value_t = 256, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub max_samples: u64,
    /// Share of training rows to flag (sets the threshold) [default: threshold 0.5].
    #[arg(long, env = "CONTRAIL_CONTAMINATION", value_parser = contamination)]
    pub contamination: Option<f64>,
    /// Training seed.
    #[arg(long, env = "CONTRAIL_TRAIN_SEED", default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct TopicsCreateArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Partitions of each keyed topic.
    #[arg(long, env = "CONTRAIL_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Replication factor of every topic.
    #[arg(long, env = "CONTRAIL_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub replication_factor: i32,
}

#[derive(Debug, Clone, Args)]
pub struct TopicsDeleteArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Confirms the deletion: the topics and every record in them are gone for good.
    #[arg(long)]
    pub yes: bool,
}

impl TopicArgs {
    /// Every topic name (what `topics create` creates and `topics delete` deletes).
    pub fn all(&self) -> [&String; 8] {
        [
            &self.topic_raw,
            &self.topic_processed,
            &self.topic_dead_letter,
            &self.topic_aggregated,
            &self.topic_aircraft_aggregates,
            &self.topic_late,
            &self.topic_window_partials,
            &self.topic_window_state,
        ]
    }
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn contamination(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if c > 0.0 && c < 0.5 => Ok(c),
        _ => Err(format!("{s:?} is not a share in (0, 0.5)")),
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// A duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`), or plain seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use ms, s, m, h or d, e.g. 10m)"
            ));
        }
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v * scale < 1e9 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("{s:?} is not a duration (e.g. 30s, 10m, 1h)")),
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: must be longer than zero")),
        d => Ok(d),
    }
}

fn whole_seconds(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() || d.subsec_nanos() != 0 {
        return Err(format!("{s:?} must be a positive whole number of seconds"));
    }
    Ok(d)
}

fn grid_cell(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 180.0 => Ok(v),
        _ => Err(format!("{s:?} is not a cell size in (0, 180] degrees")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (
                vec!["contrail", "demo", "--anomaly-rate", "2"],
                "--anomaly-rate",
            ),
            (vec!["contrail", "demo", "--speed", "fast"], "--speed"),
            (vec!["contrail", "demo", "--aircraft", "0"], "--aircraft"),
            (
                vec!["contrail", "demo", "--grid-cell-deg=-1"],
                "--grid-cell-deg",
            ),
            (
                vec!["contrail", "demo", "--start-time", "yesterday"],
                "--start-time",
            ),
            (
                vec!["contrail", "process", "--batch-max-records", "0"],
                "--batch-max-records",
            ),
            (
                vec!["contrail", "topics", "create", "--partitions", "x"],
                "--partitions",
            ),
            (
                vec!["contrail", "process", "--window-length", "90.5s"],
                "--window-length",
            ),
            (
                vec!["contrail", "demo", "--watermark-delay", "5 parsecs"],
                "--watermark-delay",
            ),
            (
                vec!["contrail", "record", "--out", "x", "--backoff-min", "0s"],
                "--backoff-min",
            ),
            (
                vec!["contrail", "ingest", "--opensky-timeout", "0"],
                "--opensky-timeout",
            ),
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let cli = Cli::try_parse_from(["contrail", "topics", "create"]).unwrap();
        let Command::Topics {
            action: TopicsCommand::Create(a),
        } = cli.command
        else {
            panic!()
        };
        assert_eq!(a.partitions, 6);
        assert_eq!(a.topics.topic_raw, "flight-raw-data");
        assert_eq!(a.topics.topic_window_state, "contrail-window-state");
        let cli = Cli::try_parse_from(["contrail", "demo", "--speed", "max"]).unwrap();
        let Command::Demo(d) = cli.command else {
            panic!()
        };
        assert_eq!(d.source.simulator.speed, Speed::Max);
        assert_eq!(d.source.simulator.aircraft, 300);
        assert_eq!(d.pipeline.data_dir, PathBuf::from("data"));
        let w = d.pipeline.window.spec();
        assert_eq!(w.length_us, 600_000_000);
        assert_eq!(w.delay_us, 300_000_000);
        assert_eq!(w.lateness_us, 0);
    }

    #[test]
    fn zero_is_refused_where_it_would_spin_or_time_out_at_once() {
        for flag in ["--backoff-min", "--backoff-max", "--opensky-timeout"] {
            let e = Cli::try_parse_from(["contrail", "record", "--out", "x", flag, "0s"])
                .unwrap_err()
                .to_string();
            assert!(e.contains(flag) && e.contains("longer than zero"), "{e}");
            assert!(Cli::try_parse_from(["contrail", "record", "--out", "x", flag, "1ms"]).is_ok());
        }
    }

    #[test]
    fn an_upside_down_backoff_range_names_both_flags() {
        let args = |extra: &[&str]| {
            let mut v = vec!["contrail", "record", "--out", "x"];
            v.extend(extra);
            let Command::Record(r) = Cli::try_parse_from(v).unwrap().command else {
                panic!()
            };
            r.opensky.poll_config()
        };
        let e = args(&["--backoff-min", "10m", "--backoff-max", "1m"]).unwrap_err();
        assert!(
            e.contains("--backoff-max") && e.contains("--backoff-min"),
            "{e}"
        );
        let ok = args(&["--backoff-min", "1m", "--backoff-max", "1m"]).unwrap();
        assert_eq!(ok.backoff_max, Duration::from_secs(60));
        assert_eq!(args(&[]).unwrap().backoff_max, Duration::from_secs(300));
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("42").unwrap(), Duration::from_secs(42));
        assert!(duration("-1s").is_err() && duration("m").is_err());
    }
}
