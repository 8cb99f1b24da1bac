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
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{BatchConsumer, Message, OutRecord, Publisher};
use crate::error::{Error, Result};

/// How long a transactional call may wait for the broker before the batch fails.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// Producer settings shared by the idempotent and the transactional producer.
fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        // Keys are icao24: Java's partitioner, so every client puts an aircraft on one partition.
        .set("partitioner", "murmur2_random");
    c
}

/// Sends one record, waiting for queue space instead of failing when librdkafka's local
/// queue is full. Returns the delivery future.
async fn enqueue(
    producer: &FutureProducer,
    record: &OutRecord,
) -> Result<rdkafka::producer::DeliveryFuture> {
    loop {
        let mut fr = FutureRecord::to(&record.topic).payload(&record.payload);
        if let Some(k) = &record.key {
            fr = fr.key(k);
        }
        match producer.send_result(fr) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(Error::kafka(format!("producing to {}", record.topic), e)),
        }
    }
}

/// Enqueues every record, then waits for every acknowledgement.
async fn send_all(producer: &FutureProducer, records: &[OutRecord]) -> Result<()> {
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        deliveries.push(enqueue(producer, r).await?);
    }
    for (result, record) in join_all(deliveries).await.into_iter().zip(records) {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(Error::kafka(format!("delivery to {}", record.topic), e));
            }
            Err(_canceled) => {
                return Err(Error::Bus(format!(
                    "producer closed before delivery to {}",
                    record.topic
                )));
            }
        }
    }
    Ok(())
}

/// Idempotent, `acks=all` producer for stages that publish without consuming.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher").finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    pub fn new(bootstrap: &str) -> Result<Self> {
        let producer = producer_config(bootstrap)
            .create()
            .map_err(|e| Error::kafka(format!("creating producer for {bootstrap}"), e))?;
        Ok(Self { producer })
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<()> {
        send_all(&self.producer, &records).await
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
}

/// A consumer-group member whose micro-batches commit as Kafka transactions.
pub struct KafkaBatchConsumer {
    consumer: StreamConsumer,
    producer: FutureProducer,
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
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("queued.min.messages", "200000")
            .set("fetch.max.bytes", "104857600")
            .set("max.partition.fetch.bytes", "16777216")
            .create()
            .map_err(|e| Error::kafka(format!("creating consumer for {}", config.bootstrap), e))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| Error::kafka(format!("subscribing to {topics:?}"), e))?;

        let producer: FutureProducer = producer_config(&config.bootstrap)
            .set("transactional.id", &config.transactional_id)
            .set("transaction.timeout.ms", "120000")
            .create()
            .map_err(|e| Error::kafka("creating transactional producer", e))?;
        let p = producer.clone();
        blocking(move || p.init_transactions(TXN_TIMEOUT))
            .await
            .map_err(|e| {
                Error::kafka(
                    format!("initialising transactions as {}", config.transactional_id),
                    e,
                )
            })?;
        Ok(Self {
            consumer,
            producer,
            positions: HashMap::new(),
        })
    }

    async fn commit_transaction(&mut self, outputs: &[OutRecord]) -> Result<()> {
        let producer = self.producer.clone();
        blocking(move || producer.begin_transaction())
            .await
            .map_err(|e| Error::kafka("beginning transaction", e))?;
        send_all(&self.producer, outputs).await?;

        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.positions {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| Error::kafka("building offset list", e))?;
        }
        let metadata = self.consumer.group_metadata().ok_or_else(|| {
            Error::Bus("consumer has no group metadata (not in a consumer group yet)".into())
        })?;
        let producer = self.producer.clone();
        blocking(move || {
            producer.send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT)?;
            producer.commit_transaction(TXN_TIMEOUT)
        })
        .await
        .map_err(|e| Error::kafka("committing transaction", e))
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
    async fn next_batch(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<Vec<Message>>> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut batch = Vec::new();
        while batch.len() < max_records {
            let m = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(Error::kafka("consuming", e)),
                Ok(Ok(m)) => m,
            };
            self.positions
                .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            batch.push(Message {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            });
        }
        Ok(Some(batch))
    }

    async fn commit(&mut self, outputs: Vec<OutRecord>) -> Result<()> {
        if self.positions.is_empty() && outputs.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.commit_transaction(&outputs).await {
            let producer = self.producer.clone();
            if let Err(abort) = blocking(move || producer.abort_transaction(TXN_TIMEOUT)).await {
                tracing::error!(error = %abort, "aborting the failed transaction also failed");
            }
            return Err(e);
        }
        self.positions.clear();
        Ok(())
    }
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

/// Creates the topics; one that exists already is left as it is.
pub async fn create_topics(
    bootstrap: &str,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<(String, TopicOutcome)>> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| Error::kafka(format!("creating admin client for {bootstrap}"), e))?;
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
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
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
