//! The live store: what `serve` knows of the present, fed by the output topics
//! (`flight-processed-data`, `flight-aggregated-data`, `flight-aircraft-aggregates`).
//!
//! Bounded everywhere: at most `max_aircraft` aircraft (the least recently seen go first),
//! `track_points` states per aircraft, `max_anomalies` anomalies, `max_windows` global windows
//! and `max_aircraft_windows` per-aircraft windows (the oldest windows go first). New
//! anomalies and windows are also broadcast to `Watch*` subscribers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::proto::{AircraftWindow, Anomaly, State, Window};
use crate::json_cursor::Cursor;

/// Bounds of the live store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_aircraft: usize,
    pub track_points: usize,
    pub max_anomalies: usize,
    pub max_windows: usize,
    pub max_aircraft_windows: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_aircraft: 50_000,
            track_points: 120,
            max_anomalies: 10_000,
            // 30 days of 10-minute windows.
            max_windows: 4_320,
            max_aircraft_windows: 500_000,
        }
    }
}

/// Which output topic a payload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Processed,
    Windows,
    AircraftWindows,
}

#[derive(Default)]
struct Inner {
    aircraft: HashMap<String, VecDeque<Report>>,
    anomalies: VecDeque<State>,
    windows: BTreeMap<i64, Window>,
    aircraft_windows: BTreeMap<(i64, String), AircraftWindow>,
    /// Records and anomalies per second of event time, the last [`ACTIVITY_SECONDS`]
    /// before the newest record.
    activity: BTreeMap<i64, Activity>,
    /// Event time of the newest record (microseconds).
    newest: Option<i64>,
}

/// How much per-second activity the store keeps (an hour of event time).
pub const ACTIVITY_SECONDS: i64 = 3_600;

/// Records and anomalies in one second of event time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub records: u64,
    pub anomalies: u64,
}

pub struct LiveStore {
    limits: StoreLimits,
    inner: RwLock<Inner>,
    ready: AtomicBool,
    /// Payloads that did not parse (counted, logged once in a while, skipped).
    pub rejected: AtomicU64,
    pub records: AtomicU64,
    /// Processed states taken in (`records` counts windows too).
    pub states: AtomicU64,
    /// Wall-clock time (microseconds) the newest state arrived; 0 = none yet.
    last_received: AtomicI64,
    anomalies_tx: broadcast::Sender<State>,
    windows_tx: broadcast::Sender<Window>,
}

/// Microseconds since the epoch <-> protobuf timestamps.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

pub fn micros(t: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(t.nanos / 1_000))
}

fn ts(d: &DateTime<Utc>) -> Timestamp {
    timestamp(d.timestamp_micros())
}

/// A number of a processed record, or null, in 8 bytes: null is held as NaN, which no
/// JSON number reads as (both parsers refuse what is not finite), so nothing is lost.
#[derive(Clone, Copy)]
pub struct Reading(f64);

impl Reading {
    pub fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

impl Default for Reading {
    fn default() -> Self {
        Self(f64::NAN)
    }
}

impl From<Option<f64>> for Reading {
    fn from(v: Option<f64>) -> Self {
        Self(v.unwrap_or(f64::NAN))
    }
}

impl PartialEq for Reading {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// A processed record's numbers the store keeps.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Readings {
    pub latitude: Reading,
    pub longitude: Reading,
    pub heading: Reading,
    pub velocity_knots: Reading,
    pub altitude_ft: Reading,
    pub vertical_rate_fpm: Reading,
    pub seconds_since_previous: Reading,
    pub position_jump_km: Reading,
    pub speed_mismatch_knots: Reading,
    pub climb_mismatch_fpm: Reading,
    pub anomaly_score: Reading,
}

/// One report of an aircraft's track as the store holds it: the processed state but its
/// icao24 (the track's key). Its strings are shared with the aircraft's previous report
/// when they are the same (a callsign, a squawk, a country, a flight phase rarely change
/// from one report to the next), so taking in a report of a known aircraft allocates
/// nothing in the common case.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Event time, microseconds since the epoch.
    pub micros: i64,
    pub callsign: Option<Arc<str>>,
    pub origin_country: Arc<str>,
    pub squawk: Option<Arc<str>>,
    pub flight_phase: Arc<str>,
    pub on_ground: bool,
    pub is_anomaly: bool,
    pub readings: Readings,
}

