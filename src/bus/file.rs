//! JSON-lines files behind the bus traits, for offline runs (`contrail simulate`,
//! `contrail features`, `contrail train`): a topic is a file, a record is a line.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{BatchConsumer, BatchLimits, Message, OutRecord, Publisher};
use crate::error::{Error, Result};

/// Appends each topic's records to its file; topics without a file are counted only.
#[derive(Debug, Default)]
pub struct JsonlPublisher {
    files: Mutex<HashMap<String, (PathBuf, BufWriter<File>)>>,
    counts: Mutex<HashMap<String, u64>>,
}

impl JsonlPublisher {
    /// `routes`: (topic, file) pairs; each file is created (truncated).
    pub fn create(routes: &[(&str, &Path)]) -> Result<Self> {
        let mut files = HashMap::new();
        for (topic, path) in routes {
            let f = File::create(path).map_err(|e| Error::io("creating output file", *path, e))?;
            files.insert(topic.to_string(), (path.to_path_buf(), BufWriter::new(f)));
        }
        Ok(Self {
            files: Mutex::new(files),
            counts: Mutex::default(),
        })
    }

    /// Records published to `topic` so far.
    pub fn count(&self, topic: &str) -> u64 {
        self.counts
            .lock()
            .expect("counts lock")
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    pub fn flush(&self) -> Result<()> {
        for (path, w) in self.files.lock().expect("files lock").values_mut() {
            w.flush()
                .map_err(|e| Error::io("writing output file", path.clone(), e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for JsonlPublisher {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<()> {
        let mut files = self.files.lock().expect("files lock");
        let mut counts = self.counts.lock().expect("counts lock");
        for r in records {
            if let Some((path, w)) = files.get_mut(&r.topic) {
                w.write_all(&r.payload)
                    .and_then(|()| w.write_all(b"\n"))
                    .map_err(|e| Error::io("writing output file", path.clone(), e))?;
            }
            *counts.entry(r.topic).or_default() += 1;
        }
        Ok(())
    }
}

/// Reads a JSON-lines file as one partition (offset = line number, from 0); commits go to
/// a [`JsonlPublisher`].
#[derive(Debug)]
pub struct JsonlConsumer<'a> {
    topic: String,
    lines: std::io::Lines<BufReader<File>>,
    path: PathBuf,
    next_offset: i64,
    sink: &'a JsonlPublisher,
    read: AtomicU64,
}

impl<'a> JsonlConsumer<'a> {
    pub fn open(path: &Path, topic: &str, sink: &'a JsonlPublisher) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io("opening input file", path, e))?;
        Ok(Self {
            topic: topic.to_string(),
            lines: BufReader::new(f).lines(),
            path: path.to_path_buf(),
            next_offset: 0,
            sink,
            read: AtomicU64::new(0),
        })
    }

    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl BatchConsumer for JsonlConsumer<'_> {
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Option<Vec<Message>>> {
        let mut batch = Vec::new();
        while batch.len() < limits.max_records {
            let Some(line) = self.lines.next() else { break };
            let line = line.map_err(|e| Error::io("reading input file", self.path.clone(), e))?;
            batch.push(Message {
                topic: self.topic.clone(),
                partition: 0,
                offset: self.next_offset,
                key: None,
                payload: line.into_bytes().into(),
            });
            self.next_offset += 1;
        }
        self.read.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok((!batch.is_empty()).then_some(batch))
    }

    async fn commit(&mut self, outputs: Vec<OutRecord>) -> Result<()> {
        self.sink.publish(outputs).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn lines_in_records_out() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n").unwrap();
        let out = dir.path().join("out.jsonl");
        let sink = JsonlPublisher::create(&[("out", &out)]).unwrap();
        let mut c = JsonlConsumer::open(&input, "in", &sink).unwrap();
        let b = c
            .next_batch(BatchLimits::new(2, Duration::ZERO))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0, 1]);
        c.commit(vec![
            OutRecord::new("out", None, b"x".to_vec()),
            OutRecord::new("other", None, b"y".to_vec()),
        ])
        .await
        .unwrap();
        assert_eq!(
            c.next_batch(BatchLimits::new(2, Duration::ZERO))
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert!(
            c.next_batch(BatchLimits::new(2, Duration::ZERO))
                .await
                .unwrap()
                .is_none()
        );
        sink.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "x\n");
        assert_eq!(sink.count("other"), 1);
        assert_eq!(c.read(), 3);
    }
}
