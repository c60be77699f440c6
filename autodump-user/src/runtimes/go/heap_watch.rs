//! A Go program's heap profile over time: a snapshot every `--heap-every`, kept for as long as
//! bundles reach back, so that a bundle holds the heap now (`heap.pb.gz`) and as it was before
//! its window (`heap-base.pb.gz`), and shows what grew in between.
//!
//! Snapshots cost little: each distinct allocating stack is kept once for all of them (most
//! buckets outlive many snapshots), and at most `MAX_SNAPSHOTS` are kept, thinned evenly.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use super::{
    heap::HeapSnapshot,
    heap_profile::heap_profile,
    kinds::{HEAP, HEAP_BASE},
    report::HeapReport,
    GoRuntime,
};
use crate::record::{profile::Profile, Recorder};

/// Snapshots kept at most, however short `--heap-every` is against the lookback: a bundle's base
/// is then at most a tenth of the kept span older than its window's start.
const MAX_SNAPSHOTS: usize = 10;

pub struct HeapWatch {
    every: Duration,
    keep_s: f64,
    snapshots: VecDeque<(f64, HeapSnapshot)>,
    /// Every stack the kept snapshots hold, once.
    stacks: HashSet<Arc<[u64]>>,
    /// What the last bundle's read found, for its summary.
    pub report: Option<HeapReport>,
}

impl HeapWatch {
    pub fn new(every: Duration, keep_s: f64) -> Self {
        Self { every, keep_s, snapshots: VecDeque::new(), stacks: HashSet::new(), report: None }
    }

    /// Reads a snapshot if the last is `every` old (call each tick).
    pub fn observe(&mut self, rt: &GoRuntime, now: f64) {
        if self.snapshots.back().is_some_and(|(t, _)| now - t < self.every.as_secs_f64()) {
            return;
        }
        match rt.heap() {
            Ok(snapshot) => self.keep(now, snapshot),
            Err(e) => tracing::debug!("Go heap profile not read: {e}"),
        }
    }

    /// Keeps `snapshot` (its stacks shared with the others), and drops what no bundle needs.
    fn keep(&mut self, now: f64, mut snapshot: HeapSnapshot) {
        for record in &mut snapshot.records {
            match self.stacks.get(&record.stack) {
                Some(known) => record.stack = known.clone(),
                None => drop(self.stacks.insert(record.stack.clone())),
            }
        }
        self.snapshots.push_back((now, snapshot));
        let before = self.snapshots.len();
        while self.snapshots.len() > 2 && self.snapshots.get(1).is_some_and(|(t, _)| *t < now - self.keep_s) {
            self.snapshots.pop_front();
        }
        // Too many: drop the one whose neighbours lie closest together, so the rest stay even.
        while self.snapshots.len() > MAX_SNAPSHOTS {
            let times: Vec<f64> = self.snapshots.iter().map(|(t, _)| *t).collect();
            let closest = (1..times.len() - 1)
                .min_by(|&a, &b| (times[a + 1] - times[a - 1]).total_cmp(&(times[b + 1] - times[b - 1])));
            self.snapshots.remove(closest.expect("more than two"));
        }
        if self.snapshots.len() < before {
            // Only this set refers to a stack no snapshot holds any more.
            self.stacks.retain(|s| Arc::strong_count(s) > 1);
        }
    }

    /// The heap now and, when one was read earlier, the last snapshot at or before `start`
    /// (else the oldest): the profiles a bundle whose window starts at `start` holds.
    pub fn profiles(&mut self, rt: &GoRuntime, recorder: &mut Recorder, start: f64, now: f64) -> Vec<Profile> {
        let started = std::time::Instant::now();
        let (snapshot, reason) = match rt.heap_rate() {
            Ok(Ok(_)) => match rt.heap() {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(format!("cannot read the heap profile: {e}"))),
            },
            Ok(Err(off)) => (None, Some(off.to_string())),
            Err(e) => (None, Some(format!("cannot read the memory profiler's settings: {e}"))),
        };
        let read_ms = started.elapsed().as_secs_f64() * 1e3;
        let Some(current) = snapshot else {
            self.report = Some(HeapReport { reason, read_ms, ..Default::default() });
            return Vec::new();
        };
        let base = self.snapshots.iter().rev().find(|(t, _)| *t <= start + 0.5).or(self.snapshots.front());
        let mut profiles = vec![heap_profile(recorder, &current, HEAP)];
        if let Some((_, snapshot)) = base {
            profiles.push(heap_profile(recorder, snapshot, HEAP_BASE));
        }
        self.report = Some(HeapReport {
            available: true,
            rate: current.rate,
            buckets: current.records.len(),
            base_read_at: base.map(|(t, _)| *t),
            garbage_buckets: current.garbage,
            read_ms,
            reason: None,
        });
        let rss_mib = crate::collect::memory::own_status_mib("VmRSS:");
        tracing::info!(buckets = current.records.len(), read_ms, rss_mib, "Go heap profile read");
        self.keep(now, current);
        profiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtimes::go::heap::HeapRecord;

    fn snapshot(stacks: &[&[u64]]) -> HeapSnapshot {
        let records = stacks
            .iter()
            .map(|s| HeapRecord {
                stack: Arc::from(*s),
                alloc_objects: 1,
                alloc_bytes: 8,
                free_objects: 0,
                free_bytes: 0,
            })
            .collect();
        HeapSnapshot { rate: 1, records, garbage: 0 }
    }

    #[test]
    fn snapshots_share_stacks_and_stay_few_and_even() {
        let mut watch = HeapWatch::new(Duration::from_secs(1), 1000.0);
        for t in 0..40 {
            let stacks: &[&[u64]] = if t % 2 == 0 { &[&[1, 2, 3], &[4, 5]] } else { &[&[1, 2, 3]] };
            watch.keep(f64::from(t), snapshot(stacks));
        }
        assert_eq!(watch.snapshots.len(), MAX_SNAPSHOTS);
        let times: Vec<f64> = watch.snapshots.iter().map(|(t, _)| *t).collect();
        assert_eq!((times[0], times[MAX_SNAPSHOTS - 1]), (0.0, 39.0), "the oldest and newest stay");
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g <= 8.0), "thinned evenly: {gaps:?}");
        let first = &watch.snapshots[0].1.records[0].stack;
        assert!(watch.snapshots.iter().all(|(_, s)| Arc::ptr_eq(&s.records[0].stack, first)), "one copy of a stack");
        assert_eq!(watch.stacks.len(), 2);
        // Past the horizon, old snapshots go, and stacks only they held with them.
        let mut watch = HeapWatch::new(Duration::from_secs(1), 5.0);
        watch.keep(0.0, snapshot(&[&[9]]));
        for t in 1..10 {
            watch.keep(f64::from(t), snapshot(&[&[1]]));
        }
        assert!(watch.snapshots.front().is_some_and(|(t, _)| *t >= 3.0));
        assert_eq!(watch.stacks.len(), 1, "the stack only the dropped snapshot held is forgotten");
    }
}