impl Report {
    /// The report as the gRPC API's state of aircraft `icao24`.
    pub fn state(&self, icao24: &str) -> State {
        StateRef {
            micros: self.micros,
            icao24,
            callsign: self.callsign.as_deref(),
            origin_country: &self.origin_country,
            squawk: self.squawk.as_deref(),
            flight_phase: &self.flight_phase,
            on_ground: self.on_ground,
            is_anomaly: self.is_anomaly,
            readings: self.readings,
        }
        .state()
    }
}

/// A processed record's payload as read, its strings borrowed from the payload (or from
/// serde_json's reading of it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct StateRef<'a> {
    micros: i64,
    icao24: &'a str,
    /// Trimmed.
    callsign: Option<&'a str>,
    origin_country: &'a str,
    squawk: Option<&'a str>,
    flight_phase: &'a str,
    on_ground: bool,
    is_anomaly: bool,
    readings: Readings,
}

impl StateRef<'_> {
    fn state(&self) -> State {
        let r = &self.readings;
        State {
            timestamp: Some(timestamp(self.micros)),
            icao24: self.icao24.to_owned(),
            callsign: self.callsign.map(str::to_owned),
            origin_country: self.origin_country.to_owned(),
            latitude: r.latitude.get(),
            longitude: r.longitude.get(),
            velocity_knots: r.velocity_knots.get(),
            altitude_ft: r.altitude_ft.get(),
            vertical_rate_fpm: r.vertical_rate_fpm.get(),
            heading: r.heading.get(),
            on_ground: self.on_ground,
            squawk: self.squawk.map(str::to_owned),
            flight_phase: self.flight_phase.to_owned(),
            anomaly_score: r.anomaly_score.get(),
            is_anomaly: self.is_anomaly,
            speed_mismatch_knots: r.speed_mismatch_knots.get(),
            climb_mismatch_fpm: r.climb_mismatch_fpm.get(),
            position_jump_km: r.position_jump_km.get(),
            seconds_since_previous: r.seconds_since_previous.get(),
        }
    }

    /// The report to hold, its strings shared with `previous`'s where they are equal.
    fn report(&self, previous: Option<&Report>) -> Report {
        fn share(previous: Option<&Arc<str>>, s: &str) -> Arc<str> {
            match previous {
                Some(p) if **p == *s => Arc::clone(p),
                _ => Arc::from(s),
            }
        }
        let share_opt = |previous: Option<&Option<Arc<str>>>, s: Option<&str>| {
            s.map(|s| share(previous.and_then(Option::as_ref), s))
        };
        Report {
            micros: self.micros,
            callsign: share_opt(previous.map(|p| &p.callsign), self.callsign),
            origin_country: share(previous.map(|p| &p.origin_country), self.origin_country),
            squawk: share_opt(previous.map(|p| &p.squawk), self.squawk),
            flight_phase: share(previous.map(|p| &p.flight_phase), self.flight_phase),
            on_ground: self.on_ground,
            is_anomaly: self.is_anomaly,
            readings: self.readings,
        }
    }
}

#[derive(Deserialize)]
struct ProcessedJson {
    timestamp: DateTime<Utc>,
    icao24: String,
    callsign: Option<String>,
    origin_country: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    velocity_knots: Option<f64>,
    altitude_ft: Option<f64>,
    vertical_rate_fpm: Option<f64>,
    heading: Option<f64>,
    on_ground: bool,
    squawk: Option<String>,
    flight_phase: String,
    anomaly_score: Option<f64>,
    is_anomaly: Option<bool>,
    speed_mismatch_knots: Option<f64>,
    climb_mismatch_fpm: Option<f64>,
    position_jump_km: Option<f64>,
    seconds_since_previous: Option<f64>,
}

#[derive(Deserialize)]
struct WindowJson {
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    #[serde(default)]
    icao24: Option<String>,
    event_count: i64,
    anomaly_count: i64,
    avg_velocity: Option<f64>,
    min_velocity: Option<f64>,
    max_velocity: Option<f64>,
    avg_altitude: Option<f64>,
    min_altitude: Option<f64>,
    max_altitude: Option<f64>,
    #[serde(default)]
    unique_aircraft: Option<i64>,
    avg_anomaly_score: Option<f64>,
}

