//! A Go program's goroutines over time, read from outside every `--goroutine-every` into the
//! flight recorder, so that a bundle shows where its goroutines waited and for how long
//! (`gowait.*`, goroutine-time by stack and wait reason, running and runnable ones included, as
//! fgprof shows it from inside), which stacks grew (`goroutines-diff.svg`), and who has waited
//! longest.
//!
//! A snapshot costs little: each distinct stack is kept once, a snapshot is its counts by
//! (stack, state), and a goroutine still parked where it was is not walked again. Over
//! `--goroutine-max` goroutines a snapshot reads an even sample, and says so.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    report::{GoroutineGrowth, GoroutineWait, SnapshotReport},
    GoError, GoRuntime, Goroutine, ReadStats, StackCache,
};
use crate::collect::monotonic_ns;

/// Goroutines of one stack and state: how many, and the goroutine-seconds they stand for.
#[derive(Clone, Debug)]
pub struct GoEntry {
    /// Return addresses, innermost first.
    pub frames: Arc<[u64]>,
    pub state: Arc<str>,
    pub goroutines: u64,
    pub seconds: f64,
}

/// The stacks whose goroutine count grew most, and the longest waits, a summary lists.
const TOP: usize = 10;

/// Distinct (stack, state) pairs a snapshot keeps, most goroutines first; the rest are counted
/// under one `[other stacks]` entry. Real programs have tens to hundreds; this bounds the kept
/// snapshots at about 100 KiB each, whatever the program does.
const MAX_PAIRS: usize = 8192;

/// The state the pairs over `MAX_PAIRS` are counted under (with no stack).
const OTHER_STACKS: &str = "other stacks";

/// One snapshot: goroutines by (stack, state), standing for `dt` seconds ending at `t`; each
/// goroutine read stands for `scale` of them (more than one when the snapshot was a sample).
struct Snapshot {
    t: f64,
    dt: f64,
    scale: f64,
    counts: Vec<(u32, u32, u32)>,
}

pub struct GoroutineWatch {
    every: Duration,
    max: usize,
    keep_s: f64,
    cache: StackCache,
    stacks: Vec<Arc<[u64]>>,
    stack_ids: foldhash::HashMap<Arc<[u64]>, u32>,
    states: Vec<Arc<str>>,
    state_ids: foldhash::HashMap<Arc<str>, u32>,
    snapshots: VecDeque<Snapshot>,
    /// Waiting goroutines: (state, stack, since when (Unix seconds), runs).
    waiting: foldhash::HashMap<u64, (u32, u32, f64, u8)>,
    last: SnapshotReport,
}

/// What a bundle takes from the watch: profiles' inputs, by stack and state.
pub struct GoWindow {
    /// Goroutine-snapshots and goroutine-seconds by stack and state over the window.
    pub time: Vec<GoEntry>,
    /// Goroutines by (frames, state) at the window's first and last snapshot.
    pub first: Vec<GoEntry>,
    pub last: Vec<GoEntry>,
    pub report: SnapshotReport,
}

impl GoroutineWatch {
    pub fn new(every: Duration, max: usize, keep_s: f64) -> Self {
        Self {
            every,
            max: max.max(1),
            keep_s,
            cache: StackCache::default(),
            stacks: Vec::new(),
            stack_ids: Default::default(),
            states: Vec::new(),
            state_ids: Default::default(),
            snapshots: VecDeque::new(),
            waiting: Default::default(),
            last: SnapshotReport::default(),
        }
    }

    /// Takes a snapshot if the last is `every` old (call each tick).
    pub fn observe(&mut self, rt: &GoRuntime, now: f64) {
        let previous = self.snapshots.back().map(|s| s.t);
        // A tick a little early still takes its snapshot (ticks and `every` are both a second).
        if previous.is_some_and(|t| now - t < self.every.as_secs_f64() * 0.8) {
            return;
        }
        let started = Instant::now();
        let (goroutines, stats) = match rt.goroutines_sampled(self.max, &mut self.cache) {
            Ok(read) => read,
            Err(e) => return tracing::debug!("goroutine snapshot not read: {e}"),
        };
        let read_ms = started.elapsed().as_secs_f64() * 1e3;
        self.keep(now, &goroutines, stats, read_ms);
        tracing::debug!(goroutines = stats.total, walked = stats.walked, read_ms, "goroutine snapshot");
    }

