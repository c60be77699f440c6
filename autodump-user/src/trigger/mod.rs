//! The trigger: pure functions of (metric samples, rolling baseline, rules) that decide when a
//! process misbehaves. No I/O here, so every decision is unit-tested.

pub mod rule;

use std::collections::{BTreeMap, HashMap, VecDeque};

use rule::Rule;
use serde::Serialize;

use crate::collect::metrics::{Limits, Metric, MetricSample};

/// Timing of the rules, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// No rule fires until the agent has watched this long.
    pub warmup_s: f64,
    /// The rolling mean covers this much of the recent past.
    pub baseline_s: f64,
    /// After a rule fires, the same metric does not fire again for this long.
    pub cooldown_s: f64,
    /// At most this many bundles per rolling hour, all metrics together.
    pub max_per_hour: u32,
    /// A rule that fired re-arms once its metric is under this fraction of the threshold it
    /// crossed (hysteresis: a value hovering at the threshold is one incident, not many).
    pub rearm_fraction: f64,
}

/// Which test a value passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Crossed {
    /// `diff` percent over the rolling mean.
    Diff,
    /// The high-water mark `abs`.
    Abs,
}

/// A rule that fired.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    pub metric: Metric,
    /// When it fired.
    pub t: f64,
    /// When its condition began to hold (`t`, unless the rule has `for=`).
    pub since: f64,
    pub value: f64,
    pub baseline_mean: Option<f64>,
    /// The threshold the value reached (abs, or mean × (1 + diff)).
    pub threshold: f64,
    pub crossed: Crossed,
    /// The rule in its own syntax.
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Quiet,
    Fired(Fired),
    /// A rule matched but a cooldown or the hourly cap held it back.
    Suppressed(Fired, &'static str),
}

/// Recent values of one metric.
#[derive(Debug, Default)]
pub struct Baseline {
    samples: VecDeque<(f64, f64)>,
}

impl Baseline {
    pub fn mean(&self) -> Option<f64> {
        (!self.samples.is_empty()).then(|| self.samples.iter().map(|s| s.1).sum::<f64>() / self.samples.len() as f64)
    }

    fn push(&mut self, t: f64, value: f64, window_s: f64) {
        self.samples.push_back((t, value));
        while self.samples.front().is_some_and(|&(at, _)| at < t - window_s) {
            self.samples.pop_front();
        }
    }
}

/// Where one rule stands (README, "When a rule fires").
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum State {
    /// Waiting for its condition.
    #[default]
    Armed,
    /// Its condition has held since `since`, measured against the mean as it was then; it fires
    /// once that has lasted `for`.
    Holding { since: f64, mean: Option<f64> },
    /// It fired; it re-arms once the metric is under `rearm_below`.
    Fired { rearm_below: f64 },
}

pub struct Trigger {
    rules: BTreeMap<Metric, Rule>,
    settings: Settings,
    baselines: HashMap<Metric, Baseline>,
    states: HashMap<Metric, State>,
    last_fired: HashMap<Metric, f64>,
    fired_at: VecDeque<f64>,
    started: Option<f64>,
}

impl Trigger {
    pub fn new(rules: BTreeMap<Metric, Rule>, settings: Settings) -> Self {
        Self {
            rules,
            settings,
            baselines: HashMap::new(),
            states: HashMap::new(),
            last_fired: HashMap::new(),
            fired_at: VecDeque::new(),
            started: None,
        }
    }

