//! Replaying recorded data as a source: `contrail record` files (one `/states/all`
//! response per line, with its poll time), flat JSON-lines raw records (`contrail simulate`
//! output, or any file of records), or Parquet with the raw record's columns (the archive's
//! `processed` files included: the extra columns are left out).
//!
//! Records keep their original time spacing divided by `--speed` (poll times for
//! recordings, record timestamps otherwise); `--speed max` replays as fast as the pipeline
//! takes it. The source ends at the end of the file.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use tokio::time::Instant;

use super::opensky::parse_states;
use super::{Source, Speed};
use crate::error::{Error, Result};

/// Payloads sharing one moment (a poll, or records with one timestamp).
struct Moment {
    micros: i64,
    payloads: Vec<Vec<u8>>,
}

pub struct ReplaySource {
    path: PathBuf,
    moments: VecDeque<Moment>,
    speed: Speed,
    start: Option<(Instant, i64)>,
    pub lines: u64,
    pub unreadable: u64,
}

/// Records per chunk at `--speed max`.
const MAX_CHUNK: usize = 20_000;

fn micros_of(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp_micros())
}

impl ReplaySource {
    pub fn open(path: &Path, speed: Speed) -> Result<Self> {
        let is_parquet = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        let mut source = Self {
            path: path.to_path_buf(),
            moments: VecDeque::new(),
            speed,
            start: None,
            lines: 0,
            unreadable: 0,
        };
        if is_parquet {
            source.load_parquet()?;
        } else {
            source.load_jsonl()?;
        }
        tracing::info!(
            file = %path.display(),
            moments = source.moments.len(),
            payloads = source.moments.iter().map(|m| m.payloads.len()).sum::<usize>(),
            "replay loaded"
        );
        Ok(source)
    }

    fn push(&mut self, micros: i64, payload: Vec<u8>) {
        match self.moments.back_mut() {
            Some(m) if m.micros == micros => m.payloads.push(payload),
            _ => self.moments.push_back(Moment {
                micros,
                payloads: vec![payload],
            }),
        }
    }

    fn load_jsonl(&mut self) -> Result<()> {
        let file = std::fs::File::open(&self.path)
            .map_err(|e| Error::io("opening --replay-file", &self.path, e))?;
        let mut last = i64::MIN;
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| Error::io("reading --replay-file", &self.path, e))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.lines += 1;
            let parsed: Option<Value> = serde_json::from_slice(&line).ok();
            let recording = parsed.as_ref().and_then(|v| {
                Some((
                    micros_of(v.get("poll_time")?.as_str()?)?,
                    v.get("response")?,
                ))
            });
            if let Some((at, response)) = recording {
                // A recorded poll: its states, at the poll's time.
                match parse_states(response.to_string().as_bytes()) {
                    Ok(states) => {
                        for p in states.payloads {
                            self.push(at, p);
                        }
                    }
                    Err(e) => {
                        self.unreadable += 1;
                        tracing::warn!(line = self.lines, error = %e, "replay: a recorded response that does not parse is skipped");
                    }
                }
                last = at;
                continue;
            }
            // A flat record (valid or not: validation decides), at its own time; a line
            // without a readable time keeps the previous one.
            let at = parsed
                .as_ref()
                .and_then(|v| micros_of(v.get("timestamp")?.as_str()?))
                .unwrap_or(last);
            let at = if at == i64::MIN { 0 } else { at };
            last = at;
            self.push(at, line);
        }
        Ok(())
    }

    fn load_parquet(&mut self) -> Result<()> {
        let file = std::fs::File::open(&self.path)
            .map_err(|e| Error::io("opening --replay-file", &self.path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let raw = crate::schema::RAW_SCHEMA.clone();
        let names: Vec<&str> = raw
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| *n != "ingest_timestamp")
            .collect();
        let schema = builder.schema().clone();
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| schema.index_of(n).is_err())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "--replay-file {}: not raw records, the columns {missing:?} are missing",
                self.path.display()
            )));
        }
        let indices: Vec<usize> = names.iter().map(|n| schema.index_of(n).unwrap()).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        for batch in builder.with_projection(mask).build()? {
            let batch: RecordBatch = batch?;
            let ts = batch
                .column_by_name("timestamp")
                .and_then(|c| {
                    c.as_any()
                        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                        .cloned()
                })
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--replay-file {}: timestamp is not a microsecond timestamp",
                        self.path.display()
                    ))
                })?;
            let rows = crate::pipeline::encode::to_json_rows(&batch)?;
            for (i, row) in rows.iter().enumerate() {
                self.push(ts.value(i), row.to_vec());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for ReplaySource {
    async fn next_chunk(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        match self.speed {
            Speed::Max => {
                let mut out = Vec::new();
                while out.len() < MAX_CHUNK {
                    let Some(m) = self.moments.pop_front() else {
                        break;
                    };
                    out.extend(m.payloads);
                }
                Ok((!out.is_empty()).then_some(out))
            }
            Speed::Factor(f) => {
                let Some(m) = self.moments.pop_front() else {
                    return Ok(None);
                };
                let (t0, first) = *self.start.get_or_insert((Instant::now(), m.micros));
                let offset = (m.micros - first).max(0) as f64 / 1e6 / f;
                tokio::time::sleep_until(t0 + std::time::Duration::from_secs_f64(offset)).await;
                Ok(Some(m.payloads))
            }
        }
    }
}
