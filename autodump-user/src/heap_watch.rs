//! A Go program's heap profile over time: a snapshot every `--heap-every`, kept for as long as
//! bundles reach back, so that a bundle holds the heap now (`heap.pb.gz`) and as it was before
//! its window (`heap-base.pb.gz`), and shows what grew in between.

use std::{collections::VecDeque, time::Duration};

use crate::{
    collect::goruntime::{heap::HeapSnapshot, GoRuntime},
    record::{
        profile::{Profile, ProfileKind},
        Recorder,
    },
    write::summary::HeapReport,
};

pub struct HeapWatch {
    every: Duration,
    keep_s: f64,
    snapshots: VecDeque<(f64, HeapSnapshot)>,
    /// What the last bundle's read found, for its summary.
    pub report: Option<HeapReport>,
}

impl HeapWatch {
    pub fn new(every: Duration, keep_s: f64) -> Self {
        Self { every, keep_s, snapshots: VecDeque::new(), report: None }
    }

    /// Reads a snapshot if the last is `every` old (call each tick).
    pub fn observe(&mut self, rt: &GoRuntime, now: f64) {
        if self.snapshots.back().is_some_and(|(t, _)| now - t < self.every.as_secs_f64()) {
            return;
        }
        match rt.heap() {
            Ok(snapshot) => self.snapshots.push_back((now, snapshot)),
            Err(e) => tracing::debug!("Go heap profile not read: {e}"),
        }
        while self.snapshots.len() > 2 && self.snapshots.get(1).is_some_and(|(t, _)| *t < now - self.keep_s) {
            self.snapshots.pop_front();
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
        let mut profiles = vec![recorder.heap_profile(&current, ProfileKind::Heap)];
        if let Some((_, snapshot)) = base {
            profiles.push(recorder.heap_profile(snapshot, ProfileKind::HeapBase));
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
        self.snapshots.push_back((now, current));
        profiles
    }
}
