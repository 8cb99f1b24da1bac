//! Errors, named by who must act on them.
//!
//! - [`Error::Config`] and [`Error::Sql`]: the user (a flag, a config value, a SQL file).
//! - [`Error::Bus`], [`Error::Io`]: the outside world (broker, disk); usually worth a retry.
//! - [`Error::Data`]: a record that breaks its contract; it goes to the dead-letter topic and
//!   never stops a stage.
//! - [`Error::Internal`]: a bug in Contrail.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("SQL file {path}: {message}")]
    Sql { path: PathBuf, message: String },

    #[error("Kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    #[error("bus: {0}")]
    Bus(String),

    #[error("{context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("bad record ({reason}): {message}")]
    Data {
        reason: &'static str,
        message: String,
    },

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("internal error (a bug in Contrail): {0}")]
    Internal(String),
}

impl Error {
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Kafka { .. } | Error::Bus(_) | Error::Io { .. })
    }
}
