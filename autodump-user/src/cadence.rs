//! Many processes, one interval: each watched process's interval work (its /proc reads, its
//! part of the drain symbolized into a slice, its metrics and rules) is done for at most
//! `--processes-per-interval` processes each interval, in turn. Past that, a process has its
//! turn every few intervals, and its part of each drain waits for it, merged: its slice then
//! covers those intervals. The agent's cost per second stays flat as processes are added; the
//! probes still record every event.

use std::{
    collections::{hash_map::Entry, HashMap},
    hash::Hash,
};

use crate::collect::drain::{Drained, RawSample, RawWakeup};

/// Processes given their interval work each interval, at most: about 50 µs of the agent's time
/// each (500 idle workers: 1.5% of a core at 100, 1.3% at 50).
pub const PROCESSES_PER_INTERVAL: usize = 50;

#[derive(Debug, Default)]
pub struct Cadence {
    /// 0: every process every interval.
    per_interval: usize,
    interval: u64,
    /// Each waiting process's parts of the drains since its last turn.
    pending: HashMap<u32, Drained>,
}

impl Cadence {
    pub fn new(per_interval: usize) -> Self {
        Self { per_interval, ..Self::default() }
    }

    /// Every how many intervals each of `watched` processes has its turn.
    pub fn stride(&self, watched: usize) -> u64 {
        match self.per_interval {
            0 => 1,
            n => watched.div_ceil(n).max(1) as u64,
        }
    }

    /// Whether the process at `index` (of `watched`, in a stable order) has its turn this
    /// interval: the turns are spread evenly over the stride.
    pub fn is_turn(&self, index: usize, watched: usize) -> bool {
        (self.interval + index as u64).is_multiple_of(self.stride(watched))
    }

    /// A part of a drain for a process whose turn it is not.
    pub fn hold(&mut self, pid: u32, part: Drained) {
        self.pending.entry(pid).or_default().extend(part);
    }

    /// Everything drained for `pid` since its last turn, with `part` (this interval's): the
    /// same thread and stacks in several drains added up, so that each is symbolized once.
    pub fn take(&mut self, pid: u32, part: Drained) -> Drained {
        match self.pending.remove(&pid) {
            Some(mut held) => {
                held.extend(part);
                coalesce(&mut held.cpu, sample_key, add_sample);
                coalesce(&mut held.offcpu, sample_key, add_sample);
                coalesce(&mut held.faults, sample_key, add_sample);
                coalesce(
                    &mut held.wakeups,
                    |w| (sample_key(&w.blocked), waker_key(w)),
                    |a, b| add_sample(&mut a.blocked, &b.blocked),
                );
                held
            }
            None => part,
        }
    }

    /// The interval's work is done.
    pub fn advance(&mut self) {
        self.interval += 1;
    }

    /// Processes no longer watched hold nothing.
    pub fn retain(&mut self, watched: impl Fn(u32) -> bool) {
        self.pending.retain(|pid, _| watched(*pid));
    }
}

type SampleKey = (u32, crate::collect::drain::RawStack, crate::collect::drain::RawStack, bool, u64, u64);

fn sample_key(s: &RawSample) -> SampleKey {
    (s.tid, s.user.clone(), s.kernel.clone(), s.runnable, s.fault_address, s.futex)
}

fn waker_key(w: &RawWakeup) -> impl Hash + Eq {
    let stacks = (w.waker_user.clone(), w.waker_kernel.clone());
    (w.futex, w.waker_tgid, w.waker_tid, w.waker_comm.clone(), stacks, w.interrupt)
}

fn add_sample(into: &mut RawSample, other: &RawSample) {
    into.count += other.count;
    into.off_cpu_ns += other.off_cpu_ns;
}

/// Adds up the items of `items` with the same key, in the order each key first came.
fn coalesce<T, K: Hash + Eq>(items: &mut Vec<T>, key: impl Fn(&T) -> K, add: impl Fn(&mut T, &T)) {
    let mut first: foldhash::HashMap<K, usize> =
        foldhash::HashMap::with_capacity_and_hasher(items.len(), Default::default());
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        match first.entry(key(&item)) {
            Entry::Occupied(at) => add(&mut kept[*at.get()], &item),
            Entry::Vacant(at) => {
                at.insert(kept.len());
                kept.push(item);
            }
        }
    }
    *items = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::drain::{RawSample, RawStack};

    #[test]
    fn each_process_has_one_turn_per_stride() {
        let mut cadence = Cadence::new(100);
        assert_eq!(cadence.stride(100), 1);
        assert_eq!(cadence.stride(101), 2);
        assert_eq!(cadence.stride(500), 5);
        assert_eq!(Cadence::new(PROCESSES_PER_INTERVAL).stride(PROCESSES_PER_INTERVAL), 1);
        let mut turns = vec![0; 500];
        for _ in 0..10 {
            for (i, t) in turns.iter_mut().enumerate() {
                *t += u32::from(cadence.is_turn(i, 500));
            }
            cadence.advance();
        }
        assert!(turns.iter().all(|&t| t == 2), "{turns:?}");
        assert_eq!(Cadence::new(0).stride(10_000), 1);
    }

    #[test]
    fn held_parts_come_back_merged_at_the_turn() {
        let mut cadence = Cadence::new(1);
        let sample = |count| RawSample {
            tgid: 7,
            tid: 7,
            user: RawStack::Lost,
            kernel: RawStack::Lost,
            runnable: false,
            fault_address: 0,
            count,
            off_cpu_ns: 0,
            futex: 0,
        };
        let part = |n| Drained { offcpu: vec![sample(n), RawSample { tid: 8, ..sample(n) }], ..Drained::default() };
        cadence.hold(7, part(1));
        cadence.hold(7, part(2));
        let merged = cadence.take(7, part(3));
        // One sample per thread and stacks, its counts added up.
        let counts: Vec<(u32, u64)> = merged.offcpu.iter().map(|s| (s.tid, s.count)).collect();
        assert_eq!(counts, [(7, 6), (8, 6)]);
        assert!(cadence.take(7, Drained::default()).offcpu.is_empty());
    }
}
