//! Prometheus text exposition (format 0.0.4) of Contrail's counters, written by hand: a
//! few dozen series do not need a metrics library. `/metrics` on each process's HTTP port
//! serves what that process has: ingest and OpenSky counters, process-stage counters, the
//! live store's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::ingest::IngestStats;
use crate::pipeline::ProcessStats;
use crate::query::store::LiveStore;

/// Upper bounds of a histogram's buckets (`+Inf` is implied).
pub trait Buckets {
    const BOUNDS: &'static [f64];
}

/// Records per micro-batch.
#[derive(Debug)]
pub struct RecordBuckets;
impl Buckets for RecordBuckets {
    const BOUNDS: &'static [f64] = &[
        1.0, 10.0, 100.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0,
    ];
}

/// Seconds, from a millisecond to a minute.
#[derive(Debug)]
pub struct SecondBuckets;
impl Buckets for SecondBuckets {
    const BOUNDS: &'static [f64] = &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
}

/// A Prometheus histogram, updated without locks.
#[derive(Debug)]
pub struct Histogram<B: Buckets> {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    /// The sum of observations, as f64 bits.
    sum: AtomicU64,
    _buckets: std::marker::PhantomData<B>,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Self {
            counts: (0..=B::BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            _buckets: std::marker::PhantomData,
        }
    }
}

impl<B: Buckets> Histogram<B> {
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    pub fn observe(&self, v: f64) {
        let i = B::BOUNDS.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

impl<B: Buckets> Histogram<B> {
    /// Many observations at once: one atomic add per bucket touched, not per value.
    pub fn observe_all(&self, values: impl IntoIterator<Item = f64>) {
        let mut counts = vec![0u64; B::BOUNDS.len() + 1];
        let mut sum = 0.0;
        for v in values {
            counts[B::BOUNDS.partition_point(|b| *b < v)] += 1;
            sum += v;
        }
        for (c, n) in self.counts.iter().zip(counts) {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + sum).to_bits())
            });
    }
}

/// Counters by a set of label values (reason codes; gRPC method and code).
#[derive(Debug, Default)]
pub struct Counts(Mutex<BTreeMap<Vec<String>, u64>>);

impl Counts {
    pub fn add(&self, labels: &[&str], n: u64) {
        if n == 0 {
            return;
        }
        let key = labels.iter().map(ToString::to_string).collect();
        *self.0.lock().expect("counts lock").entry(key).or_default() += n;
    }

    /// The count for exactly these label values (0 when never counted).
    pub fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(ToString::to_string).collect();
        self.0
            .lock()
            .expect("counts lock")
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    pub fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        let m = self.0.lock().expect("counts lock");
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// What a process adds to its `/metrics` page.
pub type MetricsFn = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// A page of metrics being written.
#[derive(Default)]
pub struct Exposition(String);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A counter (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    /// A counter with one label.
    pub fn counter_by(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.head(name, "counter", help);
        for (v, n) in values {
            self.sample(name, &[(label, v)], *n as f64);
        }
    }

    /// A counter with several labels, one sample per set of label values.
    pub fn counter_labelled(&mut self, name: &str, help: &str, labels: &[&str], c: &Counts) {
        self.head(name, "counter", help);
        for (values, n) in c.snapshot() {
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            self.sample(name, &pairs, n as f64);
        }
    }

    /// A gauge with several labels.
    pub fn gauge_labelled(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Vec<(&str, String)>, f64)],
    ) {
        self.head(name, "gauge", help);
        for (labels, v) in samples {
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &pairs, *v);
        }
    }

    pub fn histogram<B: Buckets>(&mut self, name: &str, help: &str, h: &Histogram<B>) {
        self.head(name, "histogram", help);
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += get(c);
            let le = B::BOUNDS.get(i).map_or("+Inf".to_string(), f64::to_string);
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), &[], h.sum());
        self.sample(&format!("{name}_count"), &[], cumulative as f64);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.head(name, "gauge", help);
        self.sample(name, &[], value);
    }

    pub fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            self.0,
        )
            .into_response()
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The ingest stage's counters.
pub fn ingest(e: &mut Exposition, s: &IngestStats) {
    e.counter(
        "contrail_ingest_read_total",
        "Records read from the source.",
        get(&s.read),
    );
    e.counter(
        "contrail_ingest_published_total",
        "Valid records published to the raw topic.",
        get(&s.published),
    );
    e.counter(
        "contrail_ingest_duplicates_total",
        "Repeated reports dropped (same icao24 and last_contact).",
        get(&s.duplicates),
    );
    let rejected = s.rejected.lock().expect("stats lock").clone();
    let by: Vec<(&str, u64)> = rejected.iter().map(|(k, v)| (*k, *v)).collect();
    e.counter_by(
        "contrail_ingest_dead_lettered_total",
        "Records sent to the dead-letter topic, by reason code.",
        "reason",
        &by,
    );
}

