//! The flight recorder: a ring of per-interval profile slices and metric samples covering the
//! recent past, so a bundle can show what happened *before* the moment it was asked for.

use std::collections::VecDeque;

use super::Profiles;
use crate::collect::metrics::MetricSample;

/// The profiles of one drain interval, [start, end) in Unix seconds.
#[derive(Clone, Debug)]
pub struct Slice {
    pub start: f64,
    pub end: f64,
    pub profiles: Profiles,
}

pub struct FlightRecorder {
    slices: VecDeque<Slice>,
    metrics: VecDeque<MetricSample>,
    keep_s: f64,
    /// Profiles before this (Unix seconds) were dropped to stay within the memory budget.
    pub shed_before: Option<f64>,
}

impl FlightRecorder {
    /// Keeps what ended within the last `keep_s` seconds.
    pub fn new(keep_s: f64) -> Self {
        Self { slices: VecDeque::new(), metrics: VecDeque::new(), keep_s, shed_before: None }
    }

    pub fn push_slice(&mut self, mut slice: Slice) {
        slice.profiles.freeze();
        let now = slice.end;
        self.slices.push_back(slice);
        while self.slices.front().is_some_and(|s| s.end < now - self.keep_s) {
            self.slices.pop_front();
        }
    }

    pub fn push_metrics(&mut self, sample: MetricSample) {
        let now = sample.t;
        self.metrics.push_back(sample);
        while self.metrics.front().is_some_and(|m| m.t < now - self.keep_s) {
            self.metrics.pop_front();
        }
    }

    /// True when nothing was recorded in the last `seconds`.
    pub fn idle_for(&self, seconds: f64) -> bool {
        let Some(newest) = self.slices.back().map(|s| s.end) else { return true };
        self.slices.iter().rev().take_while(|s| s.end >= newest - seconds).all(|s| s.profiles.is_empty())
    }

    /// Drops the profiles older than `keep_s` before the newest (metrics stay); true if any went.
    pub fn shed(&mut self, keep_s: f64) -> bool {
        let Some(newest) = self.slices.back().map(|s| s.end) else { return false };
        let before = self.slices.len();
        while self.slices.front().is_some_and(|s| s.end < newest - keep_s) {
            self.slices.pop_front();
        }
        self.slices.shrink_to_fit();
        let shed = self.slices.len() < before;
        if shed {
            self.shed_before = self.slices.front().map(|s| s.start);
        }
        shed
    }

    /// The slices of [from, to): those whose midpoint lies in it, so that adjacent windows
    /// (before and after a trigger) never share a slice.
    fn within(&self, from: f64, to: f64) -> impl Iterator<Item = &Slice> {
        self.slices.iter().filter(move |s| (from..to).contains(&((s.start + s.end) / 2.0)))
    }

    /// Merged profiles of the slices of [from, to).
    pub fn profiles(&self, from: f64, to: f64) -> Profiles {
        let mut merged = Profiles::new();
        for slice in self.within(from, to) {
            merged.merge(&slice.profiles);
        }
        merged
    }

    /// The merged on-CPU profile of the slices of [from, to).
    pub fn cpu(&self, from: f64, to: f64) -> super::profile::Profile {
        let mut merged = super::profile::Profile::new(super::profile::ProfileKind::CPU);
        for slice in self.within(from, to) {
            merged.merge(slice.profiles.cpu());
        }
        merged
    }

    /// Where the slices of [from, to) really begin and end: the bundle's true window.
    pub fn coverage(&self, from: f64, to: f64) -> Option<(f64, f64)> {
        let mut covering = self.within(from, to);
        let first = covering.next()?;
        let last = covering.last().unwrap_or(first);
        Some((first.start, last.end))
    }

    pub fn latest_metrics(&self) -> Option<&MetricSample> {
        self.metrics.back()
    }

    pub fn metrics(&self, from: f64, to: f64) -> Vec<MetricSample> {
        self.metrics.iter().filter(|m| m.t >= from && m.t <= to).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::profile::{tests::loc, SampleValue, StackPart};

    fn slice(start: f64, samples: u64) -> Slice {
        let mut profiles = Profiles::new();
        let user = [loc(1, "work", false)];
        if samples > 0 {
            profiles.get_mut(crate::record::profile::ProfileKind::CPU).add(
                Arc::from("t"),
                &[StackPart::User(&user)],
                SampleValue { count: samples, nanos: 0, ..Default::default() },
            );
        }
        Slice { start, end: start + 1.0, profiles }
    }

    #[test]
    fn keeps_the_recent_past_and_merges_windows() {
        let mut fr = FlightRecorder::new(10.0);
        for t in 0..30 {
            fr.push_slice(slice(t as f64, t));
            fr.push_metrics(MetricSample { t: t as f64 + 1.0, ..Default::default() });
        }
        // Slices ending before 30 - 10 are gone.
        assert_eq!(fr.coverage(0.0, 100.0), Some((19.0, 30.0)));
        assert_eq!(fr.profiles(25.0, 27.0).cpu().total().count, 25 + 26);
        // A trigger inside a slice puts that slice on one side only.
        let (before, after) = (fr.profiles(20.0, 25.2), fr.profiles(25.2, 30.0));
        assert_eq!(before.cpu().total().count + after.cpu().total().count, (20..30).sum::<u64>());
        assert_eq!(fr.profiles(0.0, 100.0).cpu().total().count, (19..30).sum::<u64>());
        assert_eq!(fr.metrics(25.0, 27.0).len(), 3);
        assert_eq!(fr.coverage(40.0, 50.0), None);
    }

    #[test]
    fn an_idle_recorder_sheds_its_depth() {
        let mut fr = FlightRecorder::new(100.0);
        for t in 0..30 {
            fr.push_slice(slice(t as f64, u64::from(t < 5)));
        }
        assert!(fr.idle_for(20.0) && !fr.idle_for(26.0));
        assert!(fr.shed(10.0));
        assert_eq!(fr.coverage(0.0, 100.0), Some((19.0, 30.0)));
        assert_eq!(fr.shed_before, Some(19.0));
        assert!(!fr.shed(10.0), "nothing more to shed");
    }
}
