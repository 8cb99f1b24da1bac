//! Apache Kafka behind the bus traits (rdkafka / librdkafka).
//!
//! - [`KafkaPublisher`]: idempotent producer, `acks=all`; ingest's way in.
//! - [`KafkaBatchConsumer`]: a `read_committed` consumer in a consumer group paired with a
//!   transactional producer. Every micro-batch commits as one transaction that holds its
//!   output records and the consumer offsets (KIP-98/KIP-447), so `read_committed` readers
//!   see each input's outputs exactly once, even across crashes and rebalances.
//! - [`create_topics`]: the admin call behind `contrail topics create`.
//!
//! librdkafka's transactional calls block; they run on tokio's blocking pool.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{CStr, CString, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings::{rd_kafka_producev, rd_kafka_vtype_t};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    BatchConsumer, BatchLimits, ChangelogReader, ChangelogRecord, Message, OutRecord,
    PendingCommit, Publisher, completed,
};
use crate::error::{Error, Result};

/// How long a transactional call may wait for the broker before the batch fails.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a transactional call may take in all before it counts as failed even if
/// librdkafka has not returned: `send_offsets_to_transaction` can ignore its timeout and
/// wait for ever when the group coordinator was down as the call began (librdkafka issues
/// #5456 and #5511; seen here in `tests/kafka_faults.rs`'s broker restart, the call's
/// thread waiting on a condition variable with no deadline).
const TXN_WATCHDOG: Duration = Duration::from_secs(90);

/// Producer settings shared by the idempotent and the transactional producer.
fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        // Both producers enqueue a whole batch and then wait for its delivery (a
        // transaction before it commits), so lingering only delays the send. 0 against
        // 5 ms at 20,000 records/s (A/B, three runs each): a transaction's commit 14.0-18.7
        // against 20.6-25.4 ms on average, p99 latency 162-239 against 195-305 ms; at full
        // speed ingest 1M in 9.4-10.2 s against 11.0-11.2, the processor within the noise.
        .set("linger.ms", "0")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        // Keys are icao24: Java's partitioner, so every client puts an aircraft on one partition.
        .set("partitioner", "murmur2_random");
    c
}

/// How long librdkafka may try to deliver a record (`message.timeout.ms`) before it
/// reports the record failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a send outside transactions waits for its records: past `DELIVERY_TIMEOUT`,
/// by when librdkafka has reported every one delivered or failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(150);

/// The producers' delivery reports, kept as a count of failures and the last failure's
/// words: callers enqueue a set of records, wait until none is in flight and compare the
/// count with the one before. A count rather than a future per record: rust-rdkafka's
/// `FutureProducer` allocated a oneshot channel per record and completed it from its
/// polling thread, where nothing was waiting for it.
#[derive(Default)]
struct DeliveryReports {
    failed: AtomicU64,
    last_failure: Mutex<String>,
}

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            *self.last_failure.lock().expect("delivery lock") = format!(
                "delivery to {} partition {} failed: {e}",
                m.topic(),
                m.partition()
            );
            self.failed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A producer with its own polling thread serving the delivery reports; clones share it.
type KafkaProducer = ThreadedProducer<DeliveryReports>;

fn create_producer(config: &ClientConfig, what: &str) -> Result<KafkaProducer> {
    config
        .create_with_context(DeliveryReports::default())
        .map_err(|e| Error::kafka(format!("creating {what}"), e))
}

