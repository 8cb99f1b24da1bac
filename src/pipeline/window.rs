//! Event-time tumbling windows with a watermark, kept per source partition.
//!
//! Topics are keyed by `icao24`, so everything about one aircraft lives in one partition:
//! its continuity (last two fixes) and its open window partials. [`PartitionState`] holds
//! that for one partition, together with the partition's watermark (the largest event time
//! it has seen minus the delay).
//!
//! Every decision is made record by record in offset order, so it does not depend on how
//! the stream was cut into micro-batches, on restarts, or on how many processors share the
//! partitions:
//! - a record is *late* when its window closed before it arrived (the partition's
//!   watermark had reached the window's end plus the allowed lateness); late records are
//!   counted and published to the late-data topic, never merged;
//! - a record is *ahead* when its event time is more than `max_lead_us` past both its
//!   ingest time and the largest event time the partition has seen: a clock that far off
//!   would otherwise advance the watermark for good and make every later record late.
//!   Ahead records go to the late-data topic too, and leave the watermark where it was;
//! - at the end of a micro-batch, every window the watermark has closed is emitted.
//!
//! Partials are mergeable and exact: counts, minima, maxima, and sums in fixed point
//! (integers, see [`VELOCITY_SCALE`]), so the order in which partials merge cannot change a
//! single bit of the result. The global row of a window is merged from the partitions'
//! partials by [`super::merge::Merger`].
//!
//! State changes are written to the compacted changelog topic in the micro-batch's
//! transaction: key `a/<icao24>` holds an aircraft's fixes and open partials (a tombstone
//! once it has neither), key `p/meta` the partition's largest event time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::continuity::Fix;
use crate::bus::{ChangelogRecord, OutRecord};
use crate::error::{Error, Result};
use crate::schema::timestamp_type;

/// The column `aggregate.sql` finds the source partition in, and must group by.
pub const PARTITION_COLUMN: &str = "_partition";

/// Fixed-point scales of the partial sums (see `sql/aggregate.sql`).
pub const VELOCITY_SCALE: f64 = 1e6;
pub const ALTITUDE_SCALE: f64 = 1e3;
pub const SCORE_SCALE: f64 = 1e9;

/// Window settings, all in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub length_us: i64,
    /// Watermark = largest event time seen minus this.
    pub delay_us: i64,
    /// A window is emitted when the watermark passes its end plus this.
    pub lateness_us: i64,
    /// An aircraft's state is dropped once the watermark is this far past its last fix
    /// and it has no open window.
    pub state_ttl_us: i64,
    /// A partition whose watermark has not moved for this long (wall clock) stops holding
    /// back the global watermark.
    pub idle_timeout_us: i64,
    /// A record whose event time is further than this past both the processor's clock and
    /// its partition's largest event time is left out of the windows (see the module doc).
    pub max_lead_us: i64,
}

impl Default for WindowSpec {
    fn default() -> Self {
        const MIN: i64 = 60_000_000;
        Self {
            length_us: 10 * MIN,
            delay_us: 5 * MIN,
            lateness_us: 0,
            state_ttl_us: 60 * MIN,
            idle_timeout_us: MIN,
            max_lead_us: 24 * 60 * MIN,
        }
    }
}

impl WindowSpec {
    /// Start of the window holding `ts` (bins from the Unix epoch, like `date_bin`).
    pub fn start_of(&self, ts_us: i64) -> i64 {
        ts_us.div_euclid(self.length_us) * self.length_us
    }

    /// The watermark at which the window starting at `start` is emitted; from then on its
    /// records are late.
    pub fn closes_at(&self, start: i64) -> i64 {
        start
            .saturating_add(self.length_us)
            .saturating_add(self.lateness_us)
    }
}

