//! A deterministic flight simulator that produces OpenSky-like raw records.
//!
//! Aircraft fly great-circle legs between real airports (taxi, take-off, climb, cruise,
//! descent, approach, landing, taxi-in, turnaround) and report every few seconds with
//! OpenSky's quirks: space-padded callsigns, null altitudes on the ground, stale
//! `time_position`, occasional null fields and the same state twice now and then.
//! It injects labelled anomalies of named kinds; labels go to a side file, never into the
//! records. With `invalid_rate` > 0 it also emits corrupted records that ingest must
//! dead-letter. The same seed and start time give the same records, byte for byte.

use std::f64::consts::PI;
use std::io::Write;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::airports::{AIRPORTS, Airport};
use super::record::RawRecord;

const EARTH_RADIUS_M: f64 = 6_371_000.0;
const FT: f64 = 0.3048;
const NM: f64 = 1852.0;

/// Kinds of injected anomaly (the label's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    SpeedSpike,
    AltitudeJump,
    PositionTeleport,
    VerticalRateSpike,
    FrozenPosition,
    EmergencySquawk,
}

impl AnomalyKind {
    const ALL: [AnomalyKind; 6] = [
        AnomalyKind::SpeedSpike,
        AnomalyKind::AltitudeJump,
        AnomalyKind::PositionTeleport,
        AnomalyKind::VerticalRateSpike,
        AnomalyKind::FrozenPosition,
        AnomalyKind::EmergencySquawk,
    ];
}

/// One line of the labels side file. (icao24, last_contact) identifies the record: two
/// records of one aircraft can share a `timestamp` when `time_position` is stale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub icao24: String,
    pub timestamp: DateTime<Utc>,
    pub last_contact: i64,
    pub kind: AnomalyKind,
}

impl Label {
    pub fn matches(&self, r: &RawRecord) -> bool {
        r.icao24 == self.icao24 && r.last_contact == self.last_contact
    }
}

/// What the simulator emitted for one report.
#[derive(Debug, Clone, PartialEq)]
pub enum Emitted {
    /// A contract-valid record (possibly anomalous, possibly a repeat of the previous one).
    Record(Box<RawRecord>),
    /// Corrupted bytes that validation must reject.
    Invalid(Vec<u8>),
}

impl Emitted {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Emitted::Record(r) => r.to_json(),
            Emitted::Invalid(b) => b.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub seed: u64,
    pub aircraft: usize,
    /// Probability per report that an anomaly starts.
    pub anomaly_rate: f64,
    /// Probability per report that a corrupted record is emitted besides it.
    pub invalid_rate: f64,
    /// Mean seconds between two reports of one aircraft.
    pub report_interval_s: f64,
    pub start: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Parked,
    TaxiOut,
    TakeoffRoll,
    Climb,
    Cruise,
    Descent,
    Approach,
    Landing,
    TaxiIn,
}

#[derive(Debug, Clone)]
struct ActiveAnomaly {
    kind: AnomalyKind,
    remaining: u32,
    frozen_at: Option<(f64, f64)>,
    squawk: &'static str,
    started: bool,
}

/// A reported position: ADS-B sends altitude in the same message as the position, so a
/// stale `time_position` comes with the altitude of that time.
#[derive(Debug, Clone, Copy)]
struct Fix {
    lat: f64,
    lon: f64,
    time: i64,
    baro: Option<f64>,
    geo: Option<f64>,
}

#[derive(Debug, Clone)]
struct Aircraft {
    icao24: String,
    flight_number: u32,
    airline: &'static str,
    country: &'static str,
    category: Option<i32>,
    position_source: i32,
    geo_offset_m: f64,
    origin: usize,
    dest: usize,
    phase: Phase,
    timer_s: f64,
    lat: f64,
    lon: f64,
    alt_m: f64,
    speed: f64,
    track: f64,
    vrate: f64,
    cruise_alt_m: f64,
    cruise_speed: f64,
    squawk: String,
    /// Sim second of the next report, and of the last kinematic update.
    next_report: i64,
    updated_at: i64,
    /// Last reported position and its time (for stale `time_position`).
    last_fix: Option<Fix>,
    anomaly: Option<ActiveAnomaly>,
}

