//! What the dashboard shows, computed from the live store: KPIs, the aircraft on the map
//! (filtered, newest first, with short trails), anomalies with the signal that stands out,
//! emergencies, and windows (closed ones from the pipeline, the open ones provisional from
//! the store's per-second activity). Pure functions of the store and `now`, so the page,
//! the JSON API and the tests see the same numbers.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::query::proto::{State, Window};
use crate::query::store::{Activity, LiveStore, Report, micros};

/// Seconds of event time behind `events_per_s`.
pub const RATE_SECONDS: i64 = 60;
/// Seconds of event time behind `anomaly_rate`.
pub const ANOMALY_RATE_SECONDS: i64 = 600;
/// Positions in an aircraft's trail on the map (the latest included).
pub const TRAIL_POINTS: usize = 12;
/// Closed windows sent with a snapshot (6 hours of 10-minute windows).
pub const SNAPSHOT_WINDOWS: usize = 36;
/// Anomalies sent with a snapshot.
pub const SNAPSHOT_ANOMALIES: usize = 25;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Microseconds without a new record before the data counts as stale.
    pub stale_after: i64,
    /// An aircraft is tracked while its last report is at most this much (microseconds)
    /// older than the newest record.
    pub track_timeout: i64,
}

/// Which aircraft a caller wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Feet; an aircraft without altitude is left out when a bound is set.
    pub min_altitude_ft: Option<f64>,
    pub max_altitude_ft: Option<f64>,
    /// Lower-case; matches a substring of the callsign or the icao24.
    pub search: Option<String>,
    /// Only aircraft with an anomaly among their recent reports.
    pub anomalies_only: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// `waiting` (nothing processed yet), `live`, or `stale` (nothing new for `stale_after`).
    pub status: &'static str,
    pub generated_at: String,
    /// Aircraft tracked (reported within the track timeout of the newest record).
    pub aircraft: usize,
    /// Records per second over the last minute of event time.
    pub events_per_s: f64,
    /// Anomalies / records over the last 10 minutes of event time.
    pub anomaly_rate: Option<f64>,
    /// Over tracked airborne aircraft.
    pub avg_altitude_ft: Option<f64>,
    pub avg_speed_knots: Option<f64>,
    /// Event time of the newest record.
    pub newest_record: Option<String>,
    /// Age of the newest record (now - its event time).
    pub freshness_s: Option<f64>,
    /// Wall-clock seconds since the newest state arrived.
    pub last_received_s: Option<f64>,
    pub stale_after_s: f64,
    pub track_timeout_s: f64,
    /// States the store has taken in since it started.
    pub records: u64,
    /// Tracked aircraft squawking 7500, 7600 or 7700.
    pub emergencies: usize,
    /// What the pipeline wants its operator to know: a rejected SQL or model edit.
    pub notices: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AircraftItem {
    pub icao24: String,
    pub callsign: Option<String>,
    pub country: String,
    pub time: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub altitude_ft: Option<f64>,
    pub speed_knots: Option<f64>,
    pub vertical_rate_fpm: Option<f64>,
    pub heading: Option<f64>,
    pub on_ground: bool,
    pub squawk: Option<String>,
    /// `hijack` (7500), `radio failure` (7600), `emergency` (7700).
    pub emergency: Option<&'static str>,
    pub phase: String,
    pub score: Option<f64>,
    /// The latest report is flagged.
    pub anomaly: bool,
    /// Any report in the held track is flagged.
    pub recent_anomaly: bool,
    /// [latitude, longitude], oldest first, the latest included.
    pub trail: Vec<[f64; 2]>,
}

/// One report of an aircraft's held track (`/api/aircraft/{icao24}`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrackPoint {
    pub time: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub altitude_ft: Option<f64>,
    pub speed_knots: Option<f64>,
    pub score: Option<f64>,
    pub anomaly: bool,
}