    /// The rolling mean of `metric` before its latest sample.
    pub fn baseline_mean(&self, metric: Metric) -> Option<f64> {
        self.baselines.get(&metric).and_then(Baseline::mean)
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    pub fn state(&self, metric: Metric) -> State {
        self.states.get(&metric).copied().unwrap_or_default()
    }

    /// The longest `for=` of the rules: how much further back than the lookback a bundle reaches.
    pub fn longest_hold_s(&self) -> f64 {
        self.rules.values().map(|r| r.for_s).fold(0.0, f64::max)
    }

    /// Adds a sample to the baselines and moves each rule's state; says whether a rule fires on
    /// it. At most one rule fires per sample (the first in metric order).
    pub fn observe(&mut self, sample: &MetricSample, limits: &Limits) -> Verdict {
        let t = sample.t;
        let warm = t - *self.started.get_or_insert(t) >= self.settings.warmup_s;
        let mut verdict = Verdict::Quiet;
        for (metric, rule) in &self.rules {
            let Some(value) = sample.get(*metric) else { continue };
            let baseline = self.baselines.entry(*metric).or_default();
            let mean = baseline.mean();
            baseline.push(t, value, self.settings.baseline_s);
            let state = self.states.entry(*metric).or_default();
            let (since, mean) = match *state {
                State::Fired { rearm_below } => {
                    if value < rearm_below {
                        tracing::info!(metric = metric.name(), value, "rule re-armed: back under its threshold");
                        *state = State::Armed;
                    }
                    continue;
                }
                State::Holding { since, mean } => (since, mean),
                State::Armed => (t, mean),
            };
            let matched = if warm { matches(rule, value, mean, limits) } else { None };
            let Some(fired) = matched else {
                *state = State::Armed;
                continue;
            };
            *state = State::Holding { since, mean };
            if t - since < rule.for_s || matches!(verdict, Verdict::Fired(_)) {
                continue;
            }
            let fired = Fired { t, since, ..fired };
            if self.last_fired.get(metric).is_some_and(|&last| t - last < self.settings.cooldown_s) {
                verdict = Verdict::Suppressed(fired, "cooldown");
                continue;
            }
            while self.fired_at.front().is_some_and(|&at| at <= t - 3600.0) {
                self.fired_at.pop_front();
            }
            if self.fired_at.len() >= self.settings.max_per_hour as usize {
                verdict = Verdict::Suppressed(fired, "hourly bundle cap");
                continue;
            }
            *state = State::Fired { rearm_below: fired.threshold * self.settings.rearm_fraction };
            self.last_fired.insert(*metric, t);
            self.fired_at.push_back(t);
            verdict = Verdict::Fired(fired);
        }
        verdict
    }
}

/// holmes's test: at least `min`, and at least `abs` or `diff` percent over the mean.
fn matches(rule: &Rule, value: f64, mean: Option<f64>, limits: &Limits) -> Option<Fired> {
    let min = rule.min.resolve(rule.metric, limits)?;
    if value < min {
        return None;
    }
    let abs = rule.abs.and_then(|a| a.resolve(rule.metric, limits)).filter(|&a| value >= a);
    let diff = match (rule.diff_percent, mean) {
        (Some(d), Some(m)) if m > 0.0 => Some(m * (1.0 + d / 100.0)).filter(|&th| value >= th),
        _ => None,
    };
    let (threshold, crossed) = match (abs, diff) {
        (Some(a), _) => (a, Crossed::Abs),
        (None, Some(d)) => (d, Crossed::Diff),
        (None, None) => return None,
    };
    Some(Fired {
        metric: rule.metric,
        t: 0.0,
        since: 0.0,
        value,
        baseline_mean: mean,
        threshold,
        crossed,
        rule: rule.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::capacity::CpuCapacity;

    const LIMITS: Limits = Limits { memory_bytes: 1 << 30, open_files: Some(1024), cpu: CpuCapacity::ONE_CORE };
    const SETTINGS: Settings =
        Settings { warmup_s: 5.0, baseline_s: 10.0, cooldown_s: 30.0, max_per_hour: 3, rearm_fraction: 0.9 };

    fn trigger(rules: &[&str]) -> Trigger {
        let rules = rules.iter().map(|r| Rule::parse(r).unwrap()).map(|r| (r.metric, r)).collect();
        Trigger::new(rules, SETTINGS)
    }

    fn cpu(t: f64, v: f64) -> MetricSample {
        let mut sample = MetricSample { t, cpu_percent: Some(v), ..Default::default() };
        sample.set_capacity(&CpuCapacity::ONE_CORE);
        sample
    }

    /// Feeds (t, cpu) samples; returns the times at which a rule fired.
    fn fires(trigger: &mut Trigger, samples: &[(f64, f64)]) -> Vec<f64> {
        samples
            .iter()
            .filter_map(|&(t, v)| match trigger.observe(&cpu(t, v), &LIMITS) {
                Verdict::Fired(f) => Some(f.t),
                _ => None,
            })
            .collect()
    }

    fn series(from: f64, to: f64, value: f64) -> Vec<(f64, f64)> {
        (from as usize..to as usize).map(|t| (t as f64, value)).collect()
    }

    #[test]
    fn table_of_rule_decisions() {
        // (rule, value, mean, expected)
        let cases: &[(&str, f64, Option<f64>, Option<Crossed>)] = &[
            ("cpu:min=10,diff=25,abs=80", 5.0, Some(1.0), None), // under min
            ("cpu:min=10,diff=25,abs=80", 85.0, Some(80.0), Some(Crossed::Abs)), // over the high-water mark
            ("cpu:min=10,diff=25,abs=80", 30.0, Some(20.0), Some(Crossed::Diff)), // 50% over the mean
            ("cpu:min=10,diff=25,abs=80", 24.0, Some(20.0), None), // only 20% over
            ("cpu:min=10,diff=25,abs=80", 30.0, None, None),     // no baseline yet, under abs
            ("cpu:min=10,diff=off,abs=80", 30.0, Some(1.0), None), // diff off
            ("cpu:min=10,diff=25,abs=off", 90.0, Some(85.0), None), // abs off, not 25% over
            ("rss:min=10%,diff=off,abs=50%", 600e6, Some(1.0), Some(Crossed::Abs)), // 600 MB > 50% of 1 GiB
            ("fds:min=10,diff=off,abs=80%", 900.0, None, Some(Crossed::Abs)), // 80% of 1024 open files
        ];
        for &(text, value, mean, expected) in cases {
            let rule = Rule::parse(text).unwrap();
            let got = matches(&rule, value, mean, &LIMITS).map(|f| f.crossed);
            assert_eq!(got, expected, "{text} value {value} mean {mean:?}");
        }
    }

    #[test]
    fn calm_service_jumping_to_a_full_core_fires_once() {
        let mut t = trigger(&[&Rule::default_for(Metric::Cpu).to_string()]);
        let mut samples = series(0.0, 30.0, 3.0);
        samples.extend(series(30.0, 40.0, 100.0));
        assert_eq!(fires(&mut t, &samples), vec![30.0], "fires at the jump, then cools down");
    }

    #[test]
    fn no_rule_fires_during_warmup() {
        let mut t = trigger(&["cpu:min=10,diff=25,abs=80"]);
        assert!(fires(&mut t, &[(0.0, 3.0), (1.0, 100.0), (4.0, 100.0)]).is_empty());
        assert_eq!(fires(&mut t, &[(5.0, 100.0)]), vec![5.0]);
    }

    #[test]
    fn steady_load_never_fires() {
        let mut t = trigger(&["cpu:min=10,diff=25,abs=off"]);
        let wobble: Vec<(f64, f64)> = (0..300).map(|i| (i as f64, 50.0 + (i % 7) as f64)).collect();
        assert!(fires(&mut t, &wobble).is_empty());
    }

    #[test]
    fn a_steady_high_value_is_one_incident() {
        let mut t = trigger(&["cpu:min=10,diff=off,abs=80"]);
        // Hot for an hour and a half: one bundle, not one per cooldown.
        assert_eq!(fires(&mut t, &series(0.0, 5400.0, 90.0)), vec![5.0]);
        assert_eq!(t.state(Metric::Cpu), State::Fired { rearm_below: 72.0 });
        // Hovering just under the threshold does not re-arm it (hysteresis) ...
        assert!(fires(&mut t, &series(5400.0, 5500.0, 78.0)).is_empty());
        assert!(fires(&mut t, &series(5500.0, 5510.0, 85.0)).is_empty());
        // ... going back under 90% of it does; the next crossing is a new incident.
        assert!(fires(&mut t, &series(5510.0, 5520.0, 50.0)).is_empty());
        assert_eq!(t.state(Metric::Cpu), State::Armed);
        assert_eq!(fires(&mut t, &series(5520.0, 5530.0, 85.0)), vec![5520.0]);
    }

    #[test]
    fn cooldown_and_hourly_cap_hold_back_repeats() {
        let mut t = trigger(&["cpu:min=10,diff=off,abs=80"]);
        // Bursts of 10 s every 20 s: each re-arms, but the 30 s cooldown and 3 an hour hold them.
        let bursts: Vec<(f64, f64)> =
            (0..400).map(|i| (i as f64, if (i / 10) % 2 == 1 { 90.0 } else { 20.0 })).collect();
        assert_eq!(fires(&mut t, &bursts), vec![10.0, 50.0, 90.0]);
        let verdict = t.observe(&cpu(3650.0, 20.0), &LIMITS);
        assert_eq!(verdict, Verdict::Quiet);
        let verdict = t.observe(&cpu(3700.0, 90.0), &LIMITS);
        assert!(matches!(verdict, Verdict::Fired(_)), "the hour has rolled over: {verdict:?}");
    }

    #[test]
    fn a_sustained_rule_fires_once_its_condition_has_held_long_enough() {
        let rule = "cpu:min=10,diff=off,abs=50,for=30s";
        // A 20 s burst: nothing.
        let mut t = trigger(&[rule]);
        let mut samples = series(0.0, 20.0, 5.0);
        samples.extend(series(20.0, 40.0, 90.0));
        samples.extend(series(40.0, 100.0, 5.0));
        assert!(fires(&mut t, &samples).is_empty());
        // A 40 s burst: fires 30 s in, and says when the condition began.
        let mut t = trigger(&[rule]);
        let mut samples = series(0.0, 20.0, 5.0);
        samples.extend(series(20.0, 60.0, 90.0));
        let fired: Vec<Fired> = samples
            .iter()
            .filter_map(|&(time, v)| match t.observe(&cpu(time, v), &LIMITS) {
                Verdict::Fired(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(fired.iter().map(|f| (f.since, f.t)).collect::<Vec<_>>(), vec![(20.0, 50.0)]);
        // A dip resets the clock.
        let mut t = trigger(&[rule]);
        let mut samples = series(0.0, 20.0, 90.0);
        samples.push((20.0, 5.0));
        samples.extend(series(21.0, 45.0, 90.0));
        assert!(fires(&mut t, &samples).is_empty());
    }

    #[test]
    fn cpu_is_a_share_of_capacity() {
        let mut t = trigger(&[&Rule::default_for(Metric::Cpu).to_string()]);
        let capacity = CpuCapacity { cores: 2.0, source: crate::collect::capacity::CapacitySource::OnlineCpus };
        let mut fired = Vec::new();
        for i in 0..200 {
            // Two busy threads: 150% of a core, 75% of two CPUs.
            let mut s = MetricSample { t: i as f64, cpu_percent: Some(150.0 + (i % 5) as f64), ..Default::default() };
            s.set_capacity(&capacity);
            if let Verdict::Fired(f) = t.observe(&s, &LIMITS) {
                fired.push(f.t);
            }
        }
        assert!(fired.is_empty(), "{fired:?}");
    }

    #[test]
    fn the_baseline_is_a_rolling_mean_of_earlier_samples() {
        let mut t = trigger(&["cpu:min=1,diff=50,abs=off"]);
        for (time, v) in series(0.0, 20.0, 10.0) {
            t.observe(&cpu(time, v), &LIMITS);
        }
        assert_eq!(t.baseline_mean(Metric::Cpu), Some(10.0));
        match t.observe(&cpu(20.0, 16.0), &LIMITS) {
            Verdict::Fired(f) => {
                assert_eq!((f.baseline_mean, f.threshold, f.crossed), (Some(10.0), 15.0, Crossed::Diff));
                assert_eq!(f.rule, "cpu:min=1%,diff=50%,abs=off");
            }
            other => panic!("expected a diff fire, got {other:?}"),
        }
        // Older samples leave the 10 s window.
        for (time, v) in series(21.0, 40.0, 20.0) {
            t.observe(&cpu(time, v), &LIMITS);
        }
        assert_eq!(t.baseline_mean(Metric::Cpu), Some(20.0));
    }

    #[test]
    fn missing_metrics_are_ignored() {
        let mut t = trigger(&["fds:min=1,diff=off,abs=2"]);
        assert_eq!(t.observe(&cpu(100.0, 100.0), &LIMITS), Verdict::Quiet);
    }
}