/// The OpenSky source's counters, from its health JSON.
pub fn source(e: &mut Exposition, health: &serde_json::Value) {
    let n = |k: &str| health.get(k).and_then(serde_json::Value::as_u64);
    if let Some(v) = n("polls") {
        e.counter(
            "contrail_opensky_polls_total",
            "Successful OpenSky polls.",
            v,
        );
    }
    if let Some(kinds) = health
        .get("failures_by_kind")
        .and_then(serde_json::Value::as_object)
    {
        let by: Vec<(&str, u64)> = kinds
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_u64()?)))
            .collect();
        e.counter_by(
            "contrail_opensky_failures_total",
            "Failed OpenSky polls, by kind.",
            "kind",
            &by,
        );
    }
    if let Some(v) = n("unchanged") {
        e.counter(
            "contrail_opensky_unchanged_total",
            "States skipped because they had not changed since the previous poll.",
            v,
        );
    }
    if let Some(v) = health
        .get("credits_remaining")
        .and_then(serde_json::Value::as_f64)
    {
        e.gauge(
            "contrail_opensky_credits_remaining",
            "API credits left, from X-Rate-Limit-Remaining.",
            v,
        );
    }
}

/// The process stage's counters.
pub fn process(e: &mut Exposition, s: &ProcessStats) {
    for (name, help, c) in [
        (
            "contrail_process_consumed_total",
            "Raw records consumed.",
            &s.consumed,
        ),
        (
            "contrail_process_processed_total",
            "Records written to the processed topic.",
            &s.processed,
        ),
        (
            "contrail_process_anomalies_total",
            "Records scored as anomalies.",
            &s.anomalies,
        ),
        (
            "contrail_process_batches_total",
            "Micro-batches processed.",
            &s.batches,
        ),
        (
            "contrail_process_windows_total",
            "Global windows emitted.",
            &s.windows,
        ),
        (
            "contrail_process_aircraft_windows_total",
            "Per-aircraft windows emitted.",
            &s.aircraft_windows,
        ),
        (
            "contrail_process_archive_files_total",
            "Parquet files written.",
            &s.archive_files,
        ),
        (
            "contrail_process_archive_files_promoted_on_restore_total",
            "Staged Parquet files of a committed batch moved into place when its partition was taken over.",
            &s.archive_files_promoted_on_restore,
        ),
        (
            "contrail_process_uncommitted_archive_files_removed_total",
            "Staged or temporary Parquet files of batches that never committed, removed.",
            &s.uncommitted_files_removed,
        ),
        (
            "contrail_process_model_reloads_total",
            "Model files swapped in while running.",
            &s.model_reloads,
        ),
        (
            "contrail_process_model_rejections_total",
            "Model files rejected while running.",
            &s.model_rejections,
        ),
        (
            "contrail_process_sql_reloads_total",
            "sql/*.sql edits swapped in while running.",
            &s.sql_reloads,
        ),
        (
            "contrail_process_sql_rejections_total",
            "sql/*.sql edits rejected while running.",
            &s.sql_rejections,
        ),
    ] {
        e.counter(name, help, get(c));
    }
    e.counter_labelled(
        "contrail_process_dead_lettered_total",
        "Records the process stage sent to the dead-letter topic, by reason code.",
        &["reason"],
        &s.dead_lettered_by,
    );
    e.counter_by(
        "contrail_process_late_total",
        "Late input, by reason: records behind their partition's watermark, records whose \
         event time is too far ahead to count (both also on the late topic) and window partials \
         that arrived after their window closed.",
        "reason",
        &[
            ("behind_watermark", get(&s.late)),
            ("ahead", get(&s.ahead)),
            ("late_partial", get(&s.late_partials)),
        ],
    );
    e.histogram(
        "contrail_process_latency_seconds",
        "End-to-end latency: from a record's ingest_timestamp to the commit of its processed \
         record.",
        &s.latency,
    );
    let lag = s.lag.lock().expect("lag lock").clone();
    let samples: Vec<_> = lag
        .into_iter()
        .map(|(topic, partition, lag)| {
            (
                vec![("topic", topic), ("partition", partition.to_string())],
                lag as f64,
            )
        })
        .collect();
    e.gauge_labelled(
        "contrail_process_consumer_lag",
        "Records not yet consumed per assigned partition (high watermark - position), after \
         the last micro-batch.",
        &samples,
    );
    e.histogram(
        "contrail_process_batch_records",
        "Raw records per micro-batch.",
        &s.batch_records,
    );
    e.histogram(
        "contrail_process_batch_seconds",
        "Time to process and commit one micro-batch (SQL, scoring, windows, archive, transaction).",
        &s.batch_seconds,
    );
    e.histogram(
        "contrail_process_stage_seconds",
        "Time to process one micro-batch until its records are ready to commit (decode, SQL, \
         scoring, windows, archive files written and synced).",
        &s.stage_seconds,
    );
    e.histogram(
        "contrail_process_commit_seconds",
        "Time to commit one micro-batch, from the commit's start to its end (Kafka: the \
         transaction's offsets, records and commit); it overlaps the next batch's processing.",
        &s.commit_seconds,
    );
    e.histogram(
        "contrail_process_poll_seconds",
        "Time the stage waited for the bus to hand out the next micro-batch (long waits: the \
         input is the limit, not the stage).",
        &s.poll_seconds,
    );
    e.histogram(
        "contrail_process_commit_wait_seconds",
        "Time the stage waited, after processing a micro-batch, for the previous batch's \
         commit to end and this one's to begin (long waits: the commit is the limit).",
        &s.commit_wait_seconds,
    );
}