    /// Keeps a snapshot of `goroutines` read at `now`.
    fn keep(&mut self, now: f64, goroutines: &[Goroutine], stats: ReadStats, read_ms: f64) {
        let previous = self.snapshots.back().map(|s| s.t);
        // The goroutines read stand for all of them: each counts total / read.
        let scale = stats.total as f64 / goroutines.len().max(1) as f64;
        let mut counts: foldhash::HashMap<(u32, u32), u32> = Default::default();
        let mut waiting = foldhash::HashMap::with_capacity_and_hasher(self.waiting.len(), Default::default());
        // Goroutines parked where they were share their stack's allocation from read to read:
        // its id is found by address, and only new stacks are hashed whole.
        let mut by_address: foldhash::HashMap<*const u64, u32> = Default::default();
        let mono_now = monotonic_ns();
        for g in goroutines {
            let stack = match by_address.get(&g.frames.as_ptr()) {
                Some(&id) => id,
                None => {
                    let id = self.stack_id(&g.frames);
                    by_address.insert(g.frames.as_ptr(), id);
                    id
                }
            };
            let state = self.state_id(&g.state);
            *counts.entry((stack, state)).or_default() += 1;
            if g.waiting {
                // Still waiting where it was, and has not run since: it has waited all along.
                let since = match self.waiting.get(&g.goid) {
                    Some(&(s, k, since, runs)) if (s, k, runs) == (state, stack, g.runs) => since,
                    _ => now,
                };
                waiting.insert(g.goid, (state, stack, since.min(runtime_since(g, now, mono_now)), g.runs));
            }
        }
        self.waiting = waiting;
        let dt = previous.map_or(self.every.as_secs_f64(), |t| now - t);
        let mut counts: Vec<(u32, u32, u32)> = counts.into_iter().map(|((k, s), n)| (k, s, n)).collect();
        if counts.len() > MAX_PAIRS {
            counts.sort_unstable_by(|a, b| b.2.cmp(&a.2).then_with(|| (a.0, a.1).cmp(&(b.0, b.1))));
            let rest: u32 = counts.drain(MAX_PAIRS - 1..).map(|c| c.2).sum();
            let (none, other) = (self.stack_id(&Arc::from(Vec::new())), self.state_id(OTHER_STACKS));
            counts.push((none, other, rest));
        }
        self.snapshots.push_back(Snapshot { t: now, dt, scale, counts });
        while self.snapshots.front().is_some_and(|s| s.t < now - self.keep_s) {
            self.snapshots.pop_front();
        }
        self.last = SnapshotReport {
            every_s: self.every.as_secs_f64(),
            snapshots: 0,
            goroutines: stats.total,
            read: goroutines.len(),
            read_ms,
            walked: stats.walked,
        };
        self.forget_unused();
    }

    /// The snapshots whose interval ends within [from, to].
    pub fn window(&self, from: f64, to: f64) -> GoWindow {
        let within: Vec<&Snapshot> = self.snapshots.iter().filter(|s| s.t >= from && s.t <= to).collect();
        let mut time: HashMap<(u32, u32), (u64, f64)> = HashMap::new();
        for s in &within {
            for &(k, st, n) in &s.counts {
                let e = time.entry((k, st)).or_default();
                e.0 += u64::from(n);
                // Each goroutine read stands for `scale` goroutines over `dt` seconds.
                e.1 += f64::from(n) * s.scale * s.dt;
            }
        }
        let entry = |k: u32, st: u32, goroutines: u64, seconds: f64| GoEntry {
            frames: self.stacks[k as usize].clone(),
            state: self.states[st as usize].clone(),
            goroutines,
            seconds,
        };
        let expand = |s: Option<&&Snapshot>| -> Vec<GoEntry> {
            let scaled = |s: &Snapshot, n: u32| (f64::from(n) * s.scale).round() as u64;
            s.map(|s| s.counts.iter().map(|&(k, st, n)| entry(k, st, scaled(s, n), 0.0)).collect()).unwrap_or_default()
        };
        GoWindow {
            time: time.into_iter().map(|((k, st), (n, secs))| entry(k, st, n, secs)).collect(),
            first: expand(within.first()),
            last: expand(within.last()),
            report: SnapshotReport { snapshots: within.len(), ..self.last.clone() },
        }
    }

    /// Every goroutine now (at most `MAX_DUMPED_GOROUTINES`), unmoved stacks taken from the
    /// snapshots' cache, for a bundle's dump.
    pub fn read_all(&mut self, rt: &GoRuntime) -> Result<Vec<Goroutine>, GoError> {
        rt.goroutines_sampled(usize::MAX, &mut self.cache).map(|(gs, _)| gs)
    }