/// Hands one record to librdkafka without a copy of its value (rust-rdkafka's `send`
/// always copies it: an allocation and a `memcpy` per record, and the pages they touch,
/// over a third of the processor's page faults at full speed). librdkafka copies the key.
///
/// # Safety
/// `record.payload` must stay alive and unchanged until librdkafka no longer holds the
/// record: until its delivery report has been served (it is then no longer counted in
/// `in_flight_count`), or the producer is destroyed. [`Lent`] keeps that promise.
unsafe fn produce_borrowed(
    producer: &KafkaProducer,
    topic: &CStr,
    record: &OutRecord,
) -> RDKafkaErrorCode {
    use rd_kafka_vtype_t::*;
    let (value, value_len) = if record.tombstone {
        (std::ptr::null_mut(), 0)
    } else {
        (record.payload.as_ptr() as *mut c_void, record.payload.len())
    };
    let (key, key_len) = match &record.key {
        Some(k) => (k.as_ptr() as *mut c_void, k.len()),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: the arguments are the (type, value) pairs librdkafka's varargs expect, as
    // rust-rdkafka's own `send` passes them, with no flags (RD_KAFKA_MSG_F_COPY unset);
    // the caller keeps the value alive (above).
    let code = unsafe {
        rd_kafka_producev(
            producer.client().native_ptr(),
            RD_KAFKA_VTYPE_TOPIC,
            topic.as_ptr(),
            RD_KAFKA_VTYPE_PARTITION,
            record.partition.unwrap_or(-1),
            RD_KAFKA_VTYPE_MSGFLAGS,
            0 as std::ffi::c_int,
            RD_KAFKA_VTYPE_VALUE,
            value,
            value_len,
            RD_KAFKA_VTYPE_KEY,
            key,
            key_len,
            RD_KAFKA_VTYPE_END,
        )
    };
    code.into()
}

/// Records whose values librdkafka reads in place. Dropped before they were `settled` (a
/// send that failed or timed out half way, a task cancelled at shutdown) while the
/// producer still has records in flight, it leaks them rather than free what librdkafka
/// may still read.
struct Lent {
    producer: KafkaProducer,
    records: Vec<OutRecord>,
    settled: bool,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if !self.settled && self.producer.in_flight_count() > 0 {
            let records = std::mem::take(&mut self.records);
            tracing::warn!(
                records = records.len(),
                "records still in flight after their send ended; their buffers are kept"
            );
            std::mem::forget(records);
        }
    }
}

