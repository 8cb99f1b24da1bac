//! End-to-end latency for `scripts/bench-latency`: reads `flight-processed-data` as a
//! `read_committed` consumer from its end for a while and, for every record that arrives,
//! takes arrival time - the record's `ingest_timestamp` (set by ingest when it published
//! the raw record). Prints the count, the rate and p50/p90/p99/max in milliseconds.
//!
//! `cargo run --release --example latency -- BOOTSTRAP PROCESSED_TOPIC SECONDS [WARMUP_SECONDS]`

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bootstrap, topic, seconds, warmup) = match args.as_slice() {
        [b, t, s] => (b, t, s.parse::<f64>()?, 0.0),
        [b, t, s, w] => (b, t, s.parse::<f64>()?, w.parse::<f64>()?),
        _ => {
            return Err("usage: latency BOOTSTRAP PROCESSED_TOPIC SECONDS [WARMUP_SECONDS]".into());
        }
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("contrail-latency-{}", std::process::id()),
        )
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    consumer.subscribe(&[topic.as_str()])?;
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let mut latencies_ms: Vec<f64> = Vec::new();
    while Instant::now() < end {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let arrived = chrono::Utc::now();
        if Instant::now() < measure_from {
            continue;
        }
        let Some(payload) = m.payload() else { continue };
        let v: serde_json::Value = serde_json::from_slice(payload)?;
        let Some(ingested) = v["ingest_timestamp"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        else {
            return Err(format!("a processed record without ingest_timestamp: {v}").into());
        };
        latencies_ms.push(
            (arrived - ingested.to_utc())
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1e3,
        );
    }
    if latencies_ms.is_empty() {
        return Err("no processed record arrived".into());
    }
    latencies_ms.sort_by(f64::total_cmp);
    let at = |p: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "latency records={} records_per_s={:.0} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        latencies_ms.len(),
        latencies_ms.len() as f64 / seconds,
        at(0.5),
        at(0.9),
        at(0.99),
        latencies_ms[latencies_ms.len() - 1]
    );
    Ok(())
}
