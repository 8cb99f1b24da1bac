//! The ingest stage: a source -> validation -> dedupe -> `flight-raw-data`.
//!
//! Every payload a source yields ends up in exactly one place: the raw topic (valid and
//! new), the dead-letter topic (invalid, with a reason and the original bytes), or the
//! duplicate counter (the same aircraft with the same `last_contact` as its previous state).

pub mod airports;
pub mod opensky;
pub mod record;
pub mod replay;
pub mod simulator;
pub mod validate;

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::{OutRecord, Publisher};
use crate::clock::SharedClock;
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use simulator::{Emitted, LabelWriter, Simulator, SimulatorConfig};
use validate::{Dedupe, Rejection, validate};

/// A producer of raw payloads (JSON bytes, one record each).
#[async_trait]
pub trait Source: Send {
    /// The next chunk of payloads; `None` when the source is exhausted.
    async fn next_chunk(&mut self) -> Result<Option<Vec<Vec<u8>>>>;

    /// The source's own counters for the health endpoint, readable from other tasks.
    fn health(&self) -> Option<SourceHealth> {
        None
    }

    /// What the source read but could not make a payload of (a state row off the
    /// contract, a recorded response that does not parse), with why: taken after each
    /// chunk, and once more at the end, for the dead-letter topic.
    fn take_rejected(&mut self) -> Vec<(Rejection, Vec<u8>)> {
        Vec::new()
    }
}

/// A source's counters, shared with the health endpoint.
pub type SourceHealth = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// How fast simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Simulated seconds per wall-clock second.
    Factor(f64),
    /// As fast as the pipeline takes it.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            // Slower than a thousandth of real time, waits outgrow the clock's range.
            Ok(f) if f.is_finite() && f >= 0.001 => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "{s:?} is neither a number from 0.001 up nor \"max\""
            )),
        }
    }
}

/// The simulator, paced against the wall clock and bounded by a record count.
#[derive(Debug)]
pub struct SimulatorSource {
    sim: Simulator,
    speed: Speed,
    max_records: Option<u64>,
    emitted: u64,
    emitted_invalid: u64,
    labels: Option<LabelWriter<BufWriter<File>>>,
    started: Instant,
    sim_start: i64,
}

/// Records per chunk when running at `--speed max`.
const MAX_SPEED_CHUNK: usize = 20_000;

impl SimulatorSource {
    pub fn new(
        config: SimulatorConfig,
        speed: Speed,
        max_records: Option<u64>,
        labels_out: Option<PathBuf>,
    ) -> Result<Self> {
        let labels = labels_out
            .map(|path| {
                File::create(&path)
                    .map(|f| LabelWriter::new(BufWriter::new(f)))
                    .map_err(|e| Error::io("creating the labels file", path, e))
            })
            .transpose()?;
        let sim = Simulator::new(config);
        let sim_start = sim.now();
        Ok(Self {
            sim,
            speed,
            max_records,
            emitted: 0,
            emitted_invalid: 0,
            labels,
            started: Instant::now(),
            sim_start,
        })
    }

    /// Corrupted records emitted so far (each must end up dead-lettered).
    pub fn emitted_invalid(&self) -> u64 {
        self.emitted_invalid
    }

    fn write_labels(&mut self, kept: &[Emitted]) -> Result<()> {
        let mut labels = self.sim.take_labels();
        let Some(writer) = self.labels.as_mut() else {
            return Ok(());
        };
        if self.max_records.is_some_and(|m| self.emitted >= m) {
            // The last chunk was cut short: keep only labels of records that went out.
            labels.retain(|l| {
                kept.iter()
                    .any(|e| matches!(e, Emitted::Record(r) if l.matches(r)))
            });
        }
        writer
            .write(&labels)
            .and_then(|()| writer.flush())
            .map_err(|e| Error::io("writing labels", "--labels-out", e))
    }
}