/// Enqueues every record, waits until librdkafka has none left in flight (acknowledged
/// or failed: the count includes delivery reports not yet served) and fails if any
/// delivery failed meanwhile. A failure of a clone's concurrent records fails this call
/// too: a retry, never a loss. A full local queue is waited out, not failed.
///
/// In a transaction the wait is here rather than in `commit_transaction`, whose flush
/// (rust-rdkafka's) serves the delivery reports in slices of up to 100 ms; a failed
/// delivery would fail the commit too, and the transaction is aborted.
async fn send_all(
    producer: &KafkaProducer,
    records: Vec<OutRecord>,
    limit: Duration,
) -> Result<()> {
    let reports = producer.context();
    let failed_before = reports.failed.load(Ordering::Acquire);
    let count = records.len();
    let mut lent = Lent {
        producer: producer.clone(),
        records,
        settled: false,
    };
    let mut topics: HashMap<&str, CString> = HashMap::new();
    for r in &lent.records {
        let topic = match topics.entry(&r.topic) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                CString::new(r.topic.as_str())
                    .map_err(|_| Error::Bus(format!("topic name {:?} holds a NUL", r.topic)))?,
            ),
        };
        loop {
            // SAFETY: `lent` holds the record until nothing is in flight (or for ever).
            match unsafe { produce_borrowed(producer, topic, r) } {
                RDKafkaErrorCode::NoError => break,
                RDKafkaErrorCode::QueueFull => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                code => {
                    return Err(Error::kafka(
                        format!("producing to {}", r.topic),
                        KafkaError::MessageProduction(code),
                    ));
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + limit;
    while producer.in_flight_count() > 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Bus(format!(
                "{} records not delivered within {limit:?}",
                producer.in_flight_count()
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Nothing in flight: librdkafka has let go of every record of this send.
    lent.settled = true;
    drop(lent);
    let failed = reports.failed.load(Ordering::Acquire) - failed_before;
    if failed > 0 {
        let last = reports.last_failure.lock().expect("delivery lock").clone();
        return Err(Error::Bus(format!(
            "{failed} of {count} records not delivered; the last: {last}"
        )));
    }
    Ok(())
}

/// Idempotent, `acks=all` producer for stages that publish without consuming.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: KafkaProducer,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher").finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    pub fn new(bootstrap: &str) -> Result<Self> {
        let producer = create_producer(
            &producer_config(bootstrap),
            &format!("producer for {bootstrap}"),
        )?;
        Ok(Self { producer })
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<()> {
        send_all(&self.producer, records, SEND_TIMEOUT).await
    }
}

/// Settings of a [`KafkaBatchConsumer`].
#[derive(Debug, Clone)]
pub struct KafkaConsumerConfig {
    pub bootstrap: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// Unique per running processor instance.
    pub transactional_id: String,
    /// `group.instance.id` (static membership), if the instance has a stable name.
    pub instance_id: Option<String>,
    /// `false`: at-least-once (outputs produced, then offsets committed), only to measure
    /// what transactions cost.
    pub transactional: bool,
}

type Revoked = Arc<Mutex<Vec<(String, i32)>>>;
/// Consumer lag per assigned (topic, partition), from librdkafka's statistics.
type Lag = Arc<Mutex<Vec<(String, i32, i64)>>>;

/// Notes the partitions a rebalance takes away; librdkafka calls it inside `poll`, so
/// [`KafkaBatchConsumer::next_batch`] sees every revocation before the next record.
/// It also keeps the consumer lag from the statistics librdkafka reports every
/// `statistics.interval.ms`.
struct RebalanceTracker {
    revoked: Revoked,
    lag: Lag,
}

impl ClientContext for RebalanceTracker {
    /// Lag = last stable offset (what a read_committed consumer can reach) - the
    /// application's position (last record handed out + 1), per assigned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = Vec::new();
        for (topic, t) in &statistics.topics {
            for p in t.partitions.values() {
                if p.partition >= 0 && p.desired && p.ls_offset >= 0 && p.app_offset >= 0 {
                    lag.push((
                        topic.clone(),
                        p.partition,
                        (p.ls_offset - p.app_offset).max(0),
                    ));
                }
            }
        }
        lag.sort();
        *self.lag.lock().expect("lag lock") = lag;
    }
}

impl ConsumerContext for RebalanceTracker {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let parts: Vec<(String, i32)> = list
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            tracing::info!(partitions = ?parts, "partitions revoked");
            self.revoked.lock().expect("revoked lock").extend(parts);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let parts: Vec<(String, i32)> = list
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A consumer-group member whose micro-batches commit as Kafka transactions.
pub struct KafkaBatchConsumer {
    config: KafkaConsumerConfig,
    consumer: StreamConsumer<RebalanceTracker>,
    producer: KafkaProducer,
    revoked: Revoked,
    lag: Lag,
    /// Revocations seen and not yet reported by `take_revoked`.
    unreported: Vec<(String, i32)>,
    /// Next offset to commit per (topic, partition): last consumed + 1.
    positions: HashMap<(String, i32), i64>,
}

impl std::fmt::Debug for KafkaBatchConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBatchConsumer")
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl KafkaBatchConsumer {
    pub async fn new(config: &KafkaConsumerConfig) -> Result<Self> {
        let (revoked, lag) = (Revoked::default(), Lag::default());
        let (consumer, producer) = connect(config, Arc::clone(&revoked), Arc::clone(&lag)).await?;
        Ok(Self {
            config: config.clone(),
            consumer,
            producer,
            revoked,
            lag,
            unreported: Vec::new(),
            positions: HashMap::new(),
        })
    }

    fn offsets(&self) -> Result<TopicPartitionList> {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.positions {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| Error::kafka("building offset list", e))?;
        }
        Ok(offsets)
    }

    /// At-least-once: outputs first, then the offsets.
    async fn commit_plain(&mut self, outputs: Vec<OutRecord>) -> Result<()> {
        send_all(&self.producer, outputs, SEND_TIMEOUT).await?;
        let offsets = self.offsets()?;
        self.consumer
            .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| Error::kafka("committing offsets", e))
    }

    /// Begins a transaction and adds the offsets of everything handed out so far to it,
    /// then produces `outputs` and commits on a task of its own.
    ///
    /// The offsets go first, before this returns: the group checks them against this
    /// member's generation now, before the next poll can take part in a rebalance. Should
    /// a partition move while the rest is in flight, its next owner waits for this
    /// transaction (a `read_committed` consumer asks for stable offsets) rather than
    /// reading the same records again.
    async fn start_transaction(&mut self, outputs: Vec<OutRecord>) -> Result<PendingCommit> {
        let offsets = self.offsets()?;
        let metadata = self.consumer.group_metadata().ok_or_else(|| {
            Error::Bus("consumer has no group metadata (not in a consumer group yet)".into())
        })?;
        let producer = self.producer.clone();
        let begun = watched(TXN_WATCHDOG, "beginning transaction", move || {
            producer.begin_transaction()?;
            producer.send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT)
        })
        .await;
        if let Err(e) = begun {
            abort(&self.producer).await;
            return Err(e);
        }
        self.positions.clear();
        let producer = self.producer.clone();
        let task = tokio::spawn(async move {
            let mut result = send_all(&producer, outputs, TXN_TIMEOUT).await;
            if result.is_ok() {
                let p = producer.clone();
                result = watched(TXN_WATCHDOG, "committing transaction", move || {
                    p.commit_transaction(TXN_TIMEOUT)
                })
                .await;
            }
            if result.is_err() {
                abort(&producer).await;
            }
            result
        });
        Ok(Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(Error::Bus(format!("the commit task failed: {e}"))))
        }))
    }
}

