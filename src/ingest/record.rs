//! The `flight-raw-data` record as a Rust value: what sources produce and what validation
//! parses. Field order and units follow DESIGN.md (OpenSky's own SI units).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    /// OpenSky `time_position`, else `last_contact`.
    pub timestamp: DateTime<Utc>,
    pub icao24: String,
    pub callsign: Option<String>,
    pub origin_country: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// m/s over ground.
    pub velocity: Option<f64>,
    /// metres.
    pub baro_altitude: Option<f64>,
    /// metres.
    pub geo_altitude: Option<f64>,
    /// m/s, positive = climbing.
    pub vertical_rate: Option<f64>,
    /// degrees clockwise from north (OpenSky `true_track`).
    pub heading: Option<f64>,
    pub on_ground: bool,
    pub squawk: Option<String>,
    pub spi: bool,
    pub position_source: i32,
    pub category: Option<i32>,
    pub sensors: Option<Vec<i32>>,
    /// Unix seconds of the last message of any kind.
    pub last_contact: i64,
    /// Set by ingest when the record is published.
    pub ingest_timestamp: Option<DateTime<Utc>>,
}

impl RawRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("RawRecord always serialises")
    }
}