    /// How long `g` has waited in its state at `now` (Unix seconds), as the snapshots saw it
    /// or the runtime recorded it, whichever knows of the longer wait; `None` if it does not
    /// wait or neither knows.
    pub fn waited(&self, g: &Goroutine, now: f64) -> Option<f64> {
        if !g.waiting {
            return None;
        }
        let seen = self
            .waiting
            .get(&g.goid)
            .filter(|&&(state, _, _, runs)| *self.states[state as usize] == *g.state && runs == g.runs);
        let runtime = (g.waitsince != 0).then(|| runtime_since(g, now, monotonic_ns()));
        let since = match (seen.map(|w| w.2), runtime) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((now - since).max(0.0))
    }

    /// The goroutines waiting longest, with the innermost function `name_of` gives their stack.
    pub fn top_waits(&self, now: f64, name_of: &mut dyn FnMut(&[u64]) -> String) -> Vec<GoroutineWait> {
        let mut longest: Vec<_> = self.waiting.iter().collect();
        longest.sort_by(|a, b| a.1 .2.total_cmp(&b.1 .2).then_with(|| a.0.cmp(b.0)));
        longest
            .into_iter()
            .take(TOP)
            .map(|(&goid, &(state, stack, since, _))| GoroutineWait {
                goid,
                state: self.states[state as usize].to_string(),
                waiting_s: (now - since).max(0.0),
                function: name_of(&self.stacks[stack as usize]),
            })
            .collect()
    }

    fn stack_id(&mut self, frames: &Arc<[u64]>) -> u32 {
        if let Some(&id) = self.stack_ids.get(frames) {
            return id;
        }
        let id = self.stacks.len() as u32;
        self.stacks.push(frames.clone());
        self.stack_ids.insert(frames.clone(), id);
        id
    }

    fn state_id(&mut self, state: &str) -> u32 {
        if let Some(&id) = self.state_ids.get(state) {
            return id;
        }
        let id = self.states.len() as u32;
        let state: Arc<str> = state.into();
        self.states.push(state.clone());
        self.state_ids.insert(state, id);
        id
    }

    /// Renumbers the stacks once half of them are no longer referred to, so that a program
    /// whose stacks change for ever does not grow the agent.
    fn forget_unused(&mut self) {
        let mut live = vec![false; self.stacks.len()];
        for s in &self.snapshots {
            for &(k, _, _) in &s.counts {
                live[k as usize] = true;
            }
        }
        for &(_, k, ..) in self.waiting.values() {
            live[k as usize] = true;
        }
        let used = live.iter().filter(|&&l| l).count();
        if self.stacks.len() < 1024 || used * 2 > self.stacks.len() {
            return;
        }
        let mut renumber = vec![u32::MAX; self.stacks.len()];
        let old = std::mem::take(&mut self.stacks);
        self.stack_ids.clear();
        for (i, frames) in old.into_iter().enumerate().filter(|(i, _)| live[*i]) {
            renumber[i] = self.stacks.len() as u32;
            self.stack_ids.insert(frames.clone(), renumber[i]);
            self.stacks.push(frames);
        }
        for s in self.snapshots.iter_mut() {
            s.counts.iter_mut().for_each(|c| c.0 = renumber[c.0 as usize]);
        }
        self.waiting.values_mut().for_each(|w| w.1 = renumber[w.1 as usize]);
    }
}

/// When the runtime says `g` began waiting, in Unix seconds (`now` if it does not know: only a
/// garbage collection that finds a goroutine waiting records it).
fn runtime_since(g: &Goroutine, now: f64, mono_now: u64) -> f64 {
    match g.waitsince {
        0 => now,
        since if since <= mono_now => now - (mono_now - since) as f64 / 1e9,
        _ => now,
    }
}