/// Aborts the open transaction after a failure (what it reports is logged: the failure
/// that led here is the one to return).
async fn abort(producer: &KafkaProducer) {
    let producer = producer.clone();
    let aborted = watched(TXN_WATCHDOG, "aborting the failed transaction", move || {
        producer.abort_transaction(TXN_TIMEOUT)
    });
    if let Err(abort) = aborted.await {
        tracing::error!(error = %abort, "aborting the failed transaction also failed");
    }
}

/// Voids what was handed out from partitions revoked since the last look.
fn apply_revocations(
    revoked: &Revoked,
    positions: &mut HashMap<(String, i32), i64>,
    unreported: &mut Vec<(String, i32)>,
    batch: &mut Vec<Message>,
) {
    let revoked: Vec<(String, i32)> = std::mem::take(&mut *revoked.lock().expect("revoked lock"));
    if revoked.is_empty() {
        return;
    }
    batch.retain(|m| {
        !revoked
            .iter()
            .any(|(t, p)| *t == m.topic && *p == m.partition)
    });
    for tp in &revoked {
        positions.remove(tp);
    }
    unreported.extend(revoked);
}

/// Joins the group and initialises the transactional producer (which fences any earlier
/// producer with the same transactional id and aborts its open transaction).
async fn connect(
    config: &KafkaConsumerConfig,
    revoked: Revoked,
    lag: Lag,
) -> Result<(StreamConsumer<RebalanceTracker>, KafkaProducer)> {
    let mut client = ClientConfig::new();
    if let Some(id) = &config.instance_id {
        client.set("group.instance.id", id);
    }
    let consumer: StreamConsumer<RebalanceTracker> = client
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        // Prefetch: small fetches, refilled 5 ms (not librdkafka's default 1 s) after
        // the queue was full. A fetched record keeps its whole fetch response alive, so
        // the fetch size sets the memory. 16 MB fetches and a 32 MB queue against 2 MB
        // and 4 MB, over 2M records in one build: the processor 85k-86k vs 102k-103k
        // records/s and 510-512 vs 304-316 MiB peak RSS; the passthrough 205-209 vs
        // 83-86 MiB at the same rate. Without the short backoff, bounded queues cut the
        // passthrough from 239k to 98k records/s.
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.queue.backoff.ms", "5")
        .set("fetch.max.bytes", "2097152")
        .set("max.partition.fetch.bytes", "524288")
        .set("statistics.interval.ms", "5000")
        .create_with_context(RebalanceTracker { revoked, lag })
        .map_err(|e| Error::kafka(format!("creating consumer for {}", config.bootstrap), e))?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| Error::kafka(format!("subscribing to {topics:?}"), e))?;

    let mut settings = producer_config(&config.bootstrap);
    if !config.transactional {
        return Ok((consumer, create_producer(&settings, "producer")?));
    }
    settings
        .set("transactional.id", &config.transactional_id)
        .set("transaction.timeout.ms", "120000")
        // Until the coordinator has written the last commit's markers it answers the next
        // transaction's AddOffsetsToTxn (`send_offsets_to_transaction`, before the batch's
        // records are sent) with CONCURRENT_TRANSACTIONS, which librdkafka retries after
        // retry.backoff.ms: by default 100 ms, which up to one batch in ten waited at
        // 20,000 records/s (AddPartitionsToTxn has its own 20 ms for that case). The backoff
        // still doubles on repeated failures, up to retry.backoff.max.ms.
        .set("retry.backoff.ms", "10");
    let producer = create_producer(&settings, "transactional producer")?;
    let p = producer.clone();
    blocking(move || p.init_transactions(TXN_TIMEOUT))
        .await
        .map_err(|e| {
            Error::kafka(
                format!("initialising transactions as {}", config.transactional_id),
                e,
            )
        })?;
    Ok((consumer, producer))
}