/// Mergeable statistics of some records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub events: i64,
    pub anomalies: i64,
    pub velocity_n: i64,
    /// Sum of velocities (m/s) times [`VELOCITY_SCALE`], each rounded first.
    pub velocity_sum: i64,
    pub velocity_min: Option<f64>,
    pub velocity_max: Option<f64>,
    pub altitude_n: i64,
    /// Sum of altitudes (m) times [`ALTITUDE_SCALE`].
    pub altitude_sum: i64,
    pub altitude_min: Option<f64>,
    pub altitude_max: Option<f64>,
    pub score_n: i64,
    /// Sum of anomaly scores times [`SCORE_SCALE`].
    pub score_sum: i64,
}

fn add(a: i64, b: i64, what: &str) -> Result<i64> {
    a.checked_add(b)
        .ok_or_else(|| Error::Internal(format!("window {what} overflows 64 bits")))
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}

impl Partial {
    pub fn merge(&mut self, o: &Partial) -> Result<()> {
        self.events = add(self.events, o.events, "event count")?;
        self.anomalies = add(self.anomalies, o.anomalies, "anomaly count")?;
        self.velocity_n = add(self.velocity_n, o.velocity_n, "velocity count")?;
        self.velocity_sum = add(self.velocity_sum, o.velocity_sum, "velocity sum")?;
        self.velocity_min = min_opt(self.velocity_min, o.velocity_min);
        self.velocity_max = max_opt(self.velocity_max, o.velocity_max);
        self.altitude_n = add(self.altitude_n, o.altitude_n, "altitude count")?;
        self.altitude_sum = add(self.altitude_sum, o.altitude_sum, "altitude sum")?;
        self.altitude_min = min_opt(self.altitude_min, o.altitude_min);
        self.altitude_max = max_opt(self.altitude_max, o.altitude_max);
        self.score_n = add(self.score_n, o.score_n, "score count")?;
        self.score_sum = add(self.score_sum, o.score_sum, "score sum")?;
        Ok(())
    }

    fn avg(sum: i64, n: i64, scale: f64) -> Option<f64> {
        (n > 0).then(|| sum as f64 / scale / n as f64)
    }
}

/// One partition's (or, merged, everyone's) statistics of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowPartial {
    pub window_start: i64,
    /// Distinct aircraft (each aircraft lives in one partition, so these add up).
    pub aircraft: i64,
    pub stats: Partial,
}

impl WindowPartial {
    pub fn merge(&mut self, o: &WindowPartial) -> Result<()> {
        self.aircraft = add(self.aircraft, o.aircraft, "aircraft count")?;
        self.stats.merge(&o.stats)
    }
}

/// What a partition tells the merger after a micro-batch: its watermark, and the
/// partials of the windows it closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub partition: i32,
    /// Partitions of the raw topic: the merger waits for all of them.
    pub partitions: i32,
    pub watermark_us: i64,
    pub windows: Vec<WindowPartial>,
}

/// One aircraft's state in its partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AircraftState {
    /// Last fix and the one before it.
    pub fixes: Option<(Fix, Option<Fix>)>,
    /// Open windows by start.
    pub windows: BTreeMap<i64, Partial>,
}

/// A closed per-aircraft window.
#[derive(Debug, Clone, PartialEq)]
pub struct AircraftWindow {
    pub window_start: i64,
    pub icao24: String,
    pub stats: Partial,
}

const META_KEY: &[u8] = b"p/meta";
const AIRCRAFT_PREFIX: &str = "a/";

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Meta {
    max_event_us: Option<i64>,
}

/// Everything a processor keeps for one source partition.
#[derive(Debug, Default)]
pub struct PartitionState {
    aircraft: HashMap<String, AircraftState>,
    /// Window start -> aircraft with a partial in it.
    open: BTreeMap<i64, BTreeSet<String>>,
    max_event_us: Option<i64>,
    /// Aircraft changed since the last changelog flush.
    dirty: BTreeSet<String>,
    meta_dirty: bool,
}