impl From<&State> for TrackPoint {
    fn from(s: &State) -> Self {
        Self {
            time: rfc3339(state_micros(s)),
            latitude: s.latitude,
            longitude: s.longitude,
            altitude_ft: s.altitude_ft.map(|v| round(v, 0)),
            speed_knots: s.velocity_knots.map(|v| round(v, 1)),
            score: s.anomaly_score.map(|v| round(v, 4)),
            anomaly: s.is_anomaly,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AircraftList {
    pub tracked: usize,
    /// Tracked aircraft that pass the filter.
    pub matched: usize,
    /// Newest first, at most the limit.
    pub aircraft: Vec<AircraftItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnomalyItem {
    pub time: String,
    pub icao24: String,
    pub callsign: Option<String>,
    pub score: Option<f64>,
    /// The feature that stands out: `emergency squawk`, `position jump`, `speed mismatch`,
    /// `climb mismatch`, `reporting gap` or `unusual combination`.
    pub signal: &'static str,
    pub squawk: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub altitude_ft: Option<f64>,
    pub speed_knots: Option<f64>,
    pub vertical_rate_fpm: Option<f64>,
    pub phase: String,
    pub speed_mismatch_knots: Option<f64>,
    pub climb_mismatch_fpm: Option<f64>,
    pub position_jump_km: Option<f64>,
    pub seconds_since_previous: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowItem {
    pub start: String,
    pub end: String,
    /// Still open: counted from the live store, not yet emitted by the pipeline.
    pub open: bool,
    pub events: i64,
    pub anomalies: i64,
    pub aircraft: Option<i64>,
    pub avg_speed_knots: Option<f64>,
    pub avg_altitude_ft: Option<f64>,
    pub avg_score: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    pub summary: Summary,
    pub aircraft: AircraftList,
    pub anomalies: Vec<AnomalyItem>,
    /// Tracked aircraft squawking an emergency code (filters do not hide them).
    pub emergencies: Vec<AircraftItem>,
    /// Oldest first: closed windows, then open ones.
    pub windows: Vec<WindowItem>,
}

fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn state_micros(s: &State) -> i64 {
    s.timestamp.as_ref().and_then(micros).unwrap_or(i64::MIN)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn emergency(squawk: Option<&str>) -> Option<&'static str> {
    match squawk? {
        "7500" => Some("hijack"),
        "7600" => Some("radio failure"),
        "7700" => Some("emergency"),
        _ => None,
    }
}

/// The feature of a flagged report that stands out most, by fixed thresholds far above
/// normal traffic (the model itself does not say why it scored a record).
pub fn signal(s: &State) -> &'static str {
    let big = |v: Option<f64>, limit: f64| v.is_some_and(|v| v.abs() >= limit);
    if emergency(s.squawk.as_deref()).is_some() {
        "emergency squawk"
    } else if big(s.speed_mismatch_knots, 250.0) && big(s.position_jump_km, 5.0) {
        "position jump"
    } else if big(s.speed_mismatch_knots, 100.0) {
        "speed mismatch"
    } else if big(s.climb_mismatch_fpm, 2_000.0) {
        "climb mismatch"
    } else if big(s.seconds_since_previous, 120.0) {
        "reporting gap"
    } else {
        "unusual combination"
    }
}

fn aircraft_item(icao24: &str, track: &VecDeque<Report>) -> Option<AircraftItem> {
    let s = track.back()?;
    let r = &s.readings;
    Some(AircraftItem {
        icao24: icao24.to_owned(),
        callsign: s
            .callsign
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        country: s.origin_country.to_string(),
        time: rfc3339(s.micros),
        latitude: r.latitude.get(),
        longitude: r.longitude.get(),
        altitude_ft: r.altitude_ft.get().map(|v| round(v, 0)),
        speed_knots: r.velocity_knots.get().map(|v| round(v, 1)),
        vertical_rate_fpm: r.vertical_rate_fpm.get().map(|v| round(v, 0)),
        heading: r.heading.get().map(|v| round(v, 1)),
        on_ground: s.on_ground,
        squawk: s.squawk.as_deref().map(str::to_owned),
        emergency: emergency(s.squawk.as_deref()),
        phase: s.flight_phase.to_string(),
        score: r.anomaly_score.get().map(|v| round(v, 4)),
        anomaly: s.is_anomaly,
        recent_anomaly: track.iter().any(|t| t.is_anomaly),
        trail: track
            .iter()
            .skip(track.len().saturating_sub(TRAIL_POINTS))
            .filter_map(|t| {
                Some([
                    round(t.readings.latitude.get()?, 4),
                    round(t.readings.longitude.get()?, 4),
                ])
            })
            .collect(),
    })
}

fn anomaly_item(s: &State) -> AnomalyItem {
    let r1 = |v: Option<f64>| v.map(|v| round(v, 1));
    AnomalyItem {
        time: rfc3339(state_micros(s)),
        icao24: s.icao24.clone(),
        callsign: s.callsign.clone().filter(|c| !c.is_empty()),
        score: s.anomaly_score.map(|v| round(v, 4)),
        signal: signal(s),
        squawk: s.squawk.clone(),
        latitude: s.latitude,
        longitude: s.longitude,
        altitude_ft: s.altitude_ft.map(|v| round(v, 0)),
        speed_knots: r1(s.velocity_knots),
        vertical_rate_fpm: s.vertical_rate_fpm.map(|v| round(v, 0)),
        phase: s.flight_phase.clone(),
        speed_mismatch_knots: r1(s.speed_mismatch_knots),
        climb_mismatch_fpm: s.climb_mismatch_fpm.map(|v| round(v, 0)),
        position_jump_km: s.position_jump_km.map(|v| round(v, 2)),
        seconds_since_previous: r1(s.seconds_since_previous),
    }
}

impl Filter {
    fn keeps(&self, item: &AircraftItem) -> bool {
        if self.min_altitude_ft.is_some() || self.max_altitude_ft.is_some() {
            let Some(alt) = item.altitude_ft else {
                return false;
            };
            if self.min_altitude_ft.is_some_and(|m| alt < m)
                || self.max_altitude_ft.is_some_and(|m| alt > m)
            {
                return false;
            }
        }
        if let Some(q) = &self.search {
            let callsign = item.callsign.as_deref().unwrap_or("").to_lowercase();
            if !callsign.contains(q.as_str()) && !item.icao24.contains(q.as_str()) {
                return false;
            }
        }
        !self.anomalies_only || item.recent_anomaly
    }
}

/// The aircraft's latest report time and map item, when that report is at or after
/// `cutoff` (the aircraft is tracked).
fn tracked_item(
    icao24: &str,
    track: &VecDeque<Report>,
    cutoff: i64,
) -> Option<(i64, AircraftItem)> {
    let at = track.back()?.micros;
    (at >= cutoff).then(|| Some((at, aircraft_item(icao24, track)?)))?
}

/// The tracked aircraft (newest report first; ties by icao24) as map items.
fn tracked(aircraft: &HashMap<String, VecDeque<Report>>, cutoff: i64) -> Vec<(i64, AircraftItem)> {
    let mut items: Vec<(i64, AircraftItem)> = aircraft
        .iter()
        .filter_map(|(icao24, t)| tracked_item(icao24, t, cutoff))
        .collect();
    items.sort_by(|(a, x), (b, y)| b.cmp(a).then_with(|| x.icao24.cmp(&y.icao24)));
    items
}

pub struct View<'a> {
    pub store: &'a LiveStore,
    pub settings: Settings,
    /// Wall clock, microseconds.
    pub now: i64,
    pub notices: Vec<String>,
}

impl View<'_> {
    /// Reports older than this (microseconds) are not tracked: `track_timeout` before the
    /// newest record.
    fn cutoff(&self, newest: i64) -> i64 {
        newest.saturating_sub(self.settings.track_timeout)
    }

    /// The tracked aircraft, given the newest record's time (none before any record).
    fn tracked_items(&self, newest: Option<i64>) -> Vec<(i64, AircraftItem)> {
        newest.map_or_else(Vec::new, |n| {
            self.store.with_aircraft(|a| tracked(a, self.cutoff(n)))
        })
    }

    pub fn summary(&self) -> Summary {
        let (newest, activity) = self.store.activity();
        let items = self.tracked_items(newest);
        self.summary_of(newest, &activity, &items)
    }

    fn summary_of(
        &self,
        newest: Option<i64>,
        activity: &[(i64, Activity)],
        items: &[(i64, AircraftItem)],
    ) -> Summary {
        let last_received = self.store.last_received();
        let status = match (newest, last_received) {
            (None, _) | (_, None) => "waiting",
            (_, Some(t)) if self.now - t > self.settings.stale_after => "stale",
            _ => "live",
        };
        let mean = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let airborne = || items.iter().map(|(_, i)| i).filter(|i| !i.on_ground);
        let sum_over = |seconds: i64| {
            let Some(n) = newest else {
                return Activity::default();
            };
            let end = n.div_euclid(1_000_000);
            activity
                .iter()
                .filter(|(s, _)| *s >= end - seconds && *s < end)
                .fold(Activity::default(), |acc, (_, a)| Activity {
                    records: acc.records + a.records,
                    anomalies: acc.anomalies + a.anomalies,
                })
        };
        let minute = sum_over(RATE_SECONDS);
        let recent = sum_over(ANOMALY_RATE_SECONDS);
        Summary {
            status,
            generated_at: rfc3339(self.now),
            aircraft: items.len(),
            events_per_s: round(minute.records as f64 / RATE_SECONDS as f64, 2),
            anomaly_rate: (recent.records > 0)
                .then(|| round(recent.anomalies as f64 / recent.records as f64, 6)),
            avg_altitude_ft: mean(airborne().filter_map(|i| i.altitude_ft).collect())
                .map(|v| round(v, 1)),
            avg_speed_knots: mean(airborne().filter_map(|i| i.speed_knots).collect())
                .map(|v| round(v, 1)),
            newest_record: newest.map(rfc3339),
            freshness_s: newest.map(|n| round((self.now - n) as f64 / 1e6, 1)),
            last_received_s: last_received.map(|t| round((self.now - t) as f64 / 1e6, 1)),
            stale_after_s: self.settings.stale_after as f64 / 1e6,
            track_timeout_s: self.settings.track_timeout as f64 / 1e6,
            records: self.store.states.load(std::sync::atomic::Ordering::Relaxed),
            emergencies: items.iter().filter(|(_, i)| i.emergency.is_some()).count(),
            notices: self.notices.clone(),
        }
    }

    pub fn aircraft(&self, filter: &Filter, limit: usize) -> AircraftList {
        let items = self.tracked_items(self.store.newest());
        list(&items, filter, limit)
    }

    /// The aircraft's map item while it is tracked.
    pub fn tracked_aircraft(&self, icao24: &str) -> Option<AircraftItem> {
        let cutoff = self.cutoff(self.store.newest()?);
        self.store
            .with_aircraft(|a| tracked_item(icao24, a.get(icao24)?, cutoff))
            .map(|(_, item)| item)
    }

    pub fn anomalies(&self, limit: usize) -> Vec<AnomalyItem> {
        self.store
            .anomalies(|_| true, limit)
            .iter()
            .filter_map(|a| a.state.as_ref().map(anomaly_item))
            .collect()
    }

    /// Closed windows (the newest `closed`), then the open ones from the store's activity.
    pub fn windows(&self, closed: usize) -> Vec<WindowItem> {
        let (_, activity) = self.store.activity();
        windows(&self.store.latest_windows(closed), &activity)
    }

    pub fn snapshot(&self, filter: &Filter, limit: usize) -> Snapshot {
        let (newest, activity) = self.store.activity();
        let items = self.tracked_items(newest);
        Snapshot {
            summary: self.summary_of(newest, &activity, &items),
            aircraft: list(&items, filter, limit),
            anomalies: self.anomalies(SNAPSHOT_ANOMALIES),
            emergencies: items
                .iter()
                .filter(|(_, i)| i.emergency.is_some())
                .map(|(_, i)| i.clone())
                .collect(),
            windows: windows(&self.store.latest_windows(SNAPSHOT_WINDOWS), &activity),
        }
    }
}

fn list(items: &[(i64, AircraftItem)], filter: &Filter, limit: usize) -> AircraftList {
    let matched: Vec<&AircraftItem> = items
        .iter()
        .map(|(_, i)| i)
        .filter(|i| filter.keeps(i))
        .collect();
    AircraftList {
        tracked: items.len(),
        matched: matched.len(),
        aircraft: matched.into_iter().take(limit).cloned().collect(),
    }
}

const KNOTS_PER_MPS: f64 = 1.943_844_492_440_6;
const FEET_PER_METRE: f64 = 3.280_839_895_01;

fn windows(closed: &[Window], activity: &[(i64, Activity)]) -> Vec<WindowItem> {
    let span = |w: &Window| {
        (
            w.window_start.as_ref().and_then(micros).unwrap_or(0),
            w.window_end.as_ref().and_then(micros).unwrap_or(0),
        )
    };
    // The pipeline's window length, else the default 10 minutes.
    let length = closed
        .last()
        .map(&span)
        .map_or(600, |(s, e)| ((e - s) / 1_000_000).max(1));
    let last_closed = closed.last().map(|w| span(w).0 / 1_000_000);
    let mut out: Vec<WindowItem> = closed
        .iter()
        .map(|w| {
            let (s, e) = span(w);
            WindowItem {
                start: rfc3339(s),
                end: rfc3339(e),
                open: false,
                events: w.event_count,
                anomalies: w.anomaly_count,
                aircraft: Some(w.unique_aircraft),
                avg_speed_knots: w.avg_velocity.map(|v| round(v * KNOTS_PER_MPS, 1)),
                avg_altitude_ft: w.avg_altitude.map(|v| round(v * FEET_PER_METRE, 0)),
                avg_score: w.avg_anomaly_score.map(|v| round(v, 4)),
            }
        })
        .collect();
    let mut open: BTreeMap<i64, Activity> = BTreeMap::new();
    for (second, a) in activity {
        let start = second.div_euclid(length) * length;
        if last_closed.is_some_and(|c| start <= c) {
            continue;
        }
        let w = open.entry(start).or_default();
        w.records += a.records;
        w.anomalies += a.anomalies;
    }
    out.extend(open.into_iter().map(|(start, a)| WindowItem {
        start: rfc3339(start * 1_000_000),
        end: rfc3339((start + length) * 1_000_000),
        open: true,
        events: a.records as i64,
        anomalies: a.anomalies as i64,
        aircraft: None,
        avg_speed_knots: None,
        avg_altitude_ft: None,
        avg_score: None,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::store::{Feed, StoreLimits};

    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn at(second: i64) -> String {
        rfc3339((T0 + second) * 1_000_000)
    }

    fn add(store: &LiveStore, icao24: &str, second: i64, altitude_ft: f64, anomaly: bool) {
        let payload = serde_json::json!({
            "timestamp": at(second), "icao24": icao24, "callsign": format!("TST{icao24}"),
            "origin_country": "Testland", "latitude": 50.0, "longitude": 8.0 + second as f64 / 1e3,
            "velocity_knots": 400.0, "altitude_ft": altitude_ft, "vertical_rate_fpm": 0.0,
            "heading": 90.0, "on_ground": false,
            "squawk": if icao24 == "aaa777" { "7700" } else { "1000" },
            "flight_phase": "cruise", "anomaly_score": if anomaly { 0.7 } else { 0.4 },
            "is_anomaly": anomaly, "speed_mismatch_knots": 1.0, "climb_mismatch_fpm": 10.0,
            "position_jump_km": 0.2, "seconds_since_previous": 1.0,
        });
        store
            .add(Feed::Processed, payload.to_string().as_bytes())
            .unwrap();
    }

    fn view(store: &LiveStore, now_offset_s: f64) -> View<'_> {
        View {
            store,
            settings: Settings {
                stale_after: 30_000_000,
                track_timeout: 300_000_000,
            },
            now: chrono::Utc::now().timestamp_micros() + (now_offset_s * 1e6) as i64,
            notices: Vec::new(),
        }
    }

    #[test]
    fn an_empty_store_is_waiting() {
        let store = LiveStore::new(StoreLimits::default());
        let s = view(&store, 0.0).summary();
        assert_eq!(s.status, "waiting");
        assert_eq!((s.aircraft, s.events_per_s), (0, 0.0));
        assert_eq!(
            (s.anomaly_rate, s.avg_altitude_ft, s.newest_record),
            (None, None, None)
        );
        assert!(
            view(&store, 0.0)
                .snapshot(&Filter::default(), 10)
                .aircraft
                .aircraft
                .is_empty()
        );
    }

    #[test]
    fn rates_come_from_event_time_and_status_from_arrival() {
        let store = LiveStore::new(StoreLimits::default());
        // One record per second for 0..=120 s over three aircraft; every 10th is an anomaly.
        for second in 0..=120 {
            let icao24 = ["aaa001", "aaa002", "aaa003"][(second % 3) as usize];
            add(
                &store,
                icao24,
                second,
                30_000.0 + second as f64,
                second % 10 == 0,
            );
        }
        let s = view(&store, 0.0).summary();
        assert_eq!(s.status, "live");
        // [60 s, 120 s): 60 records in 60 s.
        assert_eq!(s.events_per_s, 1.0);
        // [-480 s, 120 s) holds 0..=119: 12 anomalies of 120.
        assert_eq!(s.anomaly_rate, Some(0.1));
        assert_eq!(s.aircraft, 3);
        // Latest altitudes 30,118 / 30,119 / 30,120 ft.
        assert_eq!(s.avg_altitude_ft, Some(30_119.0));
        assert_eq!(s.avg_speed_knots, Some(400.0));
        assert_eq!(s.newest_record.as_deref(), Some(at(120).as_str()));
        assert_eq!(s.records, 121);
        assert_eq!(view(&store, 31.0).summary().status, "stale");
    }

    #[test]
    fn aircraft_time_out_and_filters_apply() {
        let store = LiveStore::new(StoreLimits::default());
        add(&store, "bbb001", 0, 5_000.0, false); // 400 s before the newest: timed out
        add(&store, "bbb002", 200, 10_000.0, true);
        add(&store, "bbb002", 300, 12_000.0, false);
        add(&store, "bbb003", 350, 35_000.0, false);
        add(&store, "aaa777", 390, 20_000.0, false);
        add(&store, "bbb004", 400, 38_000.0, false);
        let v = view(&store, 0.0);
        let list = v.aircraft(&Filter::default(), 10);
        let order: Vec<&str> = list.aircraft.iter().map(|a| a.icao24.as_str()).collect();
        assert_eq!(order, ["bbb004", "aaa777", "bbb003", "bbb002"]);
        assert_eq!((list.tracked, list.matched), (4, 4));
        assert_eq!(list.aircraft[3].trail.len(), 2);
        assert_eq!(list.aircraft[1].emergency, Some("emergency"));
        assert_eq!(v.aircraft(&Filter::default(), 2).aircraft.len(), 2);

        let high = Filter {
            min_altitude_ft: Some(15_000.0),
            max_altitude_ft: Some(36_000.0),
            ..Filter::default()
        };
        let got = v.aircraft(&high, 10);
        let order: Vec<&str> = got.aircraft.iter().map(|a| a.icao24.as_str()).collect();
        assert_eq!(
            (order, got.matched, got.tracked),
            (vec!["aaa777", "bbb003"], 2, 4)
        );
        let search = Filter {
            search: Some("tstbbb00".into()),
            ..Filter::default()
        };
        assert_eq!(v.aircraft(&search, 10).matched, 3);
        // The anomaly at 200 s is still in bbb002's held track.
        let flagged = Filter {
            anomalies_only: true,
            ..Filter::default()
        };
        let got = v.aircraft(&flagged, 10);
        assert_eq!(got.aircraft.len(), 1);
        assert!(got.aircraft[0].recent_anomaly && !got.aircraft[0].anomaly);

        let snap = v.snapshot(&high, 10);
        assert_eq!(snap.summary.emergencies, 1);
        assert_eq!(snap.emergencies.len(), 1);
        assert_eq!(snap.anomalies.len(), 1);
        assert_eq!(snap.anomalies[0].icao24, "bbb002");
    }

    #[test]
    fn open_windows_follow_the_last_closed_one() {
        let store = LiveStore::new(StoreLimits::default());
        for second in [0, 30, 59, 60, 61, 130, 179] {
            add(&store, "ccc001", second, 30_000.0, second == 61);
        }
        let closed = serde_json::json!({
            "window_start": at(0), "window_end": at(60), "event_count": 3, "anomaly_count": 0,
            "avg_velocity": 200.0, "min_velocity": 200.0, "max_velocity": 200.0,
            "avg_altitude": 9_000.0, "min_altitude": 9_000.0, "max_altitude": 9_000.0,
            "unique_aircraft": 1, "avg_anomaly_score": 0.4,
        });
        store
            .add(Feed::Windows, closed.to_string().as_bytes())
            .unwrap();
        let w = view(&store, 0.0).windows(10);
        let got: Vec<(String, bool, i64, i64)> = w
            .iter()
            .map(|w| (w.start.clone(), w.open, w.events, w.anomalies))
            .collect();
        assert_eq!(
            got,
            [
                (at(0), false, 3, 0),
                (at(60), true, 2, 1),
                (at(120), true, 2, 0)
            ]
        );
        assert_eq!(w[0].avg_speed_knots, Some(388.8));
        assert_eq!(w[0].avg_altitude_ft, Some(29_528.0));
    }

    #[test]
    fn signals_name_the_feature_that_stands_out() {
        let base = State {
            squawk: Some("1000".into()),
            speed_mismatch_knots: Some(5.0),
            climb_mismatch_fpm: Some(50.0),
            position_jump_km: Some(0.5),
            seconds_since_previous: Some(5.0),
            ..State::default()
        };
        let with = |f: fn(&mut State)| {
            let mut s = base.clone();
            f(&mut s);
            signal(&s)
        };
        assert_eq!(signal(&base), "unusual combination");
        assert_eq!(with(|s| s.squawk = Some("7600".into())), "emergency squawk");
        assert_eq!(
            with(|s| {
                s.speed_mismatch_knots = Some(3_000.0);
                s.position_jump_km = Some(40.0);
            }),
            "position jump"
        );
        assert_eq!(
            with(|s| s.speed_mismatch_knots = Some(-150.0)),
            "speed mismatch"
        );
        assert_eq!(
            with(|s| s.climb_mismatch_fpm = Some(4_000.0)),
            "climb mismatch"
        );
        assert_eq!(
            with(|s| s.seconds_since_previous = Some(600.0)),
            "reporting gap"
        );
    }
}