/// Runs a blocking transactional call on tokio's blocking pool and gives up waiting after
/// `limit`: a (retryable) error then, the call's thread left behind. The caller's recovery
/// rejoins with a new producer, whose `init_transactions` fences the stuck one and aborts
/// its transaction.
async fn watched<T: Send + 'static>(
    limit: Duration,
    what: &'static str,
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T> {
    match tokio::time::timeout(limit, blocking(f)).await {
        Ok(result) => result.map_err(|e| Error::kafka(what, e)),
        Err(_) => {
            tracing::error!(
                what,
                after = ?limit,
                "librdkafka did not return from a transactional call; giving it up"
            );
            Err(Error::Bus(format!(
                "{what}: librdkafka did not return within {limit:?}"
            )))
        }
    }
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "a blocking Kafka call panicked or was cancelled");
            Err(KafkaError::Canceled)
        }
    }
}

#[async_trait]
impl BatchConsumer for KafkaBatchConsumer {
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Option<Vec<Message>>> {
        let deadline = tokio::time::Instant::now() + limits.max_wait;
        let mut batch = Vec::new();
        while batch.len() < limits.max_records {
            let until = limits.wait_until(deadline, batch.len());
            let m = match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    // librdkafka reconnects and refetches by itself; a consumer error (a
                    // broker going away, say) is reported and waited out.
                    tracing::warn!(error = %e, "consumer error; waiting for the broker");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            // A rebalance runs inside recv(): what came before it from a revoked partition
            // is void; this record is from the new assignment.
            apply_revocations(
                &self.revoked,
                &mut self.positions,
                &mut self.unreported,
                &mut batch,
            );
            self.positions
                .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            batch.push(Message {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            });
        }
        // A rebalance can also run inside the wait that closes the batch (a `recv` that
        // times out after serving it): what it revoked must not leave with the batch. Its
        // offsets would otherwise be committed under the group's new generation, which
        // the broker accepts, while the partition's new owner reads the same records
        // again from the old committed offset. No rebalance runs between here and the
        // commit: librdkafka serves them only inside `recv`.
        apply_revocations(
            &self.revoked,
            &mut self.positions,
            &mut self.unreported,
            &mut batch,
        );
        Ok(Some(batch))
    }

