//! Global windows merged from per-partition partials.
//!
//! Each partition closes its own windows (see [`super::window`]) and reports a
//! [`Progress`]: its watermark and the partials of the windows it closed. Progress goes
//! through a one-partition topic (`contrail-window-partials`), so exactly one processor of
//! the group merges it, whichever processors own the raw partitions; in the embedded demo
//! it is handed over in-process.
//!
//! The global watermark is the minimum of the partitions' watermarks. A partition that has
//! not reported for `idle_timeout` (wall clock) stops holding it back; should it report a
//! partial for a window already emitted, that partial is late: counted and published to
//! the late-data topic, never merged into a row already out. A window is emitted once,
//! when the global watermark reaches its end plus the allowed lateness. Because partials
//! are exact (fixed-point sums), the row does not depend on the order partials arrived
//! in, nor on how many processors produced them.
//!
//! Changelog keys (in the changelog partition numbered like the progress partition):
//! `g/wm/<partition>`, `g/w/<window start>` (tombstone once emitted), `g/frontier`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::window::{Progress, WindowPartial, WindowSpec, from_json, to_json};
use crate::bus::{ChangelogRecord, OutRecord};
use crate::error::Result;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Frontier {
    frontier: i64,
    partitions: i32,
}

/// The merger's state.
#[derive(Debug)]
pub struct Merger {
    spec: WindowSpec,
    partitions: i32,
    watermarks: BTreeMap<i32, i64>,
    /// Wall-clock time each partition last moved its watermark (not persisted).
    heard: HashMap<i32, i64>,
    /// Wall-clock time this merger started or was restored.
    since: i64,
    open: BTreeMap<i64, WindowPartial>,
    /// Largest global watermark applied: every window closing at or before it is out.
    frontier: i64,
    dirty_windows: BTreeSet<i64>,
    dirty_watermarks: BTreeSet<i32>,
    frontier_dirty: bool,
}

impl Merger {
    pub fn new(spec: WindowSpec, now_us: i64) -> Self {
        Self {
            spec,
            partitions: 0,
            watermarks: BTreeMap::new(),
            heard: HashMap::new(),
            since: now_us,
            open: BTreeMap::new(),
            frontier: i64::MIN,
            dirty_windows: BTreeSet::new(),
            dirty_watermarks: BTreeSet::new(),
            frontier_dirty: false,
        }
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// The global watermark emitted up to.
    pub fn frontier(&self) -> i64 {
        self.frontier
    }

    /// Takes one partition's progress; returns the partials that came too late.
    pub fn apply(&mut self, progress: &Progress, now_us: i64) -> Result<Vec<WindowPartial>> {
        if progress.partitions > self.partitions {
            self.partitions = progress.partitions;
            self.frontier_dirty = true;
        }
        let mut late = Vec::new();
        for w in &progress.windows {
            if self.spec.closes_at(w.window_start) <= self.frontier {
                late.push(w.clone());
                continue;
            }
            self.open
                .entry(w.window_start)
                .or_insert_with(|| WindowPartial {
                    window_start: w.window_start,
                    ..WindowPartial::default()
                })
                .merge(w)?;
            self.dirty_windows.insert(w.window_start);
        }
        let wm = self
            .watermarks
            .entry(progress.partition)
            .or_insert(i64::MIN);
        if progress.watermark_us > *wm {
            *wm = progress.watermark_us;
            self.heard.insert(progress.partition, now_us);
            self.dirty_watermarks.insert(progress.partition);
        }
        Ok(late)
    }

    /// The minimum watermark over partitions that are not idle; `None` while none is
    /// active (or no partition has reported yet).
    fn global_watermark(&self, now_us: i64) -> Option<i64> {
        (0..self.partitions)
            .filter(|p| {
                let heard = self.heard.get(p).copied().unwrap_or(self.since);
                now_us.saturating_sub(heard) <= self.spec.idle_timeout_us
            })
            .map(|p| self.watermarks.get(&p).copied().unwrap_or(i64::MIN))
            .min()
    }

    /// Removes and returns the windows the global watermark has closed (every open one
    /// with `all`), oldest first.
    pub fn close(&mut self, now_us: i64, all: bool) -> Vec<WindowPartial> {
        if let Some(wm) = self.global_watermark(now_us)
            && wm > self.frontier
        {
            self.frontier = wm;
            self.frontier_dirty = true;
        }
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if !all && self.spec.closes_at(*entry.key()) > self.frontier {
                break;
            }
            let (start, w) = entry.remove_entry();
            self.dirty_windows.insert(start);
            out.push(w);
        }
        if all && let Some(last) = out.last() {
            let closed = self.spec.closes_at(last.window_start);
            if closed > self.frontier {
                self.frontier = closed;
                self.frontier_dirty = true;
            }
        }
        out
    }

