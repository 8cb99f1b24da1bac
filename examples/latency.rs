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
        // A fetch returns as soon as committed records are there; the wait only bounds an
        // empty one. 5 ms made the probe itself cost the broker 0.08-0.16 of the two cores
        // at 20k records/s (2026-12-02, benches/REPORT.md, fourteenth round).
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&[topic.as_str()])?;
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
    // Per record: ingest -> arrival, and its two parts, split at `processing_timestamp`
    // (the time its micro-batch began processing): ingest -> processing (ingest's publish,
    // the processor's fetch, the batch's wait to close) and processing -> arrival (the
    // stage, the transaction, this reader's fetch).
    let (mut total, mut before, mut after) = (Vec::new(), Vec::new(), Vec::new());
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
        let (Some(ingested), Some(processing)) = (
            timestamp(payload, "ingest_timestamp"),
            timestamp(payload, "processing_timestamp"),
        ) else {
            return Err(format!(
                "a processed record without ingest_timestamp or processing_timestamp: {}",
                String::from_utf8_lossy(payload)
            )
            .into());
        };
        let ms = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
            (to - from).num_microseconds().unwrap_or(0) as f64 / 1e3
        };
        total.push(ms(ingested, arrived));
        before.push(ms(ingested, processing));
        after.push(ms(processing, arrived));
    }
    if total.is_empty() {
        return Err("no processed record arrived".into());
    }
    let percentiles = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        format!(
            "p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            at(0.5),
            at(0.9),
            at(0.99),
            v[v.len() - 1]
        )
    };
    println!(
        "latency records={} records_per_s={:.0} {}",
        total.len(),
        total.len() as f64 / seconds,
        percentiles(&mut total)
    );
    println!("  ingest -> processing: {}", percentiles(&mut before));
    println!("  processing -> arrival: {}", percentiles(&mut after));
    Ok(())
}

/// The RFC 3339 timestamp of a top-level string field of a processed record, found by
/// its key (the encoder writes each key once, without escapes), so that reading a
/// record takes well under a microsecond and the probe does not delay its own stamps.
fn timestamp(payload: &[u8], key: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = start + text[start..].find('"')?;
    chrono::DateTime::parse_from_rfc3339(&text[start..end])
        .ok()
        .map(|t| t.to_utc())
}
