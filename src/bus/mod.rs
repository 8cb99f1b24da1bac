//! The bus between stages: Apache Kafka in production, an in-process bus for the embedded
//! demo. Stages see only these traits and never learn which one they got.
//!
//! Two roles:
//! - a [`Publisher`] sends records (ingest; idempotent, at-least-once per call);
//! - a [`BatchConsumer`] hands out micro-batches and commits each one together with the
//!   records produced from it. On Kafka that commit is one transaction holding the outputs
//!   and the consumer offsets, which is what makes the pipeline exactly-once.

pub mod file;
pub mod kafka;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// A record read from the bus.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A record to write to the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl OutRecord {
    pub fn new(topic: impl Into<String>, key: Option<Vec<u8>>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key,
            payload,
        }
    }
}

/// Sends records; each call returns once the bus has acknowledged every record in it.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<()>;
}

/// Reads micro-batches and commits them with their outputs.
#[async_trait]
pub trait BatchConsumer: Send {
    /// Waits for the first record (up to `max_wait`), then collects up to `max_records`
    /// until `max_wait` has passed since the call began. `Ok(None)` means the stream has
    /// ended (the in-process bus after its producers are gone); Kafka never ends.
    async fn next_batch(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<Vec<Message>>>;

    /// Publishes `outputs` and marks every record returned by `next_batch` since the last
    /// commit as consumed, atomically where the bus supports it.
    async fn commit(&mut self, outputs: Vec<OutRecord>) -> Result<()>;
}
