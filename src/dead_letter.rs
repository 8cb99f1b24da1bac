//! The `flight-dead-letter` record: the original bytes, the stage that refused them, a
//! machine-readable reason code and a human message. Nothing a stage refuses is dropped.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub stage: String,
    pub reason: String,
    pub message: String,
    /// The original payload (its first [`MAX_KEPT_BYTES`] when longer): as text when it
    /// is UTF-8, else base64.
    pub payload: String,
    /// `utf8` or `base64`.
    pub payload_encoding: String,
    /// The original payload's length in bytes.
    #[serde(default)]
    pub payload_bytes: usize,
    /// `payload` holds only the first [`MAX_KEPT_BYTES`] of it (a dead-letter record
    /// must itself fit in a Kafka message).
    #[serde(default)]
    pub payload_truncated: bool,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub timestamp: DateTime<Utc>,
}

/// How much of a refused payload a dead-letter record keeps: even JSON-escaped (up to 6
/// bytes per byte) it stays well under Kafka's default 1 MB message limit.
pub const MAX_KEPT_BYTES: usize = 64 * 1024;

impl DeadLetter {
    pub fn new(
        stage: &str,
        reason: &str,
        message: impl Into<String>,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Self {
        let payload_bytes = payload.len();
        let kept = &payload[..payload_bytes.min(MAX_KEPT_BYTES)];
        // A cut through a UTF-8 character must not turn text into base64.
        let text = match std::str::from_utf8(kept) {
            Ok(s) => Some(s),
            Err(e) if e.error_len().is_none() && std::str::from_utf8(payload).is_ok() => {
                std::str::from_utf8(&kept[..e.valid_up_to()]).ok()
            }
            Err(_) => None,
        };
        let (payload, encoding) = match text {
            Some(s) => (s.to_string(), "utf8"),
            None => (
                base64::engine::general_purpose::STANDARD.encode(kept),
                "base64",
            ),
        };
        Self {
            stage: stage.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            payload,
            payload_encoding: encoding.to_string(),
            payload_truncated: payload_bytes > MAX_KEPT_BYTES,
            payload_bytes,
            source_topic: None,
            source_partition: None,
            source_offset: None,
            timestamp: now,
        }
    }

    pub fn with_source(mut self, topic: &str, partition: i32, offset: i64) -> Self {
        self.source_topic = Some(topic.to_string());
        self.source_partition = Some(partition);
        self.source_offset = Some(offset);
        self
    }

    /// The original payload bytes.
    pub fn original_payload(&self) -> Vec<u8> {
        match self.payload_encoding.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(&self.payload)
                .unwrap_or_default(),
            _ => self.payload.clone().into_bytes(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("DeadLetter always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_original_bytes_text_or_binary() {
        let now = DateTime::from_timestamp(0, 0).unwrap();
        for payload in [&b"{\"a\":1}"[..], &b"\xff\x00bin"[..]] {
            let d = DeadLetter::new("ingest", "schema", "m", payload, now);
            let back: DeadLetter = serde_json::from_slice(&d.to_json()).unwrap();
            assert_eq!(back.original_payload(), payload);
        }
        assert_eq!(
            DeadLetter::new("x", "y", "z", b"\xff", now).payload_encoding,
            "base64"
        );
    }

    #[test]
    fn keeps_the_head_of_a_huge_payload_and_says_so() {
        let now = DateTime::from_timestamp(0, 0).unwrap();
        // 'é' is two bytes: the cut at MAX_KEPT_BYTES falls inside one.
        let text = format!("x{}", "é".repeat(MAX_KEPT_BYTES));
        let d = DeadLetter::new("ingest", "too_large", "m", text.as_bytes(), now);
        assert!(d.payload_truncated);
        assert_eq!(d.payload_bytes, text.len());
        assert_eq!(d.payload_encoding, "utf8");
        assert_eq!(d.payload.len(), MAX_KEPT_BYTES - 1);
        assert!(text.starts_with(&d.payload));
        assert!(d.to_json().len() < 200 * 1024);

        let binary: Vec<u8> = (0..2 * MAX_KEPT_BYTES)
            .map(|i| (i % 251) as u8 | 0x80)
            .collect();
        let d = DeadLetter::new("process", "decode_error", "m", &binary, now);
        assert_eq!(d.payload_encoding, "base64");
        assert_eq!(d.original_payload(), &binary[..MAX_KEPT_BYTES]);
        assert!(d.payload_truncated);

        let small = DeadLetter::new("x", "y", "z", b"{}", now);
        assert!(!small.payload_truncated);
        assert_eq!(small.payload_bytes, 2);
    }
}