const AIRLINES: &[&str] = &[
    "DLH", "BAW", "AFR", "KLM", "RYR", "EZY", "UAL", "DAL", "AAL", "SWR", "IBE", "THY", "UAE",
    "QTR", "SAS", "ACA",
];

/// The simulator: call [`Simulator::advance_to`] with a simulated time to get every report
/// due until then.
#[derive(Debug)]
pub struct Simulator {
    config: SimulatorConfig,
    rng: ChaCha8Rng,
    aircraft: Vec<Aircraft>,
    /// Current simulated time, Unix seconds.
    now: i64,
    labels: Vec<Label>,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let start = config.start.timestamp();
        let aircraft = (0..config.aircraft)
            .map(|i| spawn(&mut rng, i, start, config.report_interval_s))
            .collect();
        Self {
            config,
            rng,
            aircraft,
            now: start,
            labels: Vec::new(),
        }
    }

    /// Simulated time (Unix seconds) reached so far.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Labels of anomalous records emitted since the last call.
    pub fn take_labels(&mut self) -> Vec<Label> {
        std::mem::take(&mut self.labels)
    }

    /// Advances one simulated second and returns the reports due in it.
    pub fn tick(&mut self) -> Vec<Emitted> {
        self.now += 1;
        let mut out = Vec::new();
        for i in 0..self.aircraft.len() {
            if self.aircraft[i].next_report > self.now {
                continue;
            }
            let interval = self.config.report_interval_s;
            let jitter = self.rng.random_range(-0.3..=0.3);
            let now = self.now;
            let a = &mut self.aircraft[i];
            a.next_report = now + ((interval * (1.0 + jitter)).round() as i64).max(1);
            let dt = (now - a.updated_at) as f64;
            a.updated_at = now;
            step(a, dt, &mut self.rng);
            self.report(i, &mut out);
        }
        out
    }

    /// Runs until simulated time `until` (Unix seconds) and returns every report due.
    pub fn advance_to(&mut self, until: i64) -> Vec<Emitted> {
        let mut out = Vec::new();
        while self.now < until {
            out.extend(self.tick());
        }
        out
    }

    fn report(&mut self, i: usize, out: &mut Vec<Emitted>) {
        let now = self.now;
        let rng = &mut self.rng;
        let a = &mut self.aircraft[i];

        if a.anomaly.is_none() && rng.random_bool(self.config.anomaly_rate) {
            let kind = AnomalyKind::ALL[rng.random_range(0..AnomalyKind::ALL.len())];
            let airborne_only = matches!(
                kind,
                AnomalyKind::AltitudeJump | AnomalyKind::FrozenPosition
            );
            if !(airborne_only && is_on_ground(a.phase)) {
                let remaining = match kind {
                    AnomalyKind::FrozenPosition => rng.random_range(4..=8),
                    AnomalyKind::EmergencySquawk => rng.random_range(5..=15),
                    _ => 1,
                };
                let squawk = ["7500", "7600", "7700"][rng.random_range(0..3)];
                // A frozen transponder repeats the position it reports now, from the next report on.
                let frozen_at = (kind == AnomalyKind::FrozenPosition).then_some((a.lat, a.lon));
                let remaining = remaining + u32::from(frozen_at.is_some());
                a.anomaly = Some(ActiveAnomaly {
                    kind,
                    remaining,
                    frozen_at,
                    squawk,
                    started: false,
                });
            }
        }

        // The position message arrived some fraction of a second after `now`; OpenSky
        // reports its time in whole seconds, so position and time_position disagree by
        // up to one second of flight, as in real data.
        let ground = is_on_ground(a.phase);
        let late = rng.random_range(0.0..1.0);
        let (lat_now, lon_now) = if a.phase == Phase::Parked {
            (a.lat, a.lon)
        } else {
            destination(a.lat, a.lon, a.track, a.speed * late)
        };
        let fresh = Fix {
            lat: lat_now,
            lon: lon_now,
            time: now,
            baro: (!ground).then_some(a.alt_m + a.vrate * late),
            geo: (!ground).then_some(a.alt_m + a.vrate * late + a.geo_offset_m),
        };
        // OpenSky quirk: now and then the position is not refreshed with the contact.
        // (Not while an anomaly is injected: its report must carry what it manipulates.)
        let fix = match a.last_fix {
            Some(last)
                if a.anomaly.is_none()
                    && last.baro.is_none() == ground
                    && rng.random_bool(0.02) =>
            {
                last
            }
            _ => fresh,
        };
        let (mut lat, mut lon, time_position) = (fix.lat, fix.lon, fix.time);
        let mut velocity = Some(a.speed);
        let mut baro = fix.baro;
        let mut geo = fix.geo;
        let mut vrate = Some(if ground { 0.0 } else { a.vrate });
        let mut squawk = (!rng.random_bool(0.03)).then(|| a.squawk.clone());
        let mut label = None;

        // A frozen transponder stops mattering once the aircraft has landed.
        if ground
            && a.anomaly
                .as_ref()
                .is_some_and(|an| an.kind == AnomalyKind::FrozenPosition)
        {
            a.anomaly = None;
        }
        if let Some(an) = a.anomaly.as_mut() {
            let kind = an.kind;
            let mut labelled = true;
            match kind {
                AnomalyKind::SpeedSpike => {
                    velocity = Some(a.speed * rng.random_range(2.5..4.0) + 150.0)
                }
                AnomalyKind::AltitudeJump => {
                    let jump = rng.random_range(1500.0..4000.0) * sign(rng);
                    let jumped = (a.alt_m + jump).max(30.0);
                    baro = Some(jumped);
                    geo = Some(jumped + a.geo_offset_m);
                }
                AnomalyKind::PositionTeleport => {
                    lat = (lat + rng.random_range(1.0..5.0) * sign(rng)).clamp(-89.0, 89.0);
                    lon = wrap_lon(lon + rng.random_range(1.0..5.0) * sign(rng));
                }
                AnomalyKind::VerticalRateSpike => {
                    vrate = Some(rng.random_range(40.0..80.0) * sign(rng))
                }
                AnomalyKind::FrozenPosition => {
                    // The first report is the last true one; the position then stops moving
                    // while contacts (and time_position) go on.
                    if an.started {
                        (lat, lon) = an.frozen_at.unwrap_or((lat, lon));
                    } else {
                        an.started = true;
                        labelled = false;
                    }
                }
                AnomalyKind::EmergencySquawk => squawk = Some(an.squawk.to_string()),
            }
            an.remaining = an.remaining.saturating_sub(1);
            if an.remaining == 0 {
                a.anomaly = None;
            }
            if labelled {
                label = Some(kind);
            }
        }

        // Occasional missing fields, as in real OpenSky data.
        if rng.random_bool(0.01) {
            velocity = None;
        }
        let heading = (!rng.random_bool(0.01)).then_some(a.track);
        if rng.random_bool(0.01) {
            vrate = None;
        }
        let callsign = if rng.random_bool(0.005) {
            None
        } else {
            Some(format!(
                "{:<8}",
                format!("{}{}", a.airline, a.flight_number)
            ))
        };

        a.last_fix = Some(Fix {
            lat,
            lon,
            time: time_position,
            baro,
            geo,
        });
        let timestamp = DateTime::from_timestamp(time_position, 0).unwrap_or_default();
        let record = RawRecord {
            timestamp,
            icao24: a.icao24.clone(),
            callsign,
            origin_country: a.country.to_string(),
            latitude: Some(round6(lat)),
            longitude: Some(round6(lon)),
            velocity: velocity.map(round2),
            baro_altitude: baro.map(round2),
            geo_altitude: geo.map(round2),
            vertical_rate: vrate.map(round2),
            heading: heading.map(round2),
            on_ground: ground,
            squawk,
            spi: false,
            position_source: a.position_source,
            category: a.category,
            sensors: None,
            last_contact: now,
            ingest_timestamp: None,
        };
        if let Some(kind) = label {
            self.labels.push(Label {
                icao24: record.icao24.clone(),
                timestamp,
                last_contact: now,
                kind,
            });
        }
        out.push(Emitted::Record(Box::new(record.clone())));
        if rng.random_bool(0.01) {
            out.push(Emitted::Record(Box::new(record.clone())));
        }
        if rng.random_bool(self.config.invalid_rate) {
            out.push(Emitted::Invalid(corrupt(&record, rng)));
        }
    }
}

