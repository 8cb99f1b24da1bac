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

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// A record read from the bus.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The value; cloning a message shares it instead of copying.
    pub payload: Bytes,
}

/// A record to write to the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    /// The value; may share its buffer with other records (a batch's JSON rows are written
    /// into one).
    pub payload: Bytes,
    /// The partition to write to; `None` lets the key decide.
    pub partition: Option<i32>,
    /// A null value (a compaction tombstone: the key's state is gone); `payload` is empty.
    pub tombstone: bool,
}

impl OutRecord {
    pub fn new(topic: impl Into<String>, key: Option<Vec<u8>>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            key,
            payload: payload.into(),
            partition: None,
            tombstone: false,
        }
    }

    /// A tombstone for `key` in a compacted topic.
    pub fn tombstone(topic: impl Into<String>, key: Vec<u8>) -> Self {
        Self {
            tombstone: true,
            ..Self::new(topic, Some(key), Bytes::new())
        }
    }

    /// The same record, sent to `partition`.
    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Sends records; each call returns once the bus has acknowledged every record in it.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<()>;
}

/// The rest of a commit [`BatchConsumer::start_commit`] began: resolves when the commit is
/// done or has failed.
pub type PendingCommit = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A [`PendingCommit`] with nothing left to do: the commit is complete.
pub fn completed() -> PendingCommit {
    Box::pin(std::future::ready(Ok(())))
}

/// When a micro-batch closes: with `max_records` records, once `max_wait` has passed since
/// the read began, or once the input has paused for `idle` after its first record (a burst
/// of records, such as one OpenSky poll, is processed as it ends, not `max_wait` later;
/// a steady stream keeps filling the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_wait: Duration,
    pub idle: Duration,
}

impl BatchLimits {
    /// Closes on `max_records` or `max_wait` only (`idle` = `max_wait`).
    pub fn new(max_records: usize, max_wait: Duration) -> Self {
        Self {
            max_records,
            max_wait,
            idle: max_wait,
        }
    }

    pub fn with_idle(self, idle: Duration) -> Self {
        Self { idle, ..self }
    }

    /// How long to wait for the next record: until `deadline` (the read's start +
    /// `max_wait`) for the first, and at most `idle` from now after it.
    pub fn wait_until(
        &self,
        deadline: tokio::time::Instant,
        collected: usize,
    ) -> tokio::time::Instant {
        if collected == 0 {
            deadline
        } else {
            deadline.min(tokio::time::Instant::now() + self.idle)
        }
    }
}

/// Reads micro-batches and commits them with their outputs.
#[async_trait]
pub trait BatchConsumer: Send {
    /// Waits for the first record (up to `limits.max_wait`), then collects records until
    /// the batch closes by `limits`. `Ok(None)` means the stream has ended (the in-process
    /// bus after its producers are gone); Kafka never ends.
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Option<Vec<Message>>>;

    /// Publishes `outputs` and marks every record returned by `next_batch` since the last
    /// commit as consumed, atomically where the bus supports it.
    async fn commit(&mut self, outputs: Vec<OutRecord>) -> Result<()>;

    /// [`BatchConsumer::commit`], returning as soon as the commit's place in the stream is
    /// fixed: it takes `outputs` and every record handed out so far, and what is left of the
    /// commit runs by itself, so the caller can read and process the next batch meanwhile.
    /// The caller awaits the returned future before it commits again; when that fails, it
    /// calls [`BatchConsumer::recover`], which voids this batch and any read after it.
    ///
    /// By default (buses whose commits are quick or not atomic) the whole commit happens
    /// before this returns.
    async fn start_commit(&mut self, outputs: Vec<OutRecord>) -> Result<PendingCommit> {
        self.commit(outputs).await?;
        Ok(completed())
    }

    /// Partitions taken away from this consumer since the last call. Records of theirs
    /// handed out but not committed are void: their new owner reads them again. State kept
    /// for them must be dropped (the new owner restores it from the changelog).
    fn take_revoked(&mut self) -> Vec<(String, i32)> {
        Vec::new()
    }

    /// Records not yet consumed per assigned (topic, partition), from what the client
    /// already knows (no broker round trip); `None` where the bus cannot tell.
    fn lag(&self) -> Option<Vec<(String, i32, i64)>> {
        None
    }

    /// After a failed [`BatchConsumer::commit`]: rewinds to the last committed position
    /// (everything handed out since is void) and makes the consumer usable again. Buses
    /// that cannot fail this way return `Err`.
    async fn recover(&mut self) -> Result<()> {
        Err(crate::error::Error::Bus(
            "this bus cannot recover from a failed commit".into(),
        ))
    }
}

/// A changelog record: key and value; `None` is a tombstone.
pub type ChangelogRecord = (Vec<u8>, Option<Vec<u8>>);

/// Reads a compacted changelog partition from its start to its last committed record, in
/// offset order.
#[async_trait]
pub trait ChangelogReader: Send + Sync {
    async fn read(&self, partition: i32) -> Result<Vec<ChangelogRecord>>;
}