    async fn commit(&mut self, outputs: Vec<OutRecord>) -> Result<()> {
        self.start_commit(outputs).await?.await
    }

    /// Transactions run in the background; `--no-transactions` commits in line.
    async fn start_commit(&mut self, outputs: Vec<OutRecord>) -> Result<PendingCommit> {
        if self.positions.is_empty() && outputs.is_empty() {
            return Ok(completed());
        }
        if !self.config.transactional {
            self.commit_plain(outputs).await?;
            self.positions.clear();
            return Ok(completed());
        }
        self.start_transaction(outputs).await
    }

    fn take_revoked(&mut self) -> Vec<(String, i32)> {
        std::mem::take(&mut self.unreported)
    }

    fn lag(&self) -> Option<Vec<(String, i32, i64)>> {
        Some(self.lag.lock().expect("lag lock").clone())
    }

    /// Leaves the group and joins again with a new transactional producer: the group
    /// hands out the partitions from their committed offsets, and the new producer's
    /// initialisation aborts whatever the failed one left open. Retries until it works.
    async fn recover(&mut self) -> Result<()> {
        self.positions.clear();
        self.unreported.clear();
        let mut backoff = Duration::from_millis(500);
        loop {
            // The new consumer gets lists of its own. The old one is closed below, while
            // the new one already hands out records, and closing revokes its whole
            // assignment: in a shared list, the old consumer's revocations would void
            // records the new one handed out, and drop the state restored for them.
            let (revoked, lag) = (Revoked::default(), Lag::default());
            match connect(&self.config, Arc::clone(&revoked), Arc::clone(&lag)).await {
                Ok((consumer, producer)) => {
                    let old_consumer = std::mem::replace(&mut self.consumer, consumer);
                    let old_producer = std::mem::replace(&mut self.producer, producer);
                    (self.revoked, self.lag) = (revoked, lag);
                    // Closing may wait for the broker; it must not hold up the runtime.
                    tokio::task::spawn_blocking(move || drop((old_consumer, old_producer)));
                    tracing::info!("rejoined the consumer group after a failed transaction");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "reconnecting to Kafka failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
    }
}

/// Reads changelog partitions with a group-less `read_committed` consumer.
#[derive(Debug, Clone)]
pub struct KafkaChangelogReader {
    pub bootstrap: String,
    pub topic: String,
}

/// Longest a changelog restore may take before the batch fails (and is retried).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

#[async_trait]
impl ChangelogReader for KafkaChangelogReader {
    async fn read(&self, partition: i32) -> Result<Vec<ChangelogRecord>> {
        let (bootstrap, topic) = (self.bootstrap.clone(), self.topic.clone());
        let context = format!("restoring state from {topic} partition {partition}");
        blocking(move || read_changelog(&bootstrap, &topic, partition))
            .await
            .map_err(|e| Error::kafka(context, e))
    }
}

/// Reads a changelog partition to its end: every record committed up to the last one
/// written, not only up to the last stable offset.
///
/// Whoever owned the partition before may have a transaction whose commit (or abort) is
/// decided but whose marker has not yet reached this partition. The offsets it committed
/// can already be visible (they are written to another partition), so this owner may be
/// restoring right then; under `read_committed` the partition would end at that
/// transaction's first record, and the state would miss its last batch. So the read waits
/// until the last stable offset has caught up with the high watermark as it was when the
/// restore began: then nothing is undecided below it.
fn read_changelog(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<ChangelogRecord>, KafkaError> {
    let client = |isolation: &str| -> Result<BaseConsumer, KafkaError> {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "contrail-changelog-restore")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
    };
    let consumer = client("read_committed")?;
    // Watermarks are asked for at the client's isolation level: the high one is the last
    // stable offset for `consumer`, the end of the log for `uncommitted`.
    let uncommitted = client("read_uncommitted")?;
    let deadline = std::time::Instant::now() + RESTORE_TIMEOUT;
    let wait = Duration::from_secs(30);
    // The end as the restore begins: transactions that write here later are not waited
    // for (the window merger's state shares a partition with a raw partition's, and its
    // owner may be another processor, committing all the time).
    let (low, high) = uncommitted.fetch_watermarks(topic, partition, wait)?;
    loop {
        let (_, stable) = consumer.fetch_watermarks(topic, partition, wait)?;
        if stable >= high {
            break;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                topic,
                partition,
                stable,
                end = high,
                "changelog partition has a transaction still open"
            );
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(uncommitted);
    let mut out = Vec::new();
    if high <= low {
        return Ok(out);
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&list)?;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(out),
            Some(Err(e)) => {
                tracing::warn!(error = %e, topic, partition, "while restoring state");
            }
            Some(Ok(m)) => {
                out.push((
                    m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    m.payload().map(<[u8]>::to_vec),
                ));
                if m.offset() + 1 >= high {
                    return Ok(out);
                }
            }
        }
    }
    Err(KafkaError::MessageConsumption(
        RDKafkaErrorCode::OperationTimedOut,
    ))
}

/// Number of partitions of `topic`.
pub async fn partition_count(bootstrap: &str, topic: &str) -> Result<i32> {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &b).create()?;
        let metadata = consumer.fetch_metadata(Some(&t), Duration::from_secs(30))?;
        Ok(metadata
            .topics()
            .first()
            .filter(|m| m.error().is_none())
            .map_or(0, |m| m.partitions().len() as i32))
    })
    .await
    .map_err(|e| Error::kafka(format!("reading metadata of {topic}"), e))
    .and_then(|n| {
        if n == 0 {
            Err(Error::Config(format!(
                "topic {topic} does not exist (run `contrail topics create`)"
            )))
        } else {
            Ok(n)
        }
    })
}