/// A processed record's payload as the store reads it: its event time (microseconds) and
/// its state. Payloads written the way the pipeline writes them go through a hand-written
/// parser; anything else (escapes, other time zones, a duplicate key, a missing field, ...)
/// through serde_json, which reads it or says what is wrong. Both give the same state for
/// what the first takes (`tests/fuzz.rs`).
#[doc(hidden)]
pub fn parse_state(payload: &[u8]) -> Result<(i64, State), String> {
    match parse_state_fast(payload) {
        Some(parsed) => Ok(parsed),
        None => parse_state_with_serde(payload),
    }
}

/// [`parse_state`] by serde_json alone (the reference the fast parser is tested against).
#[doc(hidden)]
pub fn parse_state_with_serde(payload: &[u8]) -> Result<(i64, State), String> {
    let r = read_with_serde(payload)?;
    let s = r.state_ref();
    Ok((s.micros, s.state()))
}

fn read_with_serde(payload: &[u8]) -> Result<ProcessedJson, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

impl ProcessedJson {
    fn state_ref(&self) -> StateRef<'_> {
        StateRef {
            micros: self.timestamp.timestamp_micros(),
            icao24: &self.icao24,
            callsign: self.callsign.as_deref().map(str::trim),
            origin_country: &self.origin_country,
            squawk: self.squawk.as_deref(),
            flight_phase: &self.flight_phase,
            on_ground: self.on_ground,
            is_anomaly: self.is_anomaly.unwrap_or(false),
            readings: Readings {
                latitude: self.latitude.into(),
                longitude: self.longitude.into(),
                heading: self.heading.into(),
                velocity_knots: self.velocity_knots.into(),
                altitude_ft: self.altitude_ft.into(),
                vertical_rate_fpm: self.vertical_rate_fpm.into(),
                seconds_since_previous: self.seconds_since_previous.into(),
                position_jump_km: self.position_jump_km.into(),
                speed_mismatch_knots: self.speed_mismatch_knots.into(),
                climb_mismatch_fpm: self.climb_mismatch_fpm.into(),
                anomaly_score: self.anomaly_score.into(),
            },
        }
    }
}

/// The processed record's keys the live store reads; the others are skipped. A key's
/// position here is its field id.
const STATE_KEYS: [&str; 19] = [
    "timestamp",
    "icao24",
    "callsign",
    "origin_country",
    "latitude",
    "longitude",
    "heading",
    "on_ground",
    "squawk",
    "velocity_knots",
    "altitude_ft",
    "vertical_rate_fpm",
    "flight_phase",
    "seconds_since_previous",
    "position_jump_km",
    "speed_mismatch_knots",
    "climb_mismatch_fpm",
    "anomaly_score",
    "is_anomaly",
];

/// The fields [`ProcessedJson`] requires (the others are `Option`s): `timestamp`,
/// `icao24`, `origin_country`, `on_ground`, `flight_phase`.
const STATE_REQUIRED: u32 = 1 << 0 | 1 << 1 | 1 << 3 | 1 << 7 | 1 << 12;

/// The keys of a processed record as the default SQL's records hold them (the processed
/// contract's columns, in order), each with its field id in [`STATE_KEYS`] if the store
/// reads it. The parser compares each key of a record with the one the contract puts next,
/// so the keys of such a record, read or skipped, are matched without a lookup.
struct ProcessedKeys {
    keys: Vec<&'static str>,
    field: Vec<Option<u32>>,
}

static PROCESSED_KEYS: LazyLock<ProcessedKeys> = LazyLock::new(|| {
    let keys: Vec<&'static str> = crate::schema::processed_contract_keys().collect();
    let field = keys
        .iter()
        .map(|k| STATE_KEYS.iter().position(|s| s == k).map(|p| p as u32))
        .collect();
    ProcessedKeys { keys, field }
});

/// How deep skipped values may nest (serde_json allows 128).
const SKIP_DEPTH: u32 = 32;

/// [`parse_state`]'s hand-written parser alone: `None` for what it leaves to serde_json.
#[doc(hidden)]
pub fn parse_state_fast(payload: &[u8]) -> Option<(i64, State)> {
    read_fast(payload).map(|r| (r.micros, r.state()))
}

