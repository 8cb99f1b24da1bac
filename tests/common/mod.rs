//! Helpers of the integration tests: the broker's address, running the `contrail`
//! binary, reading topics as a `read_committed` consumer, and a copy of the shipped SQL.

#![allow(dead_code)]

pub mod corpus;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};

/// Copies the shipped `sql/*.sql` into `to`, for a test that edits them.
pub fn copy_sql(to: &std::path::Path) {
    let sql = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    for f in ["clean.sql", "features.sql", "aggregate.sql"] {
        std::fs::copy(sql.join(f), to.join(f)).unwrap();
    }
}

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Starts the binary with its stdout piped and stderr going to `stderr`.
pub fn spawn(args: &[String], stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_contrail"))
        .args(args)
        .env("CONTRAIL_LOG", "info,rdkafka=warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Runs the binary; fails the test on a non-zero exit or after `limit`.
pub fn contrail(args: &[String], limit: Duration) -> String {
    let mut child = spawn(args, Stdio::inherit());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(
                status.success(),
                "contrail {args:?} failed: {status}\n{out}"
            );
            return out;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("contrail {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks a running binary to stop (SIGTERM) and waits for a clean exit.
pub fn terminate(child: &mut Child, limit: Duration) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "contrail exited with {status} after SIGTERM"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("contrail did not stop within {limit:?} of SIGTERM");
}

fn client(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap()
}

pub fn partitions(topic: &str) -> i32 {
    let c = client("contrail-test-metadata");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    md.topics()[0].partitions().len() as i32
}

/// Every committed record of `topic`, partition by partition in offset order.
pub fn read_all(topic: &str) -> Vec<OwnedMessage> {
    let c = client("contrail-test-reader");
    let n = partitions(topic);
    let mut list = TopicPartitionList::new();
    for p in 0..n {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&list).unwrap();
    let mut done = std::collections::HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.len() < n as usize {
        assert!(Instant::now() < deadline, "reading {topic} took too long");
        match c.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
    out
}

/// Sum over partitions of the offsets `group` has committed on `topic`.
pub fn committed(group: &str, topic: &str) -> i64 {
    let c = client(group);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions(topic) {
        list.add_partition(topic, p);
    }
    match c.committed_offsets(list, Duration::from_secs(10)) {
        Ok(l) => l
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
        // The coordinator may be moving (a broker restart): nothing known yet.
        Err(_) => -1,
    }
}

/// Sum over partitions of the high watermarks of `topic`.
pub fn end_offsets(topic: &str) -> i64 {
    let c = client("contrail-test-metadata");
    (0..partitions(topic))
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum()
}