impl PartitionState {
    pub fn watermark(&self, spec: &WindowSpec) -> i64 {
        self.max_event_us
            .map_or(i64::MIN, |m| m.saturating_sub(spec.delay_us))
    }

    pub fn aircraft_count(&self) -> usize {
        self.aircraft.len()
    }

    pub fn open_windows(&self) -> usize {
        self.open.values().map(BTreeSet::len).sum()
    }

    /// The latest event time a record ingested at `ingest_us` may carry to count: the
    /// lead past that or past the largest event time seen, whichever is later. Check it
    /// before [`Self::observe`].
    pub fn lead_limit(&self, spec: &WindowSpec, ingest_us: i64) -> i64 {
        self.max_event_us
            .map_or(ingest_us, |m| m.max(ingest_us))
            .saturating_add(spec.max_lead_us)
    }

    /// Whether a record at `ts_us` is late, then advances the watermark past it. Call in
    /// offset order.
    pub fn observe(&mut self, spec: &WindowSpec, ts_us: i64) -> bool {
        let late = spec.closes_at(spec.start_of(ts_us)) <= self.watermark(spec);
        if self.max_event_us.is_none_or(|m| ts_us > m) {
            self.max_event_us = Some(ts_us);
            self.meta_dirty = true;
        }
        late
    }

    /// The largest event time seen, to put back with [`Self::rewind`] when the batch that
    /// advanced it fails.
    pub fn max_event(&self) -> Option<i64> {
        self.max_event_us
    }

    pub fn rewind(&mut self, max_event_us: Option<i64>) {
        self.max_event_us = max_event_us;
    }

    pub fn fixes(&self, icao24: &str) -> Option<&(Fix, Option<Fix>)> {
        self.aircraft.get(icao24).and_then(|a| a.fixes.as_ref())
    }

    /// Remembers `fix` as the aircraft's latest (call in offset order).
    pub fn record_fix(&mut self, icao24: &str, fix: Fix) {
        let a = self.aircraft_mut(icao24);
        a.fixes = Some(match a.fixes {
            Some((latest, _)) => (fix, Some(latest)),
            None => (fix, None),
        });
        self.mark_dirty(icao24);
    }

    /// The aircraft's state, created if new (no key allocated when it exists: this runs
    /// per record).
    fn aircraft_mut(&mut self, icao24: &str) -> &mut AircraftState {
        if !self.aircraft.contains_key(icao24) {
            self.aircraft
                .insert(icao24.to_string(), AircraftState::default());
        }
        self.aircraft.get_mut(icao24).expect("inserted")
    }

    fn mark_dirty(&mut self, icao24: &str) {
        if !self.dirty.contains(icao24) {
            self.dirty.insert(icao24.to_string());
        }
    }

    /// Merges a micro-batch partial into the aircraft's open window.
    pub fn add(&mut self, window_start: i64, icao24: &str, partial: &Partial) -> Result<()> {
        self.aircraft_mut(icao24)
            .windows
            .entry(window_start)
            .or_default()
            .merge(partial)?;
        let open = self.open.entry(window_start).or_default();
        if !open.contains(icao24) {
            open.insert(icao24.to_string());
        }
        self.mark_dirty(icao24);
        Ok(())
    }

