//! The Kafka ceiling for `scripts/bench`: moves the raw topic's records to another topic
//! with no processing at all, through the same consumer, micro-batches and transactions as
//! `contrail process` (one transaction per batch holding the copies and the offsets). What
//! the pipeline reaches, divided by what this reaches, is how much of the broker's
//! capacity the processing leaves.
//!
//! `cargo run --release --example passthrough -- BOOTSTRAP RAW_TOPIC OUT_TOPIC GROUP N`
//! exits once N records were copied and prints `records_per_s=` from the first record.

use std::time::{Duration, Instant};

use contrail::bus::kafka::{KafkaBatchConsumer, KafkaConsumerConfig};
use contrail::bus::{BatchConsumer, BatchLimits, OutRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, raw, out, group, n] = args.as_slice() else {
        return Err("usage: passthrough BOOTSTRAP RAW_TOPIC OUT_TOPIC GROUP N".into());
    };
    let n: u64 = n.parse().map_err(|_| format!("N: not a number: {n}"))?;
    let mut consumer = KafkaBatchConsumer::new(&KafkaConsumerConfig {
        bootstrap: bootstrap.clone(),
        group_id: group.clone(),
        topics: vec![raw.clone()],
        transactional_id: format!("{group}-passthrough"),
        instance_id: None,
        transactional: true,
    })
    .await?;
    let (mut copied, mut first) = (0u64, None);
    while copied < n {
        let Some(batch) = consumer
            .next_batch(BatchLimits::new(20_000, Duration::from_millis(500)))
            .await?
        else {
            break;
        };
        if batch.is_empty() {
            continue;
        }
        first.get_or_insert_with(Instant::now);
        copied += batch.len() as u64;
        let outputs = batch
            .into_iter()
            .map(|m| OutRecord::new(out, m.key, m.payload))
            .collect();
        consumer.commit(outputs).await?;
    }
    let secs = first.map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64());
    println!(
        "passthrough copied={copied} records_per_s={}",
        (copied as f64 / secs) as u64
    );
    Ok(())
}