    /// Changelog records for what changed since the last call.
    pub fn changelog(&mut self, topic: &str, partition: i32) -> Result<Vec<OutRecord>> {
        let mut out = Vec::new();
        for start in std::mem::take(&mut self.dirty_windows) {
            let key = format!("g/w/{start}").into_bytes();
            out.push(match self.open.get(&start) {
                Some(w) => OutRecord::new(topic, Some(key), to_json(w)?),
                None => OutRecord::tombstone(topic, key),
            });
        }
        for p in std::mem::take(&mut self.dirty_watermarks) {
            let key = format!("g/wm/{p}").into_bytes();
            out.push(OutRecord::new(
                topic,
                Some(key),
                to_json(&self.watermarks[&p])?,
            ));
        }
        if std::mem::take(&mut self.frontier_dirty) {
            let f = Frontier {
                frontier: self.frontier,
                partitions: self.partitions,
            };
            out.push(OutRecord::new(
                topic,
                Some(b"g/frontier".to_vec()),
                to_json(&f)?,
            ));
        }
        Ok(out.into_iter().map(|r| r.to_partition(partition)).collect())
    }

    /// Rebuilds the merger from its changelog records; other keys are skipped.
    pub fn restore(spec: WindowSpec, records: &[ChangelogRecord], now_us: i64) -> Result<Self> {
        let mut m = Self::new(spec, now_us);
        for (key, value) in records {
            let k = String::from_utf8_lossy(key);
            if k == "g/frontier" {
                if let Some(v) = value {
                    let f: Frontier = from_json(key, v)?;
                    m.frontier = f.frontier;
                    m.partitions = f.partitions;
                }
            } else if let Some(p) = k.strip_prefix("g/wm/").and_then(|p| p.parse().ok()) {
                match value {
                    Some(v) => {
                        m.watermarks.insert(p, from_json(key, v)?);
                    }
                    None => {
                        m.watermarks.remove(&p);
                    }
                }
            } else if let Some(s) = k.strip_prefix("g/w/").and_then(|s| s.parse().ok()) {
                match value {
                    Some(v) => {
                        m.open.insert(s, from_json(key, v)?);
                    }
                    None => {
                        m.open.remove(&s);
                    }
                }
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::window::Partial;

    const MIN: i64 = 60_000_000;
    const T0: i64 = 100 * 10 * MIN;

    fn spec() -> WindowSpec {
        WindowSpec::default()
    }

    fn partial(start: i64, events: i64) -> WindowPartial {
        WindowPartial {
            window_start: start,
            aircraft: 1,
            stats: Partial {
                events,
                ..Partial::default()
            },
        }
    }

    fn progress(partition: i32, wm: i64, windows: Vec<WindowPartial>) -> Progress {
        Progress {
            partition,
            partitions: 2,
            watermark_us: wm,
            windows,
        }
    }

    #[test]
    fn a_window_closes_when_every_partition_has_passed_it() {
        let mut m = Merger::new(spec(), 0);
        m.apply(&progress(0, T0 + 10 * MIN, vec![partial(T0, 3)]), 0)
            .unwrap();
        assert!(m.close(0, false).is_empty(), "partition 1 not heard yet");
        m.apply(&progress(1, T0 + 5 * MIN, vec![]), 0).unwrap();
        assert!(m.close(0, false).is_empty(), "partition 1 is behind");
        m.apply(&progress(1, T0 + 10 * MIN, vec![partial(T0, 4)]), 0)
            .unwrap();
        let out = m.close(0, false);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].stats.events, out[0].aircraft), (7, 2));
        // A partial for the emitted window is late, not merged.
        let late = m
            .apply(&progress(0, T0 + 11 * MIN, vec![partial(T0, 1)]), 0)
            .unwrap();
        assert_eq!(late.len(), 1);
        assert_eq!(m.open_windows(), 0);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back() {
        let s = spec();
        let mut m = Merger::new(s, 0);
        m.apply(&progress(0, T0 + 10 * MIN, vec![partial(T0, 3)]), 0)
            .unwrap();
        // Partition 1 never reports. Just inside the idle timeout: held back.
        assert!(m.close(s.idle_timeout_us, false).is_empty());
        // Partition 0 keeps moving; partition 1 is silent past the timeout.
        let later = s.idle_timeout_us + 1;
        m.apply(&progress(0, T0 + 11 * MIN, vec![]), later).unwrap();
        assert_eq!(m.close(later, false).len(), 1);
        // When everyone is silent, nothing moves.
        assert!(m.close(later * 10, false).is_empty());
    }

    #[test]
    fn restores_from_its_changelog() {
        let mut m = Merger::new(spec(), 0);
        m.apply(&progress(0, T0 + 10 * MIN, vec![partial(T0, 3)]), 0)
            .unwrap();
        m.apply(&progress(1, T0, vec![]), 0).unwrap();
        m.close(0, false);
        let log: Vec<ChangelogRecord> = m
            .changelog("cl", 0)
            .unwrap()
            .into_iter()
            .map(|r| (r.key.unwrap(), (!r.tombstone).then_some(r.payload.to_vec())))
            .collect();
        let mut r = Merger::restore(spec(), &log, 0).unwrap();
        assert_eq!(r.open_windows(), 1);
        assert_eq!(r.frontier(), m.frontier());
        r.apply(&progress(1, T0 + 10 * MIN, vec![partial(T0, 1)]), 0)
            .unwrap();
        let out = r.close(0, false);
        assert_eq!(out[0].stats.events, 4);
    }
}