#[async_trait]
impl Source for SimulatorSource {
    async fn next_chunk(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        if self.max_records.is_some_and(|m| self.emitted >= m) {
            return Ok(None);
        }
        let mut out = Vec::new();
        match self.speed {
            Speed::Max => {
                while out.len() < MAX_SPEED_CHUNK {
                    out.extend(self.sim.tick());
                }
            }
            Speed::Factor(f) => {
                // Wait until the next simulated second is due on the wall clock.
                let next = (self.sim.now() + 1 - self.sim_start) as f64 / f;
                let due = self.started + Duration::from_secs_f64(next);
                tokio::time::sleep_until(due).await;
                let elapsed = self.started.elapsed().as_secs_f64() * f;
                out = self.sim.advance_to(self.sim_start + elapsed.floor() as i64);
            }
        }
        if let Some(max) = self.max_records {
            out.truncate((max - self.emitted).min(out.len() as u64) as usize);
        }
        self.emitted += out.len() as u64;
        self.emitted_invalid += out
            .iter()
            .filter(|e| matches!(e, Emitted::Invalid(_)))
            .count() as u64;
        self.write_labels(&out)?;
        Ok(Some(out.iter().map(Emitted::to_bytes).collect()))
    }
}

/// Counters of the ingest stage.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub read: AtomicU64,
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Dead-lettered records by reason code.
    pub rejected: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// Topics the ingest stage writes.
#[derive(Debug, Clone)]
pub struct IngestTopics {
    pub raw: String,
    pub dead_letter: String,
}

