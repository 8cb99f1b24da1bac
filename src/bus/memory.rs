//! The in-process bus of `contrail demo`: bounded channels per topic, no broker.
//!
//! Publishing waits when a subscriber's channel is full, so a slow stage slows its producer
//! instead of growing memory. A topic nobody subscribed to counts what it was sent and keeps
//! nothing; the demo subscribes to every topic whose records it must keep (dead letters go
//! to a file). There is one partition per topic; offsets count up from a base the
//! creator picks (the demo uses the start time in microseconds, so the archive's
//! offset-named files of two demo runs never collide).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{BatchConsumer, BatchLimits, Message, OutRecord, Publisher};
use crate::error::{Error, Result};

#[derive(Debug)]
struct Topic {
    subscribers: Vec<mpsc::Sender<Message>>,
    next_offset: i64,
}

/// A set of in-memory topics shared by the stages of one process.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    capacity: usize,
    offset_base: i64,
}

impl MemoryBus {
    /// `capacity`: records each subscriber may have waiting before publishers wait.
    pub fn new(capacity: usize) -> Self {
        Self::with_offset_base(capacity, 0)
    }

    /// Like [`MemoryBus::new`], with every topic's first offset at `offset_base`.
    pub fn with_offset_base(capacity: usize, offset_base: i64) -> Self {
        Self {
            topics: Arc::default(),
            capacity: capacity.max(1),
            offset_base,
        }
    }

    fn topic<'a>(&self, topics: &'a mut HashMap<String, Topic>, name: &str) -> &'a mut Topic {
        topics.entry(name.to_string()).or_insert_with(|| Topic {
            subscribers: Vec::new(),
            next_offset: self.offset_base,
        })
    }

    /// Receives every record published to `topic` from now on.
    pub fn subscribe(&self, topic: &str) -> MemoryConsumer {
        let (tx, rx) = mpsc::channel(self.capacity);
        self.topic(&mut self.topics.lock().expect("bus lock"), topic)
            .subscribers
            .push(tx);
        MemoryConsumer {
            rx,
            publisher: self.clone(),
            pending: None,
        }
    }

    /// Records published to `topic` so far.
    pub fn published(&self, topic: &str) -> i64 {
        self.topics
            .lock()
            .expect("bus lock")
            .get(topic)
            .map_or(0, |t| t.next_offset - self.offset_base)
    }

    /// Ends `topic`: its consumers see the end of the stream once they have drained it.
    pub fn close(&self, topic: &str) {
        if let Some(t) = self.topics.lock().expect("bus lock").get_mut(topic) {
            t.subscribers.clear();
        }
    }
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<()> {
        for record in records {
            let (senders, offset) = {
                let mut topics = self.topics.lock().expect("bus lock");
                let topic = self.topic(&mut topics, &record.topic);
                let offset = topic.next_offset;
                topic.next_offset += 1;
                (topic.subscribers.clone(), offset)
            };
            let message = Message {
                topic: record.topic,
                partition: 0,
                offset,
                key: record.key,
                payload: record.payload,
            };
            for tx in senders {
                // A consumer that went away only stops receiving; the others keep theirs.
                let _ = tx.send(message.clone()).await;
            }
        }
        Ok(())
    }
}

/// Reads one topic of a [`MemoryBus`]; `commit` publishes the outputs on the same bus.
#[derive(Debug)]
pub struct MemoryConsumer {
    rx: mpsc::Receiver<Message>,
    publisher: MemoryBus,
    /// A batch handed out and not committed yet.
    pending: Option<usize>,
}

