//! Replaying recorded data as a source: `contrail record` files (one `/states/all`
//! response per line, with its poll time), flat JSON-lines raw records (`contrail simulate`
//! output, or any file of records), or Parquet with the raw record's columns (the archive's
//! `processed` files included: the extra columns are left out).
//!
//! Records keep their original time spacing divided by `--speed` (poll times for
//! recordings, record timestamps otherwise); `--speed max` replays as fast as the pipeline
//! takes it. The file is read as the pipeline takes it, a chunk at a time, so a backfill of
//! any length runs in the same memory. The source ends at the end of the file.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::Value;
use tokio::time::Instant;

use super::opensky::parse_states;
use super::validate::Rejection;
use super::{Source, Speed};
use crate::error::{Error, Result};
use crate::json_cursor::Cursor;

/// Payloads sharing one moment (a poll, or records with one timestamp).
struct Moment {
    micros: i64,
    payloads: Vec<Vec<u8>>,
}

/// Where the records come from: lines of JSON, or a Parquet file's record batches.
enum Reader {
    Lines(std::io::BufReader<std::fs::File>),
    Parquet(ParquetRecordBatchReader),
}

/// Reads the file as the pipeline takes it (never the whole file at once: a backfill's
/// memory does not grow with its length).
pub struct ReplaySource {
    path: PathBuf,
    reader: Option<Reader>,
    /// Moments read and not handed out yet; the last one may still grow (the next line
    /// can have its time).
    moments: VecDeque<Moment>,
    /// Payloads in `moments`.
    buffered: usize,
    speed: Speed,
    start: Option<(Instant, i64)>,
    /// Time of the last line read (for a line without a readable time of its own).
    last: i64,
    /// Lines read (rows of a Parquet file), blank ones left out.
    pub lines: u64,
    /// Recorded responses that did not parse.
    pub unreadable: u64,
    /// What was read and is no record (see [`Source::take_rejected`]), not yet taken.
    rejected: Vec<(Rejection, Vec<u8>)>,
}

/// Records per chunk at `--speed max`.
const MAX_CHUNK: usize = 20_000;

fn micros_of(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp_micros())
}

/// What a line is: a recorded poll (`poll_time`, `response`) or a flat record, and the time
/// of either. A flat record (valid or not: validation decides) is at its own `timestamp`;
/// a line without a readable time keeps the previous line's.
enum Line {
    Recording { at: i64, response: String },
    Flat { at: Option<i64> },
}

/// A flat record's time, read with the JSON cursor (the values it does not need skipped);
/// `None` when the cursor does not take the line (escapes, a recording's `response`, ...),
/// then serde_json reads it.
fn classify_fast(line: &[u8]) -> Option<Line> {
    let mut c = Cursor::new(std::str::from_utf8(line).ok()?);
    let mut timestamp = None;
    c.object(|c, key| match key {
        // The last one wins, as in serde_json's maps.
        "timestamp" => {
            timestamp = c.nullable(Cursor::string)?;
            Some(())
        }
        "response" => None,
        _ => c.skip_value(32),
    })?;
    Some(Line::Flat {
        at: timestamp.and_then(micros_of),
    })
}

fn classify(line: &[u8]) -> Line {
    if let Some(l) = classify_fast(line) {
        return l;
    }
    let parsed: Option<Value> = serde_json::from_slice(line).ok();
    let recording = parsed.as_ref().and_then(|v| {
        Some((
            micros_of(v.get("poll_time")?.as_str()?)?,
            v.get("response")?,
        ))
    });
    if let Some((at, response)) = recording {
        return Line::Recording {
            at,
            response: response.to_string(),
        };
    }
    Line::Flat {
        at: parsed
            .as_ref()
            .and_then(|v| micros_of(v.get("timestamp")?.as_str()?)),
    }
}

impl ReplaySource {
    pub fn open(path: &Path, speed: Speed) -> Result<Self> {
        let is_parquet = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        let file =
            std::fs::File::open(path).map_err(|e| Error::io("opening --replay-file", path, e))?;
        let reader = if is_parquet {
            Reader::Parquet(parquet_reader(path, file)?)
        } else {
            Reader::Lines(std::io::BufReader::with_capacity(1 << 20, file))
        };
        tracing::info!(file = %path.display(), "replay opened");
        Ok(Self {
            path: path.to_path_buf(),
            reader: Some(reader),
            moments: VecDeque::new(),
            buffered: 0,
            speed,
            start: None,
            last: i64::MIN,
            lines: 0,
            unreadable: 0,
            rejected: Vec::new(),
        })
    }

    fn push(&mut self, micros: i64, payload: Vec<u8>) {
        self.buffered += 1;
        match self.moments.back_mut() {
            Some(m) if m.micros == micros => m.payloads.push(payload),
            _ => self.moments.push_back(Moment {
                micros,
                payloads: vec![payload],
            }),
        }
    }

