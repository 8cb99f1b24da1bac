//! The processor's transactions against a real Apache Kafka broker, through the library:
//! records are produced inside a transaction without awaiting each acknowledgement, so a
//! record the broker refuses must still fail the commit, void the batch's outputs and
//! leave its offsets uncommitted.
//!
//! Needs a broker (`KAFKA_BOOTSTRAP`, default 127.0.0.1:9092); `scripts/test` starts one
//! and runs the ignored tests.

mod common;

use std::time::Duration;

use common::{bootstrap, committed, read_all};
use contrail::bus::kafka::{KafkaBatchConsumer, KafkaConsumerConfig};
use contrail::bus::{BatchConsumer, OutRecord};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The output topic takes records of at most this many bytes (its `max.message.bytes`).
const OUTPUT_LIMIT: usize = 4_096;

async fn create(topics: &[(&str, Option<&str>)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, max_bytes)| {
            let t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
            match max_bytes {
                Some(m) => t.set("max.message.bytes", m),
                None => t,
            }
        })
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// Bytes LZ4 cannot shrink (a xorshift stream), so the compressed batch stays too large.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs Apache Kafka: run scripts/test"]
async fn a_record_the_broker_refuses_voids_the_transaction() {
    let sfx = std::process::id();
    let (raw, out, group) = (
        format!("txn-raw-{sfx}"),
        format!("txn-out-{sfx}"),
        format!("txn-group-{sfx}"),
    );
    let limit = OUTPUT_LIMIT.to_string();
    create(&[(&raw, None), (&out, Some(&limit))]).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    for i in 0..3 {
        producer
            .send(
                FutureRecord::<(), _>::to(&raw).payload(&format!("raw {i}")),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }

    let mut consumer = KafkaBatchConsumer::new(&KafkaConsumerConfig {
        bootstrap: bootstrap(),
        group_id: group.clone(),
        topics: vec![raw.clone()],
        transactional_id: format!("txn-test-{sfx}"),
        instance_id: None,
        transactional: true,
    })
    .await
    .unwrap();
    let read = |batch: Option<Vec<contrail::bus::Message>>| {
        batch
            .unwrap()
            .into_iter()
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    let expected = vec!["raw 0", "raw 1", "raw 2"];
    let batch = consumer
        .next_batch(3, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(read(batch), expected);

    // The first record fits, the second is over the topic's limit: the broker refuses it
    // once the transaction has begun, so only the commit can report it.
    let outputs = vec![
        OutRecord::new(&out, None, b"fits".to_vec()),
        OutRecord::new(&out, None, incompressible(4 * OUTPUT_LIMIT)),
    ];
    let error = consumer.commit(outputs).await.unwrap_err().to_string();
    assert!(error.contains("committing transaction"), "{error}");
    assert!(
        read_all(&out).is_empty(),
        "the voided outputs are not readable"
    );
    assert_eq!(committed(&group, &raw), 0, "the offsets were not committed");

    // The batch comes back, and commits once its outputs fit.
    consumer.recover().await.unwrap();
    let batch = consumer
        .next_batch(3, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(read(batch), expected);
    consumer
        .commit(vec![OutRecord::new(&out, None, b"fits".to_vec())])
        .await
        .unwrap();
    let published: Vec<Vec<u8>> = read_all(&out)
        .iter()
        .map(|m| m.payload().unwrap().to_vec())
        .collect();
    assert_eq!(published, vec![b"fits".to_vec()]);
    assert_eq!(committed(&group, &raw), 3);
}