    /// Removes every window the watermark has closed (all of them with `all`), in
    /// (start, icao24) order.
    pub fn close(&mut self, spec: &WindowSpec, all: bool) -> Vec<AircraftWindow> {
        let wm = self.watermark(spec);
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if !all && spec.closes_at(*entry.key()) > wm {
                break;
            }
            let (start, ids) = entry.remove_entry();
            for icao24 in ids {
                let a = self.aircraft.get_mut(&icao24).expect("open index");
                let stats = a.windows.remove(&start).expect("open index");
                self.dirty.insert(icao24.clone());
                out.push(AircraftWindow {
                    window_start: start,
                    icao24,
                    stats,
                });
            }
        }
        out
    }

    /// Drops aircraft with no open window whose last fix is older than the TTL behind
    /// the watermark. Returns how many went.
    pub fn expire(&mut self, spec: &WindowSpec) -> usize {
        let horizon = self.watermark(spec).saturating_sub(spec.state_ttl_us);
        let gone: Vec<String> = self
            .aircraft
            .iter()
            .filter(|(_, a)| {
                a.windows.is_empty()
                    && a.fixes
                        .as_ref()
                        .is_none_or(|(f, _)| f.timestamp_us < horizon)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.aircraft.remove(id);
            self.dirty.insert(id.clone());
        }
        gone.len()
    }

    /// Changelog records for what changed since the last call, for changelog
    /// `partition`.
    pub fn changelog(&mut self, topic: &str, partition: i32) -> Result<Vec<OutRecord>> {
        let mut out = Vec::with_capacity(self.dirty.len() + 1);
        for id in std::mem::take(&mut self.dirty) {
            let key = format!("{AIRCRAFT_PREFIX}{id}").into_bytes();
            let record = match self.aircraft.get(&id) {
                Some(a) => OutRecord::new(topic, Some(key), to_json(a)?),
                None => OutRecord::tombstone(topic, key),
            };
            out.push(record.to_partition(partition));
        }
        if std::mem::take(&mut self.meta_dirty) {
            let meta = Meta {
                max_event_us: self.max_event_us,
            };
            out.push(
                OutRecord::new(topic, Some(META_KEY.to_vec()), to_json(&meta)?)
                    .to_partition(partition),
            );
        }
        Ok(out)
    }

    /// Rebuilds the state from its changelog records (offset order; later ones win).
    /// Records of other owners of the changelog partition (other key prefixes) are skipped.
    pub fn restore(records: &[ChangelogRecord]) -> Result<Self> {
        let mut state = Self::default();
        for (key, value) in records {
            if key == META_KEY {
                if let Some(v) = value {
                    state.max_event_us = from_json::<Meta>(key, v)?.max_event_us;
                }
            } else if let Some(id) = key.strip_prefix(AIRCRAFT_PREFIX.as_bytes()) {
                let id = String::from_utf8_lossy(id).into_owned();
                match value {
                    Some(v) => {
                        state.aircraft.insert(id, from_json(key, v)?);
                    }
                    None => {
                        state.aircraft.remove(&id);
                    }
                }
            }
        }
        for (id, a) in &state.aircraft {
            for start in a.windows.keys() {
                state.open.entry(*start).or_default().insert(id.clone());
            }
        }
        Ok(state)
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("encoding state: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| {
        Error::Bus(format!(
            "changelog record {} does not parse: {e}",
            String::from_utf8_lossy(key)
        ))
    })
}

/// Sums per-aircraft windows into one partial per window (for the merger).
pub fn partition_partials(closed: &[AircraftWindow]) -> Result<Vec<WindowPartial>> {
    let mut by_window: BTreeMap<i64, WindowPartial> = BTreeMap::new();
    for w in closed {
        let p = by_window
            .entry(w.window_start)
            .or_insert_with(|| WindowPartial {
                window_start: w.window_start,
                ..WindowPartial::default()
            });
        p.merge(&WindowPartial {
            window_start: w.window_start,
            aircraft: 1,
            stats: w.stats.clone(),
        })?;
    }
    Ok(by_window.into_values().collect())
}

/// One row of `aggregate.sql`'s output.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPartial {
    pub partition: i32,
    pub window_start: i64,
    pub icao24: String,
    pub stats: Partial,
}

/// aggregate.sql's integer columns, in the order [`read_partials`] reads them.
const PARTIAL_COUNTS: [&str; 8] = [
    "event_count",
    "anomaly_count",
    "velocity_count",
    "velocity_sum_e6",
    "altitude_count",
    "altitude_sum_e3",
    "anomaly_score_count",
    "anomaly_score_sum_e9",
];