    /// Reads until `enough` holds or the file ends.
    fn fill(&mut self, enough: impl Fn(&Self) -> bool) -> Result<()> {
        while !enough(self) {
            let more = match self.reader.as_mut() {
                None => return Ok(()),
                Some(Reader::Lines(r)) => {
                    let mut line = Vec::new();
                    let n = r
                        .read_until(b'\n', &mut line)
                        .map_err(|e| Error::io("reading --replay-file", &self.path, e))?;
                    if n > 0 {
                        self.line(line);
                    }
                    n > 0
                }
                Some(Reader::Parquet(r)) => match r.next() {
                    Some(batch) => {
                        self.batch(batch?)?;
                        true
                    }
                    None => false,
                },
            };
            if !more {
                self.reader = None;
                if self.lines == 0 {
                    tracing::warn!(file = %self.path.display(), "replay: the file holds no records");
                } else {
                    tracing::info!(
                        file = %self.path.display(),
                        lines = self.lines,
                        unreadable = self.unreadable,
                        "replay: end of file"
                    );
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, mut line: Vec<u8>) {
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.lines += 1;
        match classify(&line) {
            Line::Recording { at, response } => {
                // A recorded poll: its states, at the poll's time.
                match parse_states(response.as_bytes()) {
                    Ok(states) => {
                        for p in states.payloads {
                            self.push(at, p);
                        }
                        self.rejected.extend(states.rejected);
                    }
                    Err(e) => {
                        self.unreadable += 1;
                        tracing::warn!(line = self.lines, error = %e.message, "replay: a recorded response that does not parse goes to the dead-letter topic");
                        let message = format!(
                            "line {} of {}: a recorded response that does not parse: {}",
                            self.lines,
                            self.path.display(),
                            e.message
                        );
                        self.rejected
                            .push((Rejection::new(e.reason, message), line.clone()));
                    }
                }
                self.last = at;
            }
            Line::Flat { at } => {
                let at = at.unwrap_or(self.last);
                let at = if at == i64::MIN { 0 } else { at };
                self.last = at;
                self.push(at, line);
            }
        }
    }

    fn batch(&mut self, batch: RecordBatch) -> Result<()> {
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
        self.lines += rows.len() as u64;
        for (i, row) in rows.iter().enumerate() {
            self.push(ts.value(i), row.to_vec());
        }
        Ok(())
    }

    /// Payloads in complete moments: all but the last one until the file has ended (the
    /// next line may still have the last one's time).
    fn complete(&self) -> usize {
        match (&self.reader, self.moments.back()) {
            (Some(_), Some(last)) => self.buffered - last.payloads.len(),
            _ => self.buffered,
        }
    }

    /// The first moment, if it is complete.
    fn pop_moment(&mut self) -> Option<Moment> {
        if self.complete() == 0 {
            return None;
        }
        let m = self.moments.pop_front()?;
        self.buffered -= m.payloads.len();
        Some(m)
    }
}

/// The raw record's columns of a Parquet file (the archive's `processed` files included:
/// the extra columns are left out).
fn parquet_reader(path: &Path, file: std::fs::File) -> Result<ParquetRecordBatchReader> {
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
            path.display()
        )));
    }
    let indices: Vec<usize> = names.iter().map(|n| schema.index_of(n).unwrap()).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    Ok(builder.with_projection(mask).build()?)
}

#[async_trait]
impl Source for ReplaySource {
    async fn next_chunk(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        match self.speed {
            Speed::Max => {
                self.fill(|s| s.complete() >= MAX_CHUNK)?;
                let mut out = Vec::new();
                while out.len() < MAX_CHUNK {
                    let Some(m) = self.pop_moment() else {
                        break;
                    };
                    out.extend(m.payloads);
                }
                Ok((!out.is_empty()).then_some(out))
            }
            Speed::Factor(f) => {
                self.fill(|s| s.complete() > 0)?;
                let Some(m) = self.pop_moment() else {
                    return Ok(None);
                };
                // Lines without a time before the first that has one (a header, say) are
                // sent at once: paced from the epoch they would hold up the rest for
                // decades.
                if m.micros == 0 && self.start.is_none() {
                    return Ok(Some(m.payloads));
                }
                let (t0, first) = *self.start.get_or_insert((Instant::now(), m.micros));
                let offset = (m.micros - first).max(0) as f64 / 1e6 / f;
                tokio::time::sleep_until(t0 + std::time::Duration::from_secs_f64(offset)).await;
                Ok(Some(m.payloads))
            }
        }
    }