/// A topic to create: name, partitions, and whether it is a compacted changelog.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

/// What happened to each topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| Error::kafka(format!("creating admin client for {bootstrap}"), e))
}

/// How long the admin calls below wait for the broker.
fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Creates the topics; one that exists already is left as it is.
pub async fn create_topics(
    bootstrap: &str,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<(String, TopicOutcome)>> {
    let admin = admin(bootstrap)?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication));
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let results = admin
        .create_topics(&new_topics, &admin_options())
        .await
        .map_err(|e| Error::kafka("creating topics", e))?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => Ok((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                Ok((name, TopicOutcome::AlreadyExisted))
            }
            Err((name, code)) => Err(Error::Bus(format!("creating topic {name}: {code}"))),
        })
        .collect()
}

/// What [`delete_topics`] did with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// There was no such topic.
    Absent,
}

/// Deletes the topics; one that does not exist is reported, not an error.
pub async fn delete_topics(bootstrap: &str, names: &[&str]) -> Result<Vec<(String, Deletion)>> {
    let admin = admin(bootstrap)?;
    let results = admin
        .delete_topics(names, &admin_options())
        .await
        .map_err(|e| Error::kafka("deleting topics", e))?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => Ok((name, Deletion::Deleted)),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => Ok((name, Deletion::Absent)),
            Err((name, code)) => Err(Error::Bus(format!("deleting topic {name}: {code}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transactional_call_that_never_returns_fails_the_batch_in_time() {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let r = watched(Duration::from_millis(200), "sending offsets", move || {
            // Stands for librdkafka waiting on a condition variable with no deadline.
            let _ = stuck.recv();
            Ok(())
        })
        .await;
        let e = r.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("sending offsets"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(release);

        let ok = watched(Duration::from_secs(5), "committing", || Ok(7)).await;
        assert_eq!(ok.unwrap(), 7);
        let failed = watched(Duration::from_secs(5), "committing", || {
            Err::<(), _>(KafkaError::Canceled)
        })
        .await;
        assert!(failed.unwrap_err().to_string().contains("committing"));
    }
}