/// The stacks whose goroutine count grew most from the first to the last snapshot; `folded`
/// renders a stack.
pub fn grew(window: &GoWindow, folded: &mut dyn FnMut(&[u64]) -> String) -> Vec<GoroutineGrowth> {
    // Goroutines by stack, and by state within it.
    type ByStack = HashMap<Arc<[u64]>, (u64, HashMap<Arc<str>, u64>)>;
    let by_stack = |list: &[GoEntry]| {
        let mut m = ByStack::new();
        for e in list {
            let s = m.entry(e.frames.clone()).or_default();
            s.0 += e.goroutines;
            *s.1.entry(e.state.clone()).or_default() += e.goroutines;
        }
        m
    };
    let (before, after) = (by_stack(&window.first), by_stack(&window.last));
    // (stack, before, after, state most of them are in)
    type Grown = (Arc<[u64]>, u64, u64, Arc<str>);
    let mut grown: Vec<Grown> = after
        .iter()
        .filter_map(|(k, (n, states))| {
            let b = before.get(k).map_or(0, |x| x.0);
            let state = states.iter().max_by_key(|(s, c)| (**c, std::cmp::Reverse(s.to_string())))?.0.clone();
            (*n > b).then(|| (k.clone(), b, *n, state))
        })
        .collect();
    grown.sort_by(|a, b| (b.2 - b.1).cmp(&(a.2 - a.1)).then_with(|| a.0.cmp(&b.0)));
    grown
        .into_iter()
        .take(TOP)
        .map(|(k, before, after, state)| GoroutineGrowth { stack: folded(&k), before, after, state: state.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(goid: u64, state: &str, frames: &[u64], runs: u8) -> Goroutine {
        let waiting = !matches!(state, "running" | "runnable");
        Goroutine { goid, state: state.into(), waiting, waitsince: 0, runs, frames: frames.into() }
    }

    fn stats(total: usize) -> ReadStats {
        ReadStats { total, walked: 0 }
    }

    #[test]
    fn goroutine_time_is_count_times_interval_and_a_sample_stands_for_all() {
        let mut watch = GoroutineWatch::new(Duration::from_secs(1), 100, 60.0);
        let parked: Vec<Goroutine> = (1..=3).map(|id| g(id, "chan receive", &[0x10, 0x20], 0)).collect();
        for t in [100.0, 101.0, 102.0] {
            let mut all = parked.clone();
            all.push(g(9, "running", &[0x30], 0));
            watch.keep(t, &all, stats(4), 0.1);
        }
        let window = watch.window(100.5, 102.0);
        let time = |state: &str| window.time.iter().find(|e| &*e.state == state).map(|e| (e.goroutines, e.seconds));
        assert_eq!(time("chan receive"), Some((6, 6.0)), "3 goroutines over two 1-s intervals");
        assert_eq!(time("running"), Some((2, 2.0)));
        assert_eq!(window.report.snapshots, 2);
        // Half of 8 goroutines read: each stands for two.
        watch.keep(103.0, &parked[..2], stats(4), 0.1);
        let window = watch.window(102.5, 103.0);
        assert_eq!(window.time[0].seconds, 4.0);
        assert_eq!(window.last[0].goroutines, 4);
    }

    #[test]
    fn a_wait_lasts_while_the_goroutine_stays_parked_and_has_not_run() {
        let mut watch = GoroutineWatch::new(Duration::from_secs(1), 100, 60.0);
        watch.keep(100.0, &[g(1, "select", &[0x10], 7), g(2, "select", &[0x10], 3)], stats(2), 0.1);
        // Goroutine 2 ran in between and parked at the same place again.
        watch.keep(101.0, &[g(1, "select", &[0x10], 7), g(2, "select", &[0x10], 4)], stats(2), 0.1);
        watch.keep(102.0, &[g(1, "select", &[0x10], 7), g(2, "select", &[0x10], 4)], stats(2), 0.1);
        assert_eq!(watch.waited(&g(1, "select", &[0x10], 7), 102.5), Some(2.5));
        assert_eq!(watch.waited(&g(2, "select", &[0x10], 4), 102.5), Some(1.5));
        assert_eq!(watch.waited(&g(1, "running", &[0x10], 8), 102.5), None);
        let top = watch.top_waits(102.5, &mut |_| "main.f".into());
        assert_eq!((top[0].goid, top[0].waiting_s, top[0].function.as_str()), (1, 2.5, "main.f"));
    }

    #[test]
    fn what_grew_is_the_stack_whose_count_grew_most() {
        let mut watch = GoroutineWatch::new(Duration::from_secs(1), 100, 60.0);
        let leak = |n: u64| (0..n).map(|id| g(100 + id, "chan receive", &[0x40], 0)).collect::<Vec<_>>();
        let mut first = leak(2);
        first.push(g(1, "IO wait", &[0x50], 0));
        watch.keep(100.0, &first, stats(3), 0.1);
        watch.keep(101.0, &leak(5), stats(5), 0.1);
        let grown = grew(&watch.window(99.0, 101.0), &mut |frames| format!("{frames:x?}"));
        assert_eq!(grown.len(), 1, "the IO wait went away, it did not grow");
        assert_eq!((grown[0].before, grown[0].after, grown[0].state.as_str()), (2, 5, "chan receive"));
        assert_eq!(grown[0].stack, "[40]");
    }
}