/// aggregate.sql's minima and maxima, in the order [`read_partials`] reads them.
const PARTIAL_EXTREMES: [&str; 4] = [
    "velocity_min",
    "velocity_max",
    "altitude_min",
    "altitude_max",
];

/// Reads `aggregate.sql`'s output; a missing column or one of the wrong kind is named.
pub fn read_partials(batch: &RecordBatch) -> std::result::Result<Vec<BatchPartial>, String> {
    use arrow::array::{Array, AsArray};
    use arrow::compute::cast;
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
    let col = |name: &str, to: &DataType| -> std::result::Result<ArrayRef, String> {
        let c = batch
            .column_by_name(name)
            .ok_or_else(|| format!("output lacks column {name}"))?;
        cast(c, to).map_err(|e| format!("column {name} is not {to}: {e}"))
    };
    let int = |name: &str| col(name, &DataType::Int64);
    let float = |name: &str| col(name, &DataType::Float64);
    let partition = col(PARTITION_COLUMN, &DataType::Int32)?;
    let start = col("window_start", &timestamp_type())?;
    let icao24 = col("icao24", &DataType::Utf8)?;
    let ints: Vec<ArrayRef> = PARTIAL_COUNTS
        .into_iter()
        .map(int)
        .collect::<std::result::Result<_, _>>()?;
    let floats: Vec<ArrayRef> = PARTIAL_EXTREMES
        .into_iter()
        .map(float)
        .collect::<std::result::Result<_, _>>()?;
    let (partition, start, icao24) = (
        partition.as_primitive::<Int32Type>(),
        start.as_primitive::<TimestampMicrosecondType>(),
        icao24.as_string::<i32>(),
    );
    let i = |k: usize, row: usize| {
        let a = ints[k].as_primitive::<Int64Type>();
        if a.is_valid(row) { a.value(row) } else { 0 }
    };
    // -0.0 becomes 0.0 (-0.0 + 0.0 is 0.0): `f64::min` may return either of the two, so
    // a minimum would otherwise depend on the order partials merge in.
    let f = |k: usize, row: usize| {
        let a = floats[k].as_primitive::<Float64Type>();
        a.is_valid(row).then(|| a.value(row) + 0.0)
    };
    (0..batch.num_rows())
        .map(|row| {
            if partition.is_null(row) || start.is_null(row) || icao24.is_null(row) {
                return Err(format!(
                    "row {row}: {PARTITION_COLUMN}, window_start and icao24 must not be null"
                ));
            }
            Ok(BatchPartial {
                partition: partition.value(row),
                window_start: start.value(row),
                icao24: icao24.value(row).to_string(),
                stats: Partial {
                    events: i(0, row),
                    anomalies: i(1, row),
                    velocity_n: i(2, row),
                    velocity_sum: i(3, row),
                    velocity_min: f(0, row),
                    velocity_max: f(1, row),
                    altitude_n: i(4, row),
                    altitude_sum: i(5, row),
                    altitude_min: f(2, row),
                    altitude_max: f(3, row),
                    score_n: i(6, row),
                    score_sum: i(7, row),
                },
            })
        })
        .collect()
}

fn stat_fields() -> Vec<Field> {
    vec![
        Field::new("event_count", DataType::Int64, false),
        Field::new("anomaly_count", DataType::Int64, false),
        Field::new("avg_velocity", DataType::Float64, true),
        Field::new("min_velocity", DataType::Float64, true),
        Field::new("max_velocity", DataType::Float64, true),
        Field::new("avg_altitude", DataType::Float64, true),
        Field::new("min_altitude", DataType::Float64, true),
        Field::new("max_altitude", DataType::Float64, true),
    ]
}

/// `flight-aggregated-data` rows (and the `windows` dataset): the original design's
/// fields, velocity in m/s and altitude in metres.
pub fn global_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("window_start", timestamp_type(), false),
        Field::new("window_end", timestamp_type(), false),
    ];
    fields.extend(stat_fields());
    fields.push(Field::new("unique_aircraft", DataType::Int64, false));
    fields.push(Field::new("avg_anomaly_score", DataType::Float64, true));
    Arc::new(Schema::new(fields))
}

