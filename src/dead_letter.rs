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
    /// The original payload: as text when it is UTF-8, else base64.
    pub payload: String,
    /// `utf8` or `base64`.
    pub payload_encoding: String,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub timestamp: DateTime<Utc>,
}

impl DeadLetter {
    pub fn new(
        stage: &str,
        reason: &str,
        message: impl Into<String>,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Self {
        let (payload, encoding) = match std::str::from_utf8(payload) {
            Ok(s) => (s.to_string(), "utf8"),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(payload),
                "base64",
            ),
        };
        Self {
            stage: stage.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            payload,
            payload_encoding: encoding.to_string(),
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
}
