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
    /// Outside triggers (alerts) by name: when each last gave a bundle.
    last_admitted: HashMap<String, f64>,
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
            last_admitted: HashMap::new(),
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

    /// An outside trigger named `key` (an alert) at `t`: held back, as rules are, by a cooldown
    /// since it last gave a bundle and by the hourly cap all triggers share; else counted.
    pub fn admit(&mut self, key: &str, t: f64) -> Result<(), &'static str> {
        if self.last_admitted.get(key).is_some_and(|&last| t - last < self.settings.cooldown_s) {
            return Err("cooldown");
        }
        while self.fired_at.front().is_some_and(|&at| at <= t - 3600.0) {
            self.fired_at.pop_front();
        }
        if self.fired_at.len() >= self.settings.max_per_hour as usize {
            return Err("hourly bundle cap");
        }
        self.last_admitted.insert(key.to_string(), t);
        self.fired_at.push_back(t);
        Ok(())
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
mod tests;