    fn take_rejected(&mut self) -> Vec<(Rejection, Vec<u8>)> {
        std::mem::take(&mut self.rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` flat lines, three per second, with a blank line and an unreadable one between.
    fn flat_file(n: usize) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..n {
            let t = DateTime::from_timestamp(1_795_600_800 + (i / 3) as i64, 0).unwrap();
            writeln!(f, r#"{{"i":{i},"timestamp":"{}"}}"#, t.to_rfc3339()).unwrap();
            if i == 7 {
                writeln!(f, "   \n{{not json").unwrap();
            }
        }
        f
    }

    fn index(payload: &[u8]) -> Option<u64> {
        serde_json::from_slice::<Value>(payload).ok()?["i"].as_u64()
    }

    #[tokio::test]
    async fn max_speed_reads_in_chunks_whole_moments_every_line_once() {
        let f = flat_file(50_000);
        let mut source = ReplaySource::open(f.path(), Speed::Max).unwrap();
        let mut seen = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = source.next_chunk().await.unwrap() {
            chunks += 1;
            assert!(chunk.len() <= MAX_CHUNK + 2, "{}", chunk.len());
            // Never more read ahead than a chunk and the moment that began after it.
            assert!(source.buffered <= MAX_CHUNK + 3, "{}", source.buffered);
            let indices: Vec<Option<u64>> = chunk.iter().map(|p| index(p)).collect();
            // A moment is never cut: each chunk ends at a second boundary.
            if let Some(Some(last)) = indices.last()
                && source.reader.is_some()
            {
                assert_eq!(last % 3, 2, "chunk ends inside a moment");
            }
            seen.extend(indices);
        }
        assert_eq!(chunks, 3);
        // The unreadable line keeps the time of the line before it, in order.
        assert_eq!(seen[8], None);
        let read: Vec<u64> = seen.into_iter().flatten().collect();
        assert_eq!(read, (0..50_000).collect::<Vec<u64>>());
        assert_eq!((source.lines, source.unreadable), (50_001, 0));
    }

    #[tokio::test]
    async fn paced_replay_hands_out_one_moment_at_a_time() {
        let f = flat_file(10);
        let mut source = ReplaySource::open(f.path(), Speed::Factor(1e9)).unwrap();
        let mut sizes = Vec::new();
        while let Some(chunk) = source.next_chunk().await.unwrap() {
            sizes.push(chunk.len());
        }
        // Seconds 0, 1, 2 (with the unreadable line after record 7), 3.
        assert_eq!(sizes, vec![3, 3, 4, 1]);
    }

    /// Paced at real time, a header line (no time) and two records a second apart take a
    /// second, not the decades since the epoch the header would be placed at.
    #[tokio::test(start_paused = true)]
    async fn a_line_without_a_time_before_the_first_timed_one_does_not_hold_up_the_rest() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let t = |s: i64| {
            DateTime::from_timestamp(1_795_600_800 + s, 0)
                .unwrap()
                .to_rfc3339()
        };
        let text = format!(
            "icao24,timestamp\n{{\"i\":0,\"timestamp\":\"{}\"}}\n{{\"i\":1,\"timestamp\":\"{}\"}}\n",
            t(0),
            t(1)
        );
        std::fs::write(f.path(), text).unwrap();
        let mut source = ReplaySource::open(f.path(), Speed::Factor(1.0)).unwrap();
        let begun = tokio::time::Instant::now();
        let mut read = Vec::new();
        while let Some(chunk) = source.next_chunk().await.unwrap() {
            read.extend(chunk.iter().map(|p| index(p)));
        }
        assert_eq!(read, vec![None, Some(0), Some(1)]);
        // The paused clock only moves by the replay's own waits.
        let waited = begun.elapsed();
        assert!(
            waited >= std::time::Duration::from_secs(1)
                && waited < std::time::Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn an_empty_file_ends_at_once() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "\n  \n").unwrap();
        let mut source = ReplaySource::open(f.path(), Speed::Max).unwrap();
        assert!(source.next_chunk().await.unwrap().is_none());
        assert!(source.reader.is_none());
        assert_eq!(source.lines, 0);
    }

    #[test]
    fn the_cursor_and_serde_json_place_lines_alike() {
        let at = |l: &str| match classify(l.as_bytes()) {
            Line::Flat { at } => at,
            Line::Recording { .. } => panic!("{l}"),
        };
        let t = Some(1_795_600_800_000_000);
        for (line, fast, expected) in [
            (
                r#"{"timestamp":"2026-11-25T10:00:00Z","x":[1,{"a":null}]}"#,
                true,
                t,
            ),
            (r#"{"timestamp":"2026-11-25T11:00:00+01:00"}"#, true, t),
            (
                r#"{"timestamp":"x","timestamp":"2026-11-25T10:00:00Z"}"#,
                true,
                t,
            ),
            (r#"{"timestamp":"2026-11-25T10:00:00\u005a"}"#, false, t),
            (r#"{"timestamp":1795600800}"#, false, None),
            (r#"{"timestamp":"2026-11-25T10:00:00Z",}"#, false, None),
        ] {
            assert_eq!(classify_fast(line.as_bytes()).is_some(), fast, "{line}");
            assert_eq!(at(line), expected, "{line}");
        }
        let recording = r#"{"poll_time":"2026-11-25T10:00:00Z","response":{"time":1,"states":[]}}"#;
        assert!(classify_fast(recording.as_bytes()).is_none());
        assert!(matches!(
            classify(recording.as_bytes()),
            Line::Recording {
                at: 1_795_600_800_000_000,
                ..
            }
        ));
    }
}
