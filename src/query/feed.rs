//! Feeding the live store: from Kafka (`serve`: read_committed, no consumer group, every
//! partition from a point in time) or from the in-process bus (`demo`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::store::{Feed, LiveStore};
use crate::bus::{BatchConsumer, BatchLimits};

/// One topic the store reads, and from how far back (by record time).
#[derive(Debug, Clone)]
pub struct FeedTopic {
    pub topic: String,
    pub feed: Feed,
    pub history: Duration,
}

/// Reads each of `topics` into `store` on a thread of its own (one consumer per topic, so a
/// partition-EOF event names one partition) until `stop`. The store is marked ready once
/// every partition has been read to the end it had when reading started.
pub fn spawn_kafka_feed(
    store: Arc<LiveStore>,
    bootstrap: String,
    topics: Vec<FeedTopic>,
    stop: CancellationToken,
) -> Vec<std::thread::JoinHandle<()>> {
    let behind = Arc::new(AtomicUsize::new(topics.len()));
    topics
        .into_iter()
        .map(|t| {
            let (store, bootstrap, stop, behind) = (
                Arc::clone(&store),
                bootstrap.clone(),
                stop.clone(),
                Arc::clone(&behind),
            );
            std::thread::Builder::new()
                .name(format!("feed-{}", t.topic))
                .spawn(move || {
                    if let Err(e) = run_kafka_feed(&store, &bootstrap, &t, &stop, &behind) {
                        tracing::error!(topic = %t.topic, error = %e, "live store feed stopped");
                    }
                })
                .expect("spawning a live store feed")
        })
        .collect()
}

fn run_kafka_feed(
    store: &LiveStore,
    bootstrap: &str,
    t: &FeedTopic,
    stop: &CancellationToken,
    behind: &AtomicUsize,
) -> Result<(), KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // No offsets are committed: the group id only satisfies librdkafka.
        .set("group.id", "contrail-serve")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?;
    // Wait for the topics (serve may start before the processor creates them).
    let mut assignment = TopicPartitionList::new();
    let mut pending = std::collections::HashSet::new();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut warned = Instant::now() - Duration::from_secs(60);
    {
        let partitions = loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            match consumer.fetch_metadata(Some(&t.topic), Duration::from_secs(5)) {
                Ok(md) => {
                    let n = md
                        .topics()
                        .first()
                        .filter(|m| m.error().is_none())
                        .map_or(0, |m| m.partitions().len());
                    if n > 0 {
                        break n as i32;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "metadata"),
            }
            if warned.elapsed() > Duration::from_secs(30) {
                tracing::warn!(topic = %t.topic, "waiting for the topic to exist");
                warned = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let mut times = TopicPartitionList::new();
        let since = now_ms - t.history.as_millis() as i64;
        for p in 0..partitions {
            times.add_partition_offset(&t.topic, p, Offset::Offset(since))?;
        }
        let offsets = consumer.offsets_for_times(times, Duration::from_secs(10))?;
        for e in offsets.elements() {
            // No record at or after `since`: start at the end.
            let offset = match e.offset() {
                Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                _ => Offset::End,
            };
            assignment.add_partition_offset(&t.topic, e.partition(), offset)?;
            pending.insert(e.partition());
        }
    }
    consumer.assign(&assignment)?;
    tracing::info!(topic = %t.topic, partitions = pending.len(), "live store: reading");
    let mut last_log = Instant::now();
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                if let Some(payload) = m.payload()
                    && let Err(e) = store.add(t.feed, payload)
                    && last_log.elapsed() > Duration::from_secs(10)
                {
                    tracing::warn!(topic = m.topic(), offset = m.offset(), error = %e, "live store: record skipped (not the topic's contract)");
                    last_log = Instant::now();
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => caught_up(&mut pending, p, behind, store),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "live store feed");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Ok(())
}

/// Partition `p` reached its end. This topic is caught up when its last pending partition
/// does; the store is ready when the last topic is.
fn caught_up(
    pending: &mut std::collections::HashSet<i32>,
    p: i32,
    behind: &AtomicUsize,
    store: &LiveStore,
) {
    if pending.remove(&p) && pending.is_empty() && behind.fetch_sub(1, Ordering::AcqRel) == 1 {
        store.set_ready();
        tracing::info!(
            records = store.records.load(Ordering::Relaxed),
            "live store ready"
        );
    }
}

/// Drains one in-process bus topic into the store until the topic ends.
pub async fn feed_from_bus(
    store: Arc<LiveStore>,
    feed: Feed,
    mut consumer: crate::bus::memory::MemoryConsumer,
) -> crate::error::Result<()> {
    while let Some(batch) = consumer
        .next_batch(BatchLimits::new(10_000, Duration::from_millis(200)))
        .await?
    {
        for m in &batch {
            if let Err(e) = store.add(feed, &m.payload) {
                tracing::warn!(error = %e, "live store: record skipped");
            }
        }
        consumer.commit(Vec::new()).await?;
    }
    Ok(())
}
