//! Contrail: real-time flight-data analytics on Arrow, DataFusion and Kafka.
//!
//! Components (DESIGN.md has the data flow):
//! - [`ingest`]: sources (the simulator) -> validation -> dedupe -> the raw topic;
//! - [`bus`]: Kafka (transactional micro-batches) or the in-process bus of the demo;
//! - [`pipeline`]: JSON -> Arrow -> `sql/clean.sql` -> `sql/features.sql` -> processed records;
//! - [`archive`]: the Hive-partitioned Parquet archive;
//! - core: [`schema`], [`dead_letter`], [`config`], [`error`], [`clock`];
//! - [`app`]: the wiring of each command.

pub mod app;
pub mod archive;
pub mod bus;
pub mod clock;
pub mod config;
pub mod config_file;
pub mod dashboard;
pub mod dead_letter;
pub mod error;
pub mod http;
pub mod ingest;
mod json_cursor;
mod json_write;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod query;
pub mod schema;
pub mod udf;