/// gRPC requests by method and status code.
pub fn grpc(e: &mut Exposition, s: &crate::query::counting::GrpcStats) {
    e.counter_labelled(
        "contrail_grpc_requests_total",
        "gRPC requests by method and status code.",
        &["method", "code"],
        &s.requests,
    );
}

/// The live store's counters and sizes.
pub fn store(e: &mut Exposition, s: &LiveStore) {
    e.counter(
        "contrail_store_states_total",
        "Processed states the live store took in.",
        get(&s.states),
    );
    e.counter(
        "contrail_store_rejected_total",
        "Output-topic payloads the live store could not read.",
        get(&s.rejected),
    );
    e.gauge(
        "contrail_store_aircraft",
        "Aircraft held in the live store.",
        s.aircraft_count() as f64,
    );
    e.gauge(
        "contrail_store_ready",
        "1 when the live store has read what the topics held at start.",
        f64::from(u8::from(s.is_ready())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::<RecordBuckets>::default();
        for v in [1.0, 5.0, 100.0, 30_000.0, 90_000.0] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        e.histogram("h", "H.", &h);
        let t = e.text();
        for line in [
            "h_bucket{le=\"1\"} 1",
            "h_bucket{le=\"10\"} 2",
            "h_bucket{le=\"100\"} 3",
            "h_bucket{le=\"20000\"} 3",
            "h_bucket{le=\"50000\"} 4",
            "h_bucket{le=\"+Inf\"} 5",
            "h_sum 120106",
            "h_count 5",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} not in\n{t}");
        }
    }

    #[test]
    fn exposition_follows_the_text_format() {
        let mut e = Exposition::default();
        e.counter("a_total", "A thing.", 3);
        e.counter_by(
            "b_total",
            "B by reason.",
            "reason",
            &[("x\"y", 2), ("z", 0)],
        );
        e.gauge("c", "C.", 1.5);
        assert_eq!(
            e.text(),
            "# HELP a_total A thing.\n# TYPE a_total counter\na_total 3\n\
             # HELP b_total B by reason.\n# TYPE b_total counter\nb_total{reason=\"x\\\"y\"} 2\nb_total{reason=\"z\"} 0\n\
             # HELP c C.\n# TYPE c gauge\nc 1.5\n"
        );
    }
}