#[async_trait]
impl BatchConsumer for MemoryConsumer {
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Option<Vec<Message>>> {
        if self.pending.is_some() {
            return Err(Error::Internal("next_batch called before commit".into()));
        }
        let deadline = tokio::time::Instant::now() + limits.max_wait;
        let mut batch = Vec::new();
        while batch.len() < limits.max_records {
            let until = limits.wait_until(deadline, batch.len());
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(m)) => batch.push(m),
                Ok(None) if batch.is_empty() => return Ok(None),
                Ok(None) | Err(_) => break,
            }
            // Take whatever is already queued without waiting.
            while batch.len() < limits.max_records {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
        }
        // An empty batch needs no commit.
        self.pending = (!batch.is_empty()).then_some(batch.len());
        Ok(Some(batch))
    }

    async fn commit(&mut self, outputs: Vec<OutRecord>) -> Result<()> {
        self.pending = None;
        self.publisher.publish(outputs).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn batches_respect_max_records_and_end_after_close() {
        let bus = MemoryBus::new(100);
        let mut consumer = bus.subscribe("in");
        let mut out = bus.subscribe("out");
        let records: Vec<_> = (0..5u8)
            .map(|i| OutRecord::new("in", None, vec![i]))
            .collect();
        bus.publish(records).await.unwrap();
        assert_eq!(bus.published("in"), 5);

        let b = consumer
            .next_batch(BatchLimits::new(3, Duration::from_millis(50)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            b.iter().map(|m| m.offset).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(
            consumer
                .next_batch(BatchLimits::new(3, Duration::from_millis(10)))
                .await
                .is_err()
        );
        consumer
            .commit(vec![OutRecord::new("out", None, b"x".to_vec())])
            .await
            .unwrap();
        let b = consumer
            .next_batch(BatchLimits::new(3, Duration::from_millis(50)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.len(), 2);
        consumer.commit(vec![]).await.unwrap();

        let o = out
            .next_batch(BatchLimits::new(10, Duration::from_millis(50)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o[0].payload, &b"x"[..]);
        out.commit(vec![]).await.unwrap();

        bus.close("in");
        assert!(
            consumer
                .next_batch(BatchLimits::new(3, Duration::from_millis(50)))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_empty_wait_needs_no_commit() {
        let bus = MemoryBus::new(10);
        let mut c = bus.subscribe("t");
        let b = c
            .next_batch(BatchLimits::new(10, Duration::from_millis(5)))
            .await
            .unwrap()
            .unwrap();
        assert!(b.is_empty());
        bus.publish(vec![OutRecord::new("t", None, vec![1])])
            .await
            .unwrap();
        let b = c
            .next_batch(BatchLimits::new(10, Duration::from_millis(5)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.len(), 1);
    }

    #[tokio::test]
    async fn a_batch_closes_when_its_input_pauses() {
        let bus = MemoryBus::new(1_000);
        let mut c = bus.subscribe("t");
        // A burst of 50 records, 1 ms apart, then nothing: the gaps are far shorter than
        // `idle`, so all 50 are in the batch, which closes after the pause, long before
        // `max_wait`.
        let publisher = bus.clone();
        let burst = tokio::spawn(async move {
            for i in 0..50u8 {
                publisher
                    .publish(vec![OutRecord::new("t", None, vec![i])])
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let began = std::time::Instant::now();
        let limits =
            BatchLimits::new(1_000, Duration::from_secs(60)).with_idle(Duration::from_secs(1));
        let b = c.next_batch(limits).await.unwrap().unwrap();
        burst.await.unwrap();
        assert_eq!(b.len(), 50);
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "waited {:?}: the batch did not close on the pause",
            began.elapsed()
        );
        // Without `idle`, a batch waits out `max_wait`.
        bus.publish(vec![OutRecord::new("t", None, vec![1])])
            .await
            .unwrap();
        c.commit(vec![]).await.unwrap();
        let began = std::time::Instant::now();
        let b = c
            .next_batch(BatchLimits::new(1_000, Duration::from_millis(300)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.len(), 1);
        assert!(began.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn offsets_start_at_the_base() {
        let bus = MemoryBus::with_offset_base(10, 1_000);
        let mut c = bus.subscribe("t");
        bus.publish(vec![OutRecord::new("t", None, vec![1])])
            .await
            .unwrap();
        let b = c
            .next_batch(BatchLimits::new(10, Duration::from_millis(10)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b[0].offset, 1_000);
        assert_eq!(bus.published("t"), 1);
    }

    #[tokio::test]
    async fn unsubscribed_topics_count_but_keep_nothing() {
        let bus = MemoryBus::new(1);
        bus.publish(vec![OutRecord::new("nobody", None, vec![1]); 10])
            .await
            .unwrap();
        assert_eq!(bus.published("nobody"), 10);
    }
}