fn is_on_ground(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Parked | Phase::TaxiOut | Phase::TakeoffRoll | Phase::Landing | Phase::TaxiIn
    )
}

fn sign(rng: &mut ChaCha8Rng) -> f64 {
    if rng.random_bool(0.5) { 1.0 } else { -1.0 }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn wrap_lon(lon: f64) -> f64 {
    let l = (lon + 180.0).rem_euclid(360.0) - 180.0;
    if l == -180.0 { 180.0 } else { l }
}

fn to_rad(d: f64) -> f64 {
    d * PI / 180.0
}

/// Great-circle distance in metres.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (to_rad(lat1), to_rad(lat2));
    let dp = p2 - p1;
    let dl = to_rad(lon2 - lon1);
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Initial bearing (degrees, 0..360) of the great circle from 1 to 2.
fn bearing_deg(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (to_rad(lat1), to_rad(lat2));
    let dl = to_rad(lon2 - lon1);
    let y = dl.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos();
    (y.atan2(x).to_degrees() + 360.0) % 360.0
}

/// The point `dist_m` along the great circle leaving (lat, lon) on `bearing`.
fn destination(lat: f64, lon: f64, bearing: f64, dist_m: f64) -> (f64, f64) {
    let d = dist_m / EARTH_RADIUS_M;
    let (p1, l1, b) = (to_rad(lat), to_rad(lon), to_rad(bearing));
    let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * b.cos()).asin();
    let l2 = l1 + (b.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
    (p2.to_degrees(), wrap_lon(l2.to_degrees()))
}

fn pick_destination(rng: &mut ChaCha8Rng, origin: usize) -> usize {
    let o = &AIRPORTS[origin];
    // Prefer legs of 300-9000 km; fall back to any other airport.
    for _ in 0..20 {
        let d = rng.random_range(0..AIRPORTS.len());
        let km = haversine_m(
            o.latitude,
            o.longitude,
            AIRPORTS[d].latitude,
            AIRPORTS[d].longitude,
        ) / 1000.0;
        if d != origin && (300.0..9000.0).contains(&km) {
            return d;
        }
    }
    (origin + 1) % AIRPORTS.len()
}

fn elevation_m(ap: &Airport) -> f64 {
    ap.elevation_ft * FT
}

/// Distance before the destination at which descent starts: 3 NM per 1000 ft to lose.
fn descent_distance_m(alt_m: f64, dest: &Airport) -> f64 {
    ((alt_m - elevation_m(dest)) / FT / 1000.0).max(0.0) * 3.0 * NM
}

fn spawn(rng: &mut ChaCha8Rng, index: usize, start: i64, interval: f64) -> Aircraft {
    let origin = rng.random_range(0..AIRPORTS.len());
    let dest = pick_destination(rng, origin);
    let (o, d) = (&AIRPORTS[origin], &AIRPORTS[dest]);
    let icao = rng.random_range(0x10_0000u32..0xFF_FFFF);
    let heavy = rng.random_bool(0.3);
    let mut a = Aircraft {
        icao24: format!("{icao:06x}"),
        flight_number: rng.random_range(10..9999),
        airline: AIRLINES[index % AIRLINES.len()],
        country: o.country,
        category: if rng.random_bool(0.1) {
            None
        } else if heavy {
            Some(6)
        } else {
            Some(4)
        },
        position_source: if rng.random_bool(0.05) { 2 } else { 0 },
        geo_offset_m: rng.random_range(-30.0..120.0),
        origin,
        dest,
        phase: Phase::Cruise,
        timer_s: 0.0,
        lat: o.latitude,
        lon: o.longitude,
        alt_m: elevation_m(o),
        speed: 0.0,
        track: bearing_deg(o.latitude, o.longitude, d.latitude, d.longitude),
        vrate: 0.0,
        cruise_alt_m: rng.random_range(31_000.0..41_000.0) * FT,
        cruise_speed: if heavy {
            rng.random_range(235.0..255.0)
        } else {
            rng.random_range(215.0..240.0)
        },
        squawk: format!("{:o}", rng.random_range(0o1000..0o7000)),
        next_report: start + rng.random_range(0..=(interval.ceil() as i64).max(1)),
        updated_at: start,
        last_fix: None,
        anomaly: None,
    };
    let leg = haversine_m(o.latitude, o.longitude, d.latitude, d.longitude);
    let place = |a: &mut Aircraft, fraction: f64| {
        let track = bearing_deg(o.latitude, o.longitude, d.latitude, d.longitude);
        (a.lat, a.lon) = destination(o.latitude, o.longitude, track, leg * fraction);
        a.track = bearing_deg(a.lat, a.lon, d.latitude, d.longitude);
    };
    match rng.random_range(0..100) {
        0..10 => {
            a.phase = Phase::Parked;
            a.timer_s = rng.random_range(60.0..900.0);
        }
        10..15 => {
            a.phase = Phase::TaxiOut;
            a.timer_s = rng.random_range(60.0..300.0);
            a.speed = 8.0;
        }
        15..25 => {
            a.phase = Phase::Climb;
            let alt = rng.random_range(500.0..a.cruise_alt_m);
            let fraction = (alt / a.cruise_alt_m * 200_000.0 / leg).min(0.4);
            place(&mut a, fraction);
            a.alt_m = alt;
            a.speed = 110.0 + (a.cruise_speed - 110.0) * alt / a.cruise_alt_m;
            a.vrate = rng.random_range(8.0..13.0);
        }
        25..80 => {
            a.phase = Phase::Cruise;
            let top = 1.0 - descent_distance_m(a.cruise_alt_m, d) / leg;
            let fraction = rng.random_range(0.1..top.max(0.11));
            place(&mut a, fraction);
            a.alt_m = a.cruise_alt_m;
            a.speed = a.cruise_speed;
        }
        80..92 => {
            a.phase = Phase::Descent;
            let alt = rng.random_range(4_000.0..a.cruise_alt_m);
            let remaining = descent_distance_m(alt, d);
            place(&mut a, (1.0 - remaining / leg).clamp(0.0, 1.0));
            a.alt_m = alt;
            a.speed = 130.0 + (a.cruise_speed - 130.0) * alt / a.cruise_alt_m;
            a.vrate = -rng.random_range(7.0..11.0);
        }
        _ => {
            a.phase = Phase::Approach;
            let remaining = rng.random_range(6_000.0..18_000.0);
            place(&mut a, (1.0 - remaining / leg).clamp(0.0, 1.0));
            a.alt_m = elevation_m(d) + remaining * 0.052; // a 3-degree glide path
            a.speed = 75.0;
        }
    }
    a
}

/// Moves an aircraft `dt` seconds forward and walks it through its flight phases.
fn step(a: &mut Aircraft, dt: f64, rng: &mut ChaCha8Rng) {
    let d = AIRPORTS[a.dest];
    let remaining = haversine_m(a.lat, a.lon, d.latitude, d.longitude);
    let ground_elev = elevation_m(
        &AIRPORTS[if matches!(a.phase, Phase::Landing | Phase::TaxiIn) {
            a.dest
        } else {
            a.origin
        }],
    );
    match a.phase {
        Phase::Parked => {
            a.speed = 0.0;
            a.timer_s -= dt;
            if a.timer_s <= 0.0 {
                a.phase = Phase::TaxiOut;
                a.timer_s = rng.random_range(120.0..360.0);
                a.speed = 8.0;
            }
        }
        Phase::TaxiOut | Phase::TaxiIn => {
            a.speed = rng.random_range(5.0..11.0);
            a.track = (a.track + rng.random_range(-25.0..25.0)).rem_euclid(360.0);
            a.alt_m = ground_elev;
            a.timer_s -= dt;
            if a.timer_s <= 0.0 && a.phase == Phase::TaxiOut {
                a.phase = Phase::TakeoffRoll;
                a.track = bearing_deg(a.lat, a.lon, d.latitude, d.longitude);
            } else if a.timer_s <= 0.0 {
                // Turnaround: a new leg from here with a new flight number.
                a.phase = Phase::Parked;
                a.timer_s = rng.random_range(600.0..2400.0);
                a.origin = a.dest;
                a.dest = pick_destination(rng, a.origin);
                a.flight_number = rng.random_range(10..9999);
                a.speed = 0.0;
            }
        }
        Phase::TakeoffRoll => {
            a.speed = (a.speed + 2.5 * dt).min(85.0);
            if a.speed >= 80.0 {
                a.phase = Phase::Climb;
                a.vrate = rng.random_range(9.0..13.0);
            }
        }
        Phase::Climb => {
            a.alt_m += a.vrate * dt;
            a.speed = (a.speed + 1.0 * dt).min(a.cruise_speed);
            if a.alt_m >= a.cruise_alt_m {
                a.alt_m = a.cruise_alt_m;
                a.vrate = 0.0;
                a.phase = Phase::Cruise;
            }
        }
        Phase::Cruise => {
            a.vrate = rng.random_range(-0.3..0.3);
            a.alt_m = a.cruise_alt_m + a.vrate * dt;
            a.speed = a.cruise_speed + rng.random_range(-2.0..2.0);
            if remaining <= descent_distance_m(a.alt_m, &d) {
                a.phase = Phase::Descent;
                a.vrate = -rng.random_range(7.0..11.0);
            }
        }
        Phase::Descent => {
            a.alt_m += a.vrate * dt;
            a.speed = (a.speed - 0.5 * dt).max(120.0);
            if a.alt_m - elevation_m(&d) <= 3_000.0 * FT {
                a.phase = Phase::Approach;
                a.speed = 80.0;
            }
        }
        Phase::Approach => {
            a.speed = 75.0;
            let agl = a.alt_m - elevation_m(&d);
            let time_left = (remaining / a.speed).max(1.0);
            a.vrate = (-agl / time_left).clamp(-8.0, -1.0);
            a.alt_m += a.vrate * dt;
            if remaining < 800.0 || a.alt_m <= elevation_m(&d) {
                a.phase = Phase::Landing;
                a.alt_m = elevation_m(&d);
                a.vrate = 0.0;
                a.lat = d.latitude;
                a.lon = d.longitude;
            }
        }
        Phase::Landing => {
            a.speed = (a.speed - 2.0 * dt).max(9.0);
            if a.speed <= 9.0 {
                a.phase = Phase::TaxiIn;
                a.timer_s = rng.random_range(60.0..240.0);
            }
        }
    }
    if matches!(
        a.phase,
        Phase::Climb | Phase::Cruise | Phase::Descent | Phase::Approach
    ) {
        a.track = bearing_deg(a.lat, a.lon, d.latitude, d.longitude);
    }
    if a.phase != Phase::Parked {
        (a.lat, a.lon) = destination(a.lat, a.lon, a.track, a.speed * dt);
    }
}

/// A corrupted variant of a record, of a kind chosen at random.
fn corrupt(record: &RawRecord, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut v = serde_json::to_value(record).expect("record serialises");
    match rng.random_range(0..6) {
        0 => {
            let bytes = record.to_json();
            return bytes[..bytes.len() / 2].to_vec();
        }
        1 => v["latitude"] = serde_json::json!(91.0 + rng.random_range(0.0..50.0)),
        2 => v["icao24"] = serde_json::json!("zz12"),
        3 => v["longitude"] = serde_json::Value::Null,
        4 => v["velocity"] = serde_json::json!("fast"),
        _ => v["squawk"] = serde_json::json!("9999"),
    }
    serde_json::to_vec(&v).expect("value serialises")
}

/// Writes labels as JSON lines.
#[derive(Debug)]
pub struct LabelWriter<W: Write> {
    out: W,
}

impl<W: Write> LabelWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    pub fn write(&mut self, labels: &[Label]) -> std::io::Result<()> {
        for l in labels {
            serde_json::to_writer(&mut self.out, l)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::validate::validate;

    fn config(seed: u64) -> SimulatorConfig {
        SimulatorConfig {
            seed,
            aircraft: 200,
            anomaly_rate: 0.01,
            invalid_rate: 0.01,
            report_interval_s: 5.0,
            start: DateTime::from_timestamp(1_795_600_000, 0).unwrap(),
        }
    }

    fn run(seed: u64, secs: i64) -> (Vec<Emitted>, Vec<Label>) {
        let mut sim = Simulator::new(config(seed));
        let out = sim.advance_to(sim.now() + secs);
        (out, sim.take_labels())
    }

    #[test]
    fn same_seed_same_records_other_seed_other_records() {
        let a = run(7, 120);
        let b = run(7, 120);
        let c = run(8, 120);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn cadence_quirks_and_validity() {
        let (out, labels) = run(1, 3600);
        let records: Vec<&RawRecord> = out
            .iter()
            .filter_map(|e| {
                if let Emitted::Record(r) = e {
                    Some(r.as_ref())
                } else {
                    None
                }
            })
            .collect();
        // ~200 aircraft reporting every ~5 s for an hour.
        let per_aircraft_per_s = records.len() as f64 / 200.0 / 3600.0;
        assert!(
            (0.15..0.25).contains(&per_aircraft_per_s),
            "rate {per_aircraft_per_s}"
        );
        for r in &records {
            validate(&r.to_json()).unwrap_or_else(|e| panic!("{e:?} for {r:?}"));
            if r.on_ground {
                assert_eq!(r.baro_altitude, None);
            }
            if let Some(cs) = &r.callsign {
                assert_eq!(cs.len(), 8, "callsigns are space-padded to 8: {cs:?}");
            }
        }
        let invalid = out
            .iter()
            .filter(|e| matches!(e, Emitted::Invalid(_)))
            .count();
        assert!(invalid > 0);
        for e in out.iter().filter(|e| matches!(e, Emitted::Invalid(_))) {
            assert!(
                validate(&e.to_bytes()).is_err(),
                "corrupted record passed validation"
            );
        }
        let stale = records
            .iter()
            .filter(|r| r.timestamp.timestamp() < r.last_contact - 1)
            .count();
        assert!(stale > 0, "some time_position should be stale");
        let repeats = records.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(repeats > 0, "some states should repeat");
        let phases_on_ground = records.iter().filter(|r| r.on_ground).count();
        assert!(phases_on_ground > 0 && phases_on_ground < records.len() / 2);
        let high = records
            .iter()
            .filter(|r| r.baro_altitude.is_some_and(|a| a > 9000.0))
            .count();
        assert!(
            high > records.len() / 3,
            "most aircraft cruise high: {high}/{}",
            records.len()
        );

        // Every kind of anomaly shows up, and each label points at an emitted record.
        for kind in AnomalyKind::ALL {
            assert!(
                labels.iter().any(|l| l.kind == kind),
                "{kind:?} never injected"
            );
        }
        for l in &labels {
            assert!(
                records
                    .iter()
                    .any(|r| l.matches(r) && r.timestamp == l.timestamp)
            );
        }
    }

    #[test]
    fn labelled_anomalies_look_like_their_kind() {
        let (out, labels) = run(3, 3600);
        let find = |l: &Label| {
            out.iter().find_map(|e| match e {
                Emitted::Record(r) if l.matches(r) => Some(r.as_ref().clone()),
                _ => None,
            })
        };
        for l in &labels {
            let r = find(l).unwrap();
            match l.kind {
                AnomalyKind::EmergencySquawk => {
                    assert!(matches!(
                        r.squawk.as_deref(),
                        Some("7500" | "7600" | "7700") | None
                    ))
                }
                AnomalyKind::VerticalRateSpike => {
                    assert!(r.vertical_rate.is_none_or(|v| v.abs() >= 40.0))
                }
                AnomalyKind::SpeedSpike => assert!(r.velocity.is_none_or(|v| v >= 150.0)),
                AnomalyKind::FrozenPosition => assert!(!r.on_ground),
                _ => {}
            }
        }
    }

    #[test]
    fn great_circle_helpers() {
        // London Heathrow to New York JFK is ~5,540 km.
        let km = haversine_m(51.47, -0.4543, 40.6413, -73.7781) / 1000.0;
        assert!((5500.0..5600.0).contains(&km), "{km}");
        let (lat, lon) = destination(0.0, 0.0, 90.0, 111_195.0);
        assert!(lat.abs() < 1e-6 && (lon - 1.0).abs() < 1e-3);
        assert_eq!(wrap_lon(190.0), -170.0);
    }
}