/// `flight-aircraft-aggregates` rows (and the `aircraft_windows` dataset).
pub fn aircraft_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("window_start", timestamp_type(), false),
        Field::new("window_end", timestamp_type(), false),
        Field::new("icao24", DataType::Utf8, false),
    ];
    fields.extend(stat_fields());
    fields.push(Field::new("avg_anomaly_score", DataType::Float64, true));
    Arc::new(Schema::new(fields))
}

fn ts_array(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(v).with_timezone("UTC"))
}

fn stat_columns<'a>(stats: impl Iterator<Item = &'a Partial> + Clone) -> Vec<ArrayRef> {
    let f = |g: fn(&Partial) -> Option<f64>| -> ArrayRef {
        Arc::new(stats.clone().map(g).collect::<Float64Array>())
    };
    vec![
        Arc::new(Int64Array::from_iter_values(
            stats.clone().map(|s| s.events),
        )),
        Arc::new(Int64Array::from_iter_values(
            stats.clone().map(|s| s.anomalies),
        )),
        f(|s| Partial::avg(s.velocity_sum, s.velocity_n, VELOCITY_SCALE)),
        f(|s| s.velocity_min),
        f(|s| s.velocity_max),
        f(|s| Partial::avg(s.altitude_sum, s.altitude_n, ALTITUDE_SCALE)),
        f(|s| s.altitude_min),
        f(|s| s.altitude_max),
    ]
}

fn avg_score(s: &Partial) -> Option<f64> {
    Partial::avg(s.score_sum, s.score_n, SCORE_SCALE)
}

pub fn global_batch(spec: &WindowSpec, rows: &[WindowPartial]) -> Result<RecordBatch> {
    let mut columns = vec![
        ts_array(rows.iter().map(|r| r.window_start)),
        ts_array(rows.iter().map(|r| r.window_start + spec.length_us)),
    ];
    columns.extend(stat_columns(rows.iter().map(|r| &r.stats)));
    columns.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| r.aircraft),
    )));
    columns.push(Arc::new(
        rows.iter()
            .map(|r| avg_score(&r.stats))
            .collect::<Float64Array>(),
    ));
    Ok(RecordBatch::try_new(global_schema(), columns)?)
}