fn read_fast(payload: &[u8]) -> Option<StateRef<'_>> {
    let mut c = Cursor::new(std::str::from_utf8(payload).ok()?);
    let mut s = StateRef {
        micros: 0,
        icao24: "",
        callsign: None,
        origin_country: "",
        squawk: None,
        flight_phase: "",
        on_ground: false,
        is_anomaly: false,
        readings: Readings::default(),
    };
    let r = &mut s.readings;
    let mut seen = 0u32;
    let table = &*PROCESSED_KEYS;
    c.object_keyed(&table.keys, |c, key| {
        let Some(field) = key.and_then(|k| table.field[k as usize]) else {
            return c.skip_value(SKIP_DEPTH);
        };
        if seen & (1 << field) != 0 {
            return None;
        }
        seen |= 1 << field;
        let num = Cursor::f64;
        match field {
            0 => s.micros = c.timestamp()?,
            1 => s.icao24 = c.string()?,
            2 => s.callsign = c.nullable(Cursor::string)?.map(str::trim),
            3 => s.origin_country = c.string()?,
            4 => r.latitude = c.nullable(num)?.into(),
            5 => r.longitude = c.nullable(num)?.into(),
            6 => r.heading = c.nullable(num)?.into(),
            7 => s.on_ground = c.bool()?,
            8 => s.squawk = c.nullable(Cursor::string)?,
            9 => r.velocity_knots = c.nullable(num)?.into(),
            10 => r.altitude_ft = c.nullable(num)?.into(),
            11 => r.vertical_rate_fpm = c.nullable(num)?.into(),
            12 => s.flight_phase = c.string()?,
            13 => r.seconds_since_previous = c.nullable(num)?.into(),
            14 => r.position_jump_km = c.nullable(num)?.into(),
            15 => r.speed_mismatch_knots = c.nullable(num)?.into(),
            16 => r.climb_mismatch_fpm = c.nullable(num)?.into(),
            17 => r.anomaly_score = c.nullable(num)?.into(),
            _ => s.is_anomaly = c.nullable(Cursor::bool)?.unwrap_or(false),
        }
        Some(())
    })?;
    (seen & STATE_REQUIRED == STATE_REQUIRED).then_some(s)
}