/// Runs a source until it ends or `shutdown` fires; returns after the last chunk is
/// acknowledged by the bus.
pub async fn run_ingest(
    source: &mut dyn Source,
    publisher: &dyn Publisher,
    topics: &IngestTopics,
    clock: SharedClock,
    stats: Arc<IngestStats>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut dedupe = Dedupe::default();
    loop {
        let chunk = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            chunk = source.next_chunk() => chunk?,
        };
        let rejected = source.take_rejected();
        let ended = chunk.is_none();
        let chunk = chunk.unwrap_or_default();
        if ended && rejected.is_empty() {
            return Ok(());
        }
        let now = clock.now();
        let mut out = Vec::with_capacity(chunk.len() + rejected.len());
        let (mut published, mut duplicates, mut dead) = (0, 0, 0);
        let checked = chunk
            .iter()
            .map(|payload| (validate(payload), payload.as_slice()))
            .chain(
                rejected
                    .iter()
                    .map(|(r, payload)| (Err(r.clone()), payload.as_slice())),
            );
        for (result, payload) in checked {
            match result {
                Ok(mut record) => {
                    if dedupe.is_repeat(&record.icao24, record.last_contact) {
                        duplicates += 1;
                        continue;
                    }
                    record.ingest_timestamp = Some(now);
                    out.push(OutRecord::new(
                        &topics.raw,
                        Some(record.icao24.clone().into_bytes()),
                        record.to_json(),
                    ));
                    published += 1;
                }
                Err(rejection) => {
                    *stats
                        .rejected
                        .lock()
                        .expect("stats lock")
                        .entry(rejection.reason)
                        .or_default() += 1;
                    let dl = DeadLetter::new(
                        "ingest",
                        rejection.reason,
                        rejection.message,
                        payload,
                        now,
                    );
                    out.push(OutRecord::new(&topics.dead_letter, None, dl.to_json()));
                    dead += 1;
                }
            }
        }
        publisher.publish(out).await?;
        stats
            .read
            .fetch_add((chunk.len() + rejected.len()) as u64, Ordering::Relaxed);
        stats.published.fetch_add(published, Ordering::Relaxed);
        stats.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        stats.dead_lettered.fetch_add(dead, Ordering::Relaxed);
        if ended {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use crate::clock::ManualClock;
    use chrono::DateTime;

    #[test]
    fn speed_parses_factor_or_max() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("10".parse::<Speed>(), Ok(Speed::Factor(10.0)));
        assert!("0".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().unwrap_err().contains("fast"));
    }

    #[tokio::test]
    async fn every_payload_is_published_dead_lettered_or_a_counted_duplicate() {
        let config = SimulatorConfig {
            seed: 5,
            aircraft: 50,
            anomaly_rate: 0.01,
            invalid_rate: 0.02,
            report_interval_s: 5.0,
            start: DateTime::from_timestamp(1_795_600_000, 0).unwrap(),
        };
        let mut source = SimulatorSource::new(config, Speed::Max, Some(30_000), None).unwrap();
        let bus = MemoryBus::new(100_000);
        let mut raw = bus.subscribe("raw");
        let mut dlq = bus.subscribe("dlq");
        let topics = IngestTopics {
            raw: "raw".into(),
            dead_letter: "dlq".into(),
        };
        let stats = Arc::new(IngestStats::default());
        let clock = ManualClock::new(1_795_600_000_000_000);
        let ingest = run_ingest(
            &mut source,
            &bus,
            &topics,
            clock,
            Arc::clone(&stats),
            CancellationToken::new(),
        );
        let drain = async {
            use crate::bus::{BatchConsumer, BatchLimits};
            let (mut r, mut d) = (Vec::new(), Vec::new());
            while r.len() + d.len() < 30_000 - 10 {
                let b = raw
                    .next_batch(BatchLimits::new(100_000, Duration::from_millis(20)))
                    .await
                    .unwrap()
                    .unwrap();
                raw.commit(vec![]).await.unwrap();
                r.extend(b);
                let b = dlq
                    .next_batch(BatchLimits::new(100_000, Duration::from_millis(1)))
                    .await
                    .unwrap()
                    .unwrap();
                dlq.commit(vec![]).await.unwrap();
                d.extend(b);
                if stats.read.load(Ordering::Relaxed) == 30_000
                    && r.len() as u64 == stats.published.load(Ordering::Relaxed)
                    && d.len() as u64 == stats.dead_lettered.load(Ordering::Relaxed)
                {
                    break;
                }
            }
            (r, d)
        };
        let (result, (raw_msgs, dead)) = tokio::join!(ingest, drain);
        result.unwrap();
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(s(&stats.read), 30_000);
        assert_eq!(
            s(&stats.published) + s(&stats.dead_lettered) + s(&stats.duplicates),
            30_000
        );
        assert_eq!(raw_msgs.len() as u64, s(&stats.published));
        assert_eq!(dead.len() as u64, s(&stats.dead_lettered));
        assert_eq!(s(&stats.dead_lettered), source.emitted_invalid());
        assert!(s(&stats.duplicates) > 0);
        for m in &raw_msgs {
            let r: record::RawRecord = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(m.key.as_deref(), Some(r.icao24.as_bytes()));
            assert!(r.ingest_timestamp.is_some());
        }
        for m in &dead {
            let d: DeadLetter = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(d.stage, "ingest");
            assert!(validate(&d.original_payload()).is_err());
        }
    }

    #[tokio::test]
    async fn what_a_source_cannot_read_is_dead_lettered_with_its_own_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let good = r#"["4ca1fa","RYR12AB ","Ireland",1795600790,1795600800,-6.2,53.4,3048,false,200,90,0,null,3100,"1234",false,0,4]"#;
        let lines = [
            format!(
                r#"{{"poll_time":"2026-11-25T10:00:00Z","response":{{"time":1795600800,"states":[{good},["short",1]]}}}}"#
            ),
            r#"{"poll_time":"2026-11-25T10:00:10Z","response":{"states":[]}}"#.to_string(),
        ];
        std::fs::write(file.path(), lines.join("\n")).unwrap();
        let mut source = replay::ReplaySource::open(file.path(), Speed::Max).unwrap();
        let bus = MemoryBus::new(1_000);
        let (mut raw, mut dlq) = (bus.subscribe("raw"), bus.subscribe("dlq"));
        let topics = IngestTopics {
            raw: "raw".into(),
            dead_letter: "dlq".into(),
        };
        let stats = Arc::new(IngestStats::default());
        run_ingest(
            &mut source,
            &bus,
            &topics,
            ManualClock::new(1_795_600_900_000_000),
            Arc::clone(&stats),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        use crate::bus::{BatchConsumer, BatchLimits};
        let limits = BatchLimits::new(100, Duration::from_millis(20));
        let published = raw.next_batch(limits).await.unwrap().unwrap();
        assert_eq!(published.len(), 1);
        let dead: Vec<DeadLetter> = dlq
            .next_batch(limits)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect();
        let got: Vec<(&str, &str, Vec<u8>)> = dead
            .iter()
            .map(|d| (d.reason.as_str(), d.message.as_str(), d.original_payload()))
            .collect();
        let unreadable = format!(
            "line 2 of {}: a recorded response that does not parse: the response has no integer \"time\"",
            file.path().display()
        );
        assert_eq!(
            got,
            [
                (
                    validate::reason::SCHEMA,
                    "state 1 of the response at 1795600800: a state has 2 fields, at least 17 expected",
                    br#"["short",1]"#.to_vec()
                ),
                (
                    validate::reason::SCHEMA,
                    unreadable.as_str(),
                    lines[1].as_bytes().to_vec()
                ),
            ]
        );
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            (s(&stats.read), s(&stats.published), s(&stats.dead_lettered)),
            (3, 1, 2)
        );
        assert_eq!(source.unreadable, 1);
    }
}