pub fn aircraft_batch(spec: &WindowSpec, rows: &[AircraftWindow]) -> Result<RecordBatch> {
    let mut columns = vec![
        ts_array(rows.iter().map(|r| r.window_start)),
        ts_array(rows.iter().map(|r| r.window_start + spec.length_us)),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.icao24.as_str()),
        )),
    ];
    columns.extend(stat_columns(rows.iter().map(|r| &r.stats)));
    columns.push(Arc::new(
        rows.iter()
            .map(|r| avg_score(&r.stats))
            .collect::<Float64Array>(),
    ));
    Ok(RecordBatch::try_new(aircraft_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn spec() -> WindowSpec {
        WindowSpec::default()
    }

    fn one(v: f64) -> Partial {
        Partial {
            events: 1,
            velocity_n: 1,
            velocity_sum: (v * VELOCITY_SCALE).round() as i64,
            velocity_min: Some(v),
            velocity_max: Some(v),
            ..Partial::default()
        }
    }

    #[test]
    fn windows_bin_from_the_epoch_even_before_it() {
        let s = spec();
        assert_eq!(s.start_of(0), 0);
        assert_eq!(s.start_of(10 * MIN - 1), 0);
        assert_eq!(s.start_of(10 * MIN), 10 * MIN);
        assert_eq!(s.start_of(-1), -10 * MIN);
        assert_eq!(s.closes_at(0), 10 * MIN);
    }

    #[test]
    fn out_of_order_records_are_on_time_until_the_watermark_passes_their_window() {
        let s = spec();
        let mut p = PartitionState::default();
        let t0 = 100 * 10 * MIN; // a window start
        assert!(!p.observe(&s, t0 + 9 * MIN));
        // Earlier than the max, but its window (t0..t0+10) is still open: not late.
        assert!(!p.observe(&s, t0 + MIN));
        // Watermark reaches t0+10 only when an event at t0+15 arrives.
        assert!(!p.observe(&s, t0 + 14 * MIN));
        assert!(!p.observe(&s, t0 + 2 * MIN));
        assert!(!p.observe(&s, t0 + 15 * MIN));
        assert!(p.observe(&s, t0 + 3 * MIN), "window closed: late");
        // A record for the still-open next window is fine.
        assert!(!p.observe(&s, t0 + 10 * MIN));
    }

    #[test]
    fn the_lead_limit_follows_the_later_of_ingest_time_and_the_partition_s_event_time() {
        let s = WindowSpec {
            max_lead_us: 60 * MIN,
            ..spec()
        };
        let mut p = PartitionState::default();
        let ingest = 1000 * MIN;
        assert_eq!(
            p.lead_limit(&s, ingest),
            ingest + 60 * MIN,
            "no event time yet"
        );
        // Event time running ahead of the wall clock (a simulator at full speed): each
        // record is close to the one before, so the limit moves with them.
        p.observe(&s, ingest + 50 * MIN);
        assert_eq!(p.lead_limit(&s, ingest), ingest + 110 * MIN);
        p.observe(&s, ingest + 100 * MIN);
        assert_eq!(p.lead_limit(&s, ingest), ingest + 160 * MIN);
        // A partition whose event time is behind (a replay of history): ingest time rules.
        let mut old = PartitionState::default();
        old.observe(&s, 10 * MIN);
        assert_eq!(old.lead_limit(&s, ingest), ingest + 60 * MIN);
        assert_eq!(
            PartitionState::default().lead_limit(
                &WindowSpec {
                    max_lead_us: i64::MAX,
                    ..s
                },
                1
            ),
            i64::MAX
        );
    }

    #[test]
    fn closing_emits_in_order_and_only_windows_the_watermark_passed() {
        let s = spec();
        let mut p = PartitionState::default();
        let t0 = 100 * 10 * MIN;
        p.add(t0, "bbb", &one(1.0)).unwrap();
        p.add(t0, "aaa", &one(2.0)).unwrap();
        p.add(t0, "aaa", &one(4.0)).unwrap();
        p.add(t0 + 10 * MIN, "aaa", &one(8.0)).unwrap();
        p.observe(&s, t0 + 14 * MIN);
        assert!(
            p.close(&s, false).is_empty(),
            "watermark t0+9 closes nothing"
        );
        p.observe(&s, t0 + 15 * MIN);
        let closed = p.close(&s, false);
        let ids: Vec<_> = closed.iter().map(|w| w.icao24.as_str()).collect();
        assert_eq!(ids, ["aaa", "bbb"]);
        assert_eq!(closed[0].stats.events, 2);
        assert_eq!(closed[0].stats.velocity_max, Some(4.0));
        assert_eq!(p.open_windows(), 1);
        let rest = p.close(&s, true);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].window_start, t0 + 10 * MIN);
    }

    #[test]
    fn a_negative_zero_minimum_is_read_as_zero_so_merge_order_cannot_show() {
        use arrow::array::{Int32Array, StringArray};
        let zeros = Float64Array::from(vec![Some(-0.0), Some(0.0)]);
        let ints = Int64Array::from(vec![1, 1]);
        let mut fields = vec![
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            Field::new("window_start", timestamp_type(), false),
            Field::new("icao24", DataType::Utf8, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![0, 0])),
            Arc::new(TimestampMicrosecondArray::from(vec![0, 0]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["aaa", "bbb"])),
        ];
        for name in PARTIAL_COUNTS {
            fields.push(Field::new(name, DataType::Int64, false));
            columns.push(Arc::new(ints.clone()));
        }
        for name in PARTIAL_EXTREMES {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(Arc::new(zeros.clone()));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let read = read_partials(&batch).unwrap();
        let (a, b) = (&read[0].stats, &read[1].stats);
        assert!(a.velocity_min.unwrap().is_sign_positive());
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(b).unwrap();
        ba.merge(a).unwrap();
        for (x, y) in [
            (ab.velocity_min, ba.velocity_min),
            (ab.velocity_max, ba.velocity_max),
            (ab.altitude_min, ba.altitude_min),
            (ab.altitude_max, ba.altitude_max),
        ] {
            assert_eq!(x.unwrap().to_bits(), y.unwrap().to_bits());
        }
    }

    #[test]
    fn merged_sums_do_not_depend_on_merge_order() {
        let values = [0.1, 0.2, 0.3, 1e-7, 250.123456];
        let mut forward = Partial::default();
        for v in values {
            forward.merge(&one(v)).unwrap();
        }
        let mut backward = Partial::default();
        for v in values.iter().rev() {
            backward.merge(&one(*v)).unwrap();
        }
        assert_eq!(forward, backward);
        let avg = Partial::avg(forward.velocity_sum, forward.velocity_n, VELOCITY_SCALE);
        assert!((avg.unwrap() - values.iter().sum::<f64>() / 5.0).abs() < 1e-6);
    }

    #[test]
    fn state_survives_its_changelog() {
        let s = spec();
        let mut p = PartitionState::default();
        let t0 = 100 * 10 * MIN;
        p.observe(&s, t0 + MIN);
        let fix = Fix {
            timestamp_us: t0 + MIN,
            latitude: 1.0,
            longitude: 2.0,
            altitude_ft: None,
        };
        p.record_fix("aaa", fix);
        p.record_fix(
            "aaa",
            Fix {
                timestamp_us: t0 + 2 * MIN,
                ..fix
            },
        );
        p.add(t0, "aaa", &one(3.0)).unwrap();
        p.record_fix("ccc", fix);
        let mut log: Vec<ChangelogRecord> = p
            .changelog("cl", 2)
            .unwrap()
            .into_iter()
            .map(|r| {
                assert_eq!(r.partition, Some(2));
                (r.key.unwrap(), (!r.tombstone).then_some(r.payload.to_vec()))
            })
            .collect();
        // Hours later ccc expires (no open window) and aaa's window closes.
        p.observe(&s, t0 + 200 * MIN);
        assert_eq!(p.close(&s, false).len(), 1);
        assert_eq!(p.expire(&s), 2);
        let more = p.changelog("cl", 2).unwrap();
        assert!(more.iter().filter(|r| r.tombstone).count() == 2);
        let restored_early = PartitionState::restore(&log).unwrap();
        assert_eq!(restored_early.fixes("aaa").unwrap().1, Some(fix));
        assert_eq!(restored_early.open_windows(), 1);
        assert_eq!(restored_early.watermark(&s), t0 + MIN - s.delay_us);
        log.extend(
            more.into_iter()
                .map(|r| (r.key.unwrap(), (!r.tombstone).then_some(r.payload.to_vec()))),
        );
        // Another owner's keys in the same changelog partition are not ours.
        log.push((b"g/frontier".to_vec(), Some(b"1".to_vec())));
        let restored = PartitionState::restore(&log).unwrap();
        assert_eq!(restored.aircraft_count(), 0);
        assert_eq!(restored.open_windows(), 0);
        assert_eq!(restored.watermark(&s), t0 + 200 * MIN - s.delay_us);
        let bad = vec![(b"a/x".to_vec(), Some(b"{".to_vec()))];
        let e = PartitionState::restore(&bad).unwrap_err().to_string();
        assert!(e.contains("a/x"), "{e}");
    }
}