impl LiveStore {
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            inner: RwLock::default(),
            ready: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            records: AtomicU64::new(0),
            states: AtomicU64::new(0),
            last_received: AtomicI64::new(0),
            anomalies_tx: broadcast::channel(1024).0,
            windows_tx: broadcast::channel(256).0,
        }
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// The store has read what the topics held when it started.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn subscribe_anomalies(&self) -> broadcast::Receiver<State> {
        self.anomalies_tx.subscribe()
    }

    pub fn subscribe_windows(&self) -> broadcast::Receiver<Window> {
        self.windows_tx.subscribe()
    }

    /// Adds one output-topic payload. A payload that is not the topic's contract is an
    /// error (the caller counts it); nothing else changes then.
    pub fn add(&self, feed: Feed, payload: &[u8]) -> Result<(), String> {
        let result = match feed {
            Feed::Processed => self.add_state(payload),
            Feed::Windows | Feed::AircraftWindows => self.add_window(feed, payload),
        };
        match &result {
            Ok(()) => self.records.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.rejected.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    fn add_state(&self, payload: &[u8]) -> Result<(), String> {
        let slow;
        let state = match read_fast(payload) {
            Some(s) => s,
            None => {
                slow = read_with_serde(payload)?;
                slow.state_ref()
            }
        };
        let event_micros = state.micros;
        let mut inner = self.inner.write().expect("store lock");
        let newest = inner.newest.map_or(event_micros, |n| n.max(event_micros));
        inner.newest = Some(newest);
        let (second, newest_second) = (
            event_micros.div_euclid(1_000_000),
            newest.div_euclid(1_000_000),
        );
        if second > newest_second - ACTIVITY_SECONDS {
            let a = inner.activity.entry(second).or_default();
            a.records += 1;
            a.anomalies += u64::from(state.is_anomaly);
            while inner
                .activity
                .first_key_value()
                .is_some_and(|(s, _)| *s <= newest_second - ACTIVITY_SECONDS)
            {
                inner.activity.pop_first();
            }
        }
        self.states.fetch_add(1, Ordering::Relaxed);
        self.last_received
            .store(chrono::Utc::now().timestamp_micros(), Ordering::Relaxed);
        if state.is_anomaly {
            let anomaly = state.state();
            if inner.anomalies.len() >= self.limits.max_anomalies {
                inner.anomalies.pop_front();
            }
            inner.anomalies.push_back(anomaly.clone());
            // No subscriber is not an error.
            let _ = self.anomalies_tx.send(anomaly);
        }
        let track_points = self.limits.track_points.max(1);
        if let Some(track) = inner.aircraft.get_mut(state.icao24) {
            let report = state.report(track.back());
            if track.len() >= track_points {
                track.pop_front();
            }
            track.push_back(report);
        } else {
            let mut track = VecDeque::with_capacity(track_points.min(16));
            track.push_back(state.report(None));
            inner.aircraft.insert(state.icao24.to_owned(), track);
        }
        if inner.aircraft.len() > self.limits.max_aircraft + self.limits.max_aircraft / 10 {
            evict_least_recent(&mut inner.aircraft, self.limits.max_aircraft);
        }
        Ok(())
    }

    fn add_window(&self, feed: Feed, payload: &[u8]) -> Result<(), String> {
        let w: WindowJson = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        let start = w.window_start.timestamp_micros();
        let mut inner = self.inner.write().expect("store lock");
        if feed == Feed::Windows {
            let window = Window {
                window_start: Some(ts(&w.window_start)),
                window_end: Some(ts(&w.window_end)),
                event_count: w.event_count,
                anomaly_count: w.anomaly_count,
                avg_velocity: w.avg_velocity,
                min_velocity: w.min_velocity,
                max_velocity: w.max_velocity,
                avg_altitude: w.avg_altitude,
                min_altitude: w.min_altitude,
                max_altitude: w.max_altitude,
                unique_aircraft: w
                    .unique_aircraft
                    .ok_or("a window row without unique_aircraft")?,
                avg_anomaly_score: w.avg_anomaly_score,
            };
            inner.windows.insert(start, window);
            while inner.windows.len() > self.limits.max_windows {
                inner.windows.pop_first();
            }
            let _ = self.windows_tx.send(window);
        } else {
            let icao24 = w.icao24.ok_or("an aircraft window row without icao24")?;
            let window = AircraftWindow {
                window_start: Some(ts(&w.window_start)),
                window_end: Some(ts(&w.window_end)),
                icao24: icao24.clone(),
                event_count: w.event_count,
                anomaly_count: w.anomaly_count,
                avg_velocity: w.avg_velocity,
                min_velocity: w.min_velocity,
                max_velocity: w.max_velocity,
                avg_altitude: w.avg_altitude,
                min_altitude: w.min_altitude,
                max_altitude: w.max_altitude,
                avg_anomaly_score: w.avg_anomaly_score,
            };
            inner.aircraft_windows.insert((start, icao24), window);
            while inner.aircraft_windows.len() > self.limits.max_aircraft_windows {
                inner.aircraft_windows.pop_first();
            }
        }
        Ok(())
    }

    /// Global windows with start in [from, to), oldest first, at most `limit`.
    pub fn windows(&self, from: i64, to: i64, limit: usize) -> Vec<Window> {
        let inner = self.inner.read().expect("store lock");
        if from >= to {
            return Vec::new();
        }
        inner
            .windows
            .range(from..to)
            .take(limit)
            .map(|(_, w)| *w)
            .collect()
    }

    /// Start of the oldest global window held, if any.
    pub fn oldest_window(&self) -> Option<i64> {
        self.inner
            .read()
            .expect("store lock")
            .windows
            .first_key_value()
            .map(|(k, _)| *k)
    }

    /// Per-aircraft windows with start in [from, to) after `after` (exclusive, for paging),
    /// oldest first, for one aircraft or all.
    pub fn aircraft_windows(
        &self,
        icao24: Option<&str>,
        from: i64,
        to: i64,
        after: Option<&(i64, String)>,
        limit: usize,
    ) -> Vec<AircraftWindow> {
        let inner = self.inner.read().expect("store lock");
        // A page token at or past the range's end (a token from a wider range) leaves
        // nothing; as a lower bound it would make the range empty or inverted, which
        // `BTreeMap::range` panics on.
        if from >= to || after.is_some_and(|a| a.0 >= to) {
            return Vec::new();
        }
        let lower = match after {
            Some(a) if a.0 >= from => std::ops::Bound::Excluded(a.clone()),
            _ => std::ops::Bound::Included((from, String::new())),
        };
        inner
            .aircraft_windows
            .range((lower, std::ops::Bound::Excluded((to, String::new()))))
            .filter(|((_, i), _)| icao24.is_none_or(|q| q == i))
            .take(limit)
            .map(|(_, w)| w.clone())
            .collect()
    }

    /// Anomalies newest first.
    pub fn anomalies(&self, keep: impl Fn(&State) -> bool, limit: usize) -> Vec<Anomaly> {
        let inner = self.inner.read().expect("store lock");
        inner
            .anomalies
            .iter()
            .rev()
            .filter(|s| keep(s))
            .take(limit)
            .map(|s| Anomaly {
                state: Some(s.clone()),
            })
            .collect()
    }

    /// The aircraft's recent track, oldest first.
    pub fn track(&self, icao24: &str) -> Option<Vec<State>> {
        let inner = self.inner.read().expect("store lock");
        inner
            .aircraft
            .get(icao24)
            .map(|t| t.iter().map(|r| r.state(icao24)).collect())
    }

    /// Every state held (for `Query` when there is no archive).
    pub fn all_states(&self) -> Vec<State> {
        let inner = self.inner.read().expect("store lock");
        inner
            .aircraft
            .iter()
            .flat_map(|(icao24, t)| t.iter().map(|r| r.state(icao24)))
            .collect()
    }

    pub fn all_windows(&self) -> Vec<Window> {
        let inner = self.inner.read().expect("store lock");
        inner.windows.values().cloned().collect()
    }

    pub fn all_aircraft_windows(&self) -> Vec<AircraftWindow> {
        let inner = self.inner.read().expect("store lock");
        inner.aircraft_windows.values().cloned().collect()
    }

    /// Reads the aircraft (icao24 -> recent reports, oldest first) under the store's lock.
    pub fn with_aircraft<R>(&self, f: impl FnOnce(&HashMap<String, VecDeque<Report>>) -> R) -> R {
        f(&self.inner.read().expect("store lock").aircraft)
    }

    /// Event time of the newest record and the per-second activity held, oldest first.
    pub fn activity(&self) -> (Option<i64>, Vec<(i64, Activity)>) {
        let inner = self.inner.read().expect("store lock");
        (
            inner.newest,
            inner.activity.iter().map(|(s, a)| (*s, *a)).collect(),
        )
    }

    /// Event time of the newest record (microseconds), if any arrived.
    pub fn newest(&self) -> Option<i64> {
        self.inner.read().expect("store lock").newest
    }

    /// Wall-clock time (microseconds) the newest state arrived, if any did.
    pub fn last_received(&self) -> Option<i64> {
        Some(self.last_received.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// The `n` newest global windows, oldest first.
    pub fn latest_windows(&self, n: usize) -> Vec<Window> {
        let inner = self.inner.read().expect("store lock");
        let mut w: Vec<Window> = inner.windows.values().rev().take(n).copied().collect();
        w.reverse();
        w
    }

    pub fn aircraft_count(&self) -> usize {
        self.inner.read().expect("store lock").aircraft.len()
    }
}

fn latest_micros(track: &VecDeque<Report>) -> i64 {
    track.back().map_or(i64::MIN, |r| r.micros)
}

/// Keeps the `keep` most recently seen aircraft.
fn evict_least_recent(aircraft: &mut HashMap<String, VecDeque<Report>>, keep: usize) {
    let mut seen: Vec<i64> = aircraft.values().map(latest_micros).collect();
    let cut = seen.len() - keep;
    let (_, nth, _) = seen.select_nth_unstable(cut);
    let cutoff = *nth;
    let mut over = aircraft.len() - keep;
    aircraft.retain(|_, t| {
        if over > 0 && latest_micros(t) < cutoff {
            over -= 1;
            false
        } else {
            true
        }
    });
    // Ties at the cutoff: drop arbitrary ones until the bound holds.
    while aircraft.len() > keep {
        let Some(k) = aircraft
            .iter()
            .find(|(_, t)| latest_micros(t) <= cutoff)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        aircraft.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(icao: &str, t: &str, anomaly: bool) -> Vec<u8> {
        format!(
            r#"{{"timestamp":"{t}","icao24":"{icao}","callsign":"ABC123  ","origin_country":"Germany","latitude":50.0,"longitude":8.0,"velocity_knots":400.0,"altitude_ft":35000.0,"vertical_rate_fpm":0.0,"heading":90.0,"on_ground":false,"squawk":null,"flight_phase":"cruise","anomaly_score":{},"is_anomaly":{anomaly},"speed_mismatch_knots":1.0,"climb_mismatch_fpm":2.0,"position_jump_km":3.0,"seconds_since_previous":5.0,"extra":1}}"#,
            if anomaly { 0.9 } else { 0.3 }
        )
        .into_bytes()
    }

    fn window(start: &str, end: &str, events: i64) -> Vec<u8> {
        format!(
            r#"{{"window_start":"{start}","window_end":"{end}","event_count":{events},"anomaly_count":1,"avg_velocity":200.0,"min_velocity":null,"max_velocity":null,"avg_altitude":null,"min_altitude":null,"max_altitude":null,"unique_aircraft":3,"avg_anomaly_score":0.4}}"#
        )
        .into_bytes()
    }

    #[test]
    fn every_state_key_is_a_processed_contract_key() {
        for (id, key) in STATE_KEYS.iter().enumerate() {
            let at = PROCESSED_KEYS.keys.iter().position(|k| k == key);
            let at = at.unwrap_or_else(|| panic!("{key} is not in the contract"));
            assert_eq!(PROCESSED_KEYS.field[at], Some(id as u32), "{key}");
        }
    }

    #[test]
    fn tracks_are_bounded_and_least_recent_aircraft_evicted() {
        let store = LiveStore::new(StoreLimits {
            max_aircraft: 10,
            track_points: 3,
            ..StoreLimits::default()
        });
        for i in 0..5 {
            store
                .add(
                    Feed::Processed,
                    &state("aaaaaa", &format!("2026-11-25T10:00:0{i}Z"), false),
                )
                .unwrap();
        }
        let track = store.track("aaaaaa").unwrap();
        assert_eq!(track.len(), 3);
        assert_eq!(track[0].timestamp, Some(timestamp(1_795_600_802_000_000)));
        assert_eq!(track[2].callsign.as_deref(), Some("ABC123"));
        for i in 0..20 {
            store
                .add(
                    Feed::Processed,
                    &state(
                        &format!("b{i:05}"),
                        &format!("2026-11-25T11:00:{i:02}Z"),
                        i == 7,
                    ),
                )
                .unwrap();
        }
        assert!(store.aircraft_count() <= 11, "{}", store.aircraft_count());
        assert!(
            store.track("aaaaaa").is_none(),
            "the least recently seen goes first"
        );
        assert!(store.track("b00019").is_some());
        let anomalies = store.anomalies(|_| true, 10);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].state.as_ref().unwrap().icao24, "b00007");
    }

    #[test]
    fn reports_share_the_strings_they_repeat() {
        let store = LiveStore::new(StoreLimits::default());
        let at = |s: u32| format!("2026-11-25T10:00:{s:02}Z");
        let first = state("aaaaaa", &at(0), false);
        let changed = String::from_utf8(state("aaaaaa", &at(2), false))
            .unwrap()
            .replace("cruise", "descent")
            .replace("\"latitude\":50.0", "\"latitude\":null");
        for payload in [
            first.clone(),
            state("aaaaaa", &at(1), false),
            changed.into(),
        ] {
            store.add(Feed::Processed, &payload).unwrap();
        }
        store.with_aircraft(|a| {
            let [r0, r1, r2] = [0, 1, 2].map(|i| &a["aaaaaa"][i]);
            assert!(Arc::ptr_eq(&r0.flight_phase, &r1.flight_phase));
            assert!(Arc::ptr_eq(&r1.origin_country, &r2.origin_country));
            let callsigns = [r0, r2].map(|r| r.callsign.clone().unwrap());
            assert!(Arc::ptr_eq(&callsigns[0], &callsigns[1]));
            assert_eq!(&*r2.flight_phase, "descent");
            assert_eq!(&*r1.flight_phase, "cruise");
            assert_eq!(r2.micros, 1_795_600_802_000_000);
            assert_eq!(r0.readings.latitude.get(), Some(50.0));
            assert_eq!(r2.readings.latitude.get(), None);
            assert_eq!(r2.readings.longitude.get(), Some(8.0));
        });
        assert_eq!(store.track("aaaaaa").unwrap()[2].latitude, None);
        // Read back, each is the state its payload holds.
        let (_, expected) = parse_state(&first).unwrap();
        assert_eq!(store.track("aaaaaa").unwrap()[0], expected);
    }

    #[test]
    fn what_the_fast_parser_leaves_to_serde_reads_the_same() {
        let plain = state("abc123", "2026-11-25T10:00:00Z", false);
        let fast = parse_state_fast(&plain).expect("the pipeline's way of writing");
        assert_eq!(Ok(fast.clone()), parse_state_with_serde(&plain));
        assert_eq!(fast.0, 1_795_600_800_000_000);
        let text = String::from_utf8(plain).unwrap();
        // (from, to, the fast parser takes it): an escape and another time zone go to
        // serde_json; a nested value to skip and whitespace do not.
        for (from, to, fast_takes) in [
            ("\"ABC123  \"", "\"AB\\u0043123  \"", false),
            ("10:00:00Z", "11:00:00+01:00", false),
            (
                "\"extra\":1",
                "\"extra\":{\"a\":[1,\"x\\\"\",null,{}]}",
                true,
            ),
            (",", " ,\n ", true),
        ] {
            let variant = text.replace(from, to);
            assert_ne!(variant, text);
            assert_eq!(parse_state(variant.as_bytes()).unwrap(), fast, "{variant}");
            let taken = parse_state_fast(variant.as_bytes());
            assert_eq!(taken.is_some(), fast_takes, "{variant}");
        }
        // A field twice or a required one missing: serde_json's error.
        let twice = text.replace("\"heading\"", "\"on_ground\":true,\"heading\"");
        assert!(
            parse_state(twice.as_bytes())
                .unwrap_err()
                .contains("duplicate field")
        );
        let missing = text.replace("\"flight_phase\":\"cruise\",", "");
        assert!(
            parse_state(missing.as_bytes())
                .unwrap_err()
                .contains("missing field")
        );
    }

    #[test]
    fn bad_payloads_are_rejected_and_counted() {
        let store = LiveStore::new(StoreLimits::default());
        assert!(store.add(Feed::Processed, b"{not json").is_err());
        assert!(
            store
                .add(Feed::Windows, br#"{"window_start":"x"}"#)
                .is_err()
        );
        assert!(
            store
                .add(
                    Feed::AircraftWindows,
                    &window("2026-11-25T10:00:00Z", "2026-11-25T10:10:00Z", 1)
                )
                .is_err()
        );
        assert_eq!(store.rejected.load(Ordering::Relaxed), 3);
        assert_eq!(store.records.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn windows_by_range_oldest_first_and_bounded() {
        let store = LiveStore::new(StoreLimits {
            max_windows: 3,
            ..StoreLimits::default()
        });
        let mut rx = store.subscribe_windows();
        for m in 0..5 {
            store
                .add(
                    Feed::Windows,
                    &window(
                        &format!("2026-11-25T10:{m}0:00Z"),
                        &format!("2026-11-25T10:{}0:00Z", m + 1),
                        m,
                    ),
                )
                .unwrap();
        }
        assert_eq!(rx.try_recv().unwrap().event_count, 0);
        let all = store.windows(i64::MIN, i64::MAX, 100);
        assert_eq!(
            all.iter().map(|w| w.event_count).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let t = |m: i64| 1_795_600_800_000_000 + m * 60_000_000;
        assert_eq!(store.windows(t(30), t(40), 100).len(), 1);
        assert_eq!(store.windows(t(20), t(50), 2).len(), 2);
        assert_eq!(store.oldest_window(), Some(t(20)));
    }

    #[test]
    fn timestamps_round_trip_and_bad_nanos_are_refused() {
        for m in [0, 1, -1, 1_795_600_800_123_456, -1_795_600_800_123_456] {
            assert_eq!(micros(&timestamp(m)), Some(m));
        }
        assert_eq!(
            micros(&Timestamp {
                seconds: 1,
                nanos: -1
            }),
            None
        );
        assert_eq!(
            micros(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
    }
}
