//! Rules: `METRIC:min=X,diff=Y%,abs=Z[,for=D]`, with holmes's meaning. A rule matches when the
//! value is at least `min` and either `diff` percent over the rolling mean, or at least `abs`;
//! with `for=D` (`3m`, `30s`) it fires only once it has matched for that long.
//!
//! Units: `cpu` in percent of the process's CPU capacity (`80%` or `80`: its cgroup quota,
//! cpuset or affinity, or the online CPUs); `rss` in bytes (`512MiB`, `2GiB`) or
//! percent of the effective memory limit (`80%`); `threads` as a count; `fds` as a count or
//! percent of the process's open-files limit. `diff=off` or `abs=off` disables that test.
//! Keys left out keep the metric's default.

use std::fmt;

use crate::collect::metrics::{Limits, Metric, RuntimeMetric};

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("invalid rule '{text}': {why} (write it like cpu:min=10%,diff=25%,abs=80%)")]
pub struct RuleError {
    text: String,
    why: String,
}

/// A threshold, absolute or relative to a limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Value(f64),
    /// Percent of the memory limit (rss) or open-files limit (fds).
    PercentOfLimit(f64),
}

impl Threshold {
    /// The threshold in the metric's own unit, if its limit is known.
    pub fn resolve(self, metric: Metric, limits: &Limits) -> Option<f64> {
        match self {
            Threshold::Value(v) => Some(v),
            Threshold::PercentOfLimit(p) => match metric {
                Metric::Rss => Some(p / 100.0 * limits.memory_bytes as f64),
                Metric::Fds => limits.open_files.map(|l| p / 100.0 * l as f64),
                Metric::Cpu | Metric::Threads | Metric::LockWait | Metric::Runtime(_) => Some(p),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub metric: Metric,
    pub min: Threshold,
    /// Percent over the rolling mean; None: off.
    pub diff_percent: Option<f64>,
    /// High-water mark; None: off.
    pub abs: Option<Threshold>,
    /// Seconds the rule must match before it fires (0: at once).
    pub for_s: f64,
}

impl Rule {
    /// The default rule of each metric, like holmes's: the cpu rule catches a service idling
    /// at a few percent of a core that jumps to a full core.
    pub fn default_for(metric: Metric) -> Rule {
        let (min, diff, abs) = match metric {
            Metric::Cpu => (Threshold::Value(10.0), 25.0, Threshold::Value(80.0)),
            Metric::Rss => (Threshold::PercentOfLimit(30.0), 25.0, Threshold::PercentOfLimit(80.0)),
            Metric::Threads => (Threshold::Value(50.0), 50.0, Threshold::Value(1000.0)),
            Metric::Fds => (Threshold::Value(64.0), 50.0, Threshold::PercentOfLimit(80.0)),
            // Half a thread's time waiting on locks, doubled; or two threads' worth.
            Metric::LockWait => (Threshold::Value(0.5), 100.0, Threshold::Value(2.0)),
            // The runtime's own (Go's goroutines: holmes's).
            Metric::Runtime(m) => (Threshold::Value(m.default.0), m.default.1, Threshold::Value(m.default.2)),
        };
        Rule { metric, min, diff_percent: Some(diff), abs: Some(abs), for_s: 0.0 }
    }

    /// Every metric's default rule, the runtimes' metrics `runtime` included.
    pub fn defaults(runtime: &[&'static RuntimeMetric]) -> Vec<Rule> {
        let runtime = runtime.iter().map(|&m| Metric::Runtime(m));
        // lock_wait has a rule only when asked (`--rule lock_wait`): an idle pool's workers wait
        // on a condition variable all the time, and that is no incident.
        let every = Metric::ALL.into_iter().filter(|m| *m != Metric::LockWait);
        every.chain(runtime).map(Rule::default_for).collect()
    }

    /// Parses a rule, or `METRIC:off`, which turns that metric's rule off (None); the metric is
    /// one every process has or one of `runtime`'s.
    pub fn parse_spec(text: &str, runtime: &[&'static RuntimeMetric]) -> Result<(Metric, Option<Rule>), RuleError> {
        if let Some((name, "off")) = text.split_once(':').map(|(n, s)| (n.trim(), s.trim())) {
            let rule = Rule::parse(name, runtime)?;
            return Ok((rule.metric, None));
        }
        Rule::parse(text, runtime).map(|r| (r.metric, Some(r)))
    }

    /// Parses `METRIC:key=value,...`; keys not given keep the metric's default.
    pub fn parse(text: &str, runtime: &[&'static RuntimeMetric]) -> Result<Rule, RuleError> {
        let err = |why: String| RuleError { text: text.to_string(), why };
        let (name, settings) = text.split_once(':').unwrap_or((text, ""));
        let metric = Metric::from_name(name.trim(), runtime).ok_or_else(|| {
            let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).chain(runtime.iter().map(|m| m.name)).collect();
            err(format!("unknown metric '{name}', expected one of {}", names.join(", ")))
        })?;
        let mut rule = Rule::default_for(metric);
        for setting in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = setting.split_once('=').ok_or_else(|| err(format!("'{setting}' is not key=value")))?;
            let value = value.trim();
            match key.trim() {
                "min" => rule.min = parse_threshold(metric, value).map_err(err)?,
                "abs" if value == "off" => rule.abs = None,
                "abs" => rule.abs = Some(parse_threshold(metric, value).map_err(err)?),
                "diff" if value == "off" => rule.diff_percent = None,
                "diff" => {
                    let number = value.strip_suffix('%').unwrap_or(value).trim();
                    let diff: f64 = number.parse().map_err(|_| err(format!("diff '{value}' is not a percentage")))?;
                    if !(diff > 0.0 && diff.is_finite()) {
                        return Err(err(format!("diff '{value}' must be above 0%")));
                    }
                    rule.diff_percent = Some(diff);
                }
                "for" => rule.for_s = crate::units::parse_duration(value).map_err(err)?.as_secs_f64(),
                other => return Err(err(format!("unknown key '{other}', expected min, diff, abs or for"))),
            }
        }
        Ok(rule)
    }
}

fn parse_threshold(metric: Metric, text: &str) -> Result<Threshold, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("'{text}' is not a number with a unit"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("'{text}' must not be negative"));
    }
    let unit = unit.trim();
    let bytes = |shift: u32| Ok(Threshold::Value(value * (1u64 << shift) as f64));
    match (metric, unit) {
        (Metric::Cpu, "" | "%") => Ok(Threshold::Value(value)),
        (Metric::Rss | Metric::Fds, "%") => Ok(Threshold::PercentOfLimit(value)),
        (Metric::Rss, "" | "B") => bytes(0),
        (Metric::Rss, "KiB" | "K") => bytes(10),
        (Metric::Rss, "MiB" | "M") => bytes(20),
        (Metric::Rss, "GiB" | "G") => bytes(30),
        (Metric::Rss, "TiB" | "T") => bytes(40),
        (Metric::Threads | Metric::Fds | Metric::LockWait | Metric::Runtime(_), "") => Ok(Threshold::Value(value)),
        (m, u) => Err(format!("unit '{u}' does not fit metric {}", m.name())),
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Value(v) => write!(f, "{v}"),
            Threshold::PercentOfLimit(p) => write!(f, "{p}%"),
        }
    }
}

impl fmt::Display for Rule {
    /// The rule in its own syntax, with every key spelled out (rss and cpu values in their units).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |t: Threshold| match (self.metric, t) {
            (Metric::Cpu, Threshold::Value(v)) => format!("{v}%"),
            (Metric::Rss, Threshold::Value(v)) => format!("{}MiB", v / (1u64 << 20) as f64),
            _ => t.to_string(),
        };
        write!(f, "{}:min={}", self.metric.name(), show(self.min))?;
        match self.diff_percent {
            Some(d) => write!(f, ",diff={d}%")?,
            None => write!(f, ",diff=off")?,
        }
        match self.abs {
            Some(a) => write!(f, ",abs={}", show(a))?,
            None => write!(f, ",abs=off")?,
        }
        if self.for_s > 0.0 {
            let d = std::time::Duration::from_millis((self.for_s * 1000.0).round() as u64);
            write!(f, ",for={}", humantime::format_duration(d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::capacity::CpuCapacity;

    /// A runtime's metric, as Go's goroutines.
    static WIDGETS: RuntimeMetric =
        RuntimeMetric { name: "widgets", unit: "widgets", help: "", default: (3000.0, 20.0, 200_000.0) };
    const RUNTIME: &[&RuntimeMetric] = &[&WIDGETS];

    #[test]
    fn parses_rules_with_units() {
        let cases: &[(&str, Rule)] = &[
            (
                "cpu:min=10%,diff=25%,abs=80%",
                Rule {
                    metric: Metric::Cpu,
                    min: Threshold::Value(10.0),
                    diff_percent: Some(25.0),
                    abs: Some(Threshold::Value(80.0)),
                    for_s: 0.0,
                },
            ),
            (
                "rss:min=100MiB,diff=30,abs=90%",
                Rule {
                    metric: Metric::Rss,
                    min: Threshold::Value(104_857_600.0),
                    diff_percent: Some(30.0),
                    abs: Some(Threshold::PercentOfLimit(90.0)),
                    for_s: 0.0,
                },
            ),
            ("threads:abs=off", Rule { abs: None, ..Rule::default_for(Metric::Threads) }),
            (
                "fds: min = 10 , diff = off",
                Rule { min: Threshold::Value(10.0), diff_percent: None, ..Rule::default_for(Metric::Fds) },
            ),
            (
                "rss:abs=1.5GiB",
                Rule { abs: Some(Threshold::Value(1.5 * (1u64 << 30) as f64)), ..Rule::default_for(Metric::Rss) },
            ),
            ("cpu", Rule::default_for(Metric::Cpu)),
            (
                "cpu:for=3m,abs=50%",
                Rule { for_s: 180.0, abs: Some(Threshold::Value(50.0)), ..Rule::default_for(Metric::Cpu) },
            ),
            (
                "widgets:min=500,abs=3000",
                Rule {
                    min: Threshold::Value(500.0),
                    diff_percent: Some(20.0),
                    abs: Some(Threshold::Value(3000.0)),
                    ..Rule::default_for(Metric::Runtime(&WIDGETS))
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&Rule::parse(text, RUNTIME).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn rejects_bad_rules() {
        for (text, why) in [
            ("disk:min=1", "unknown metric"),
            ("cpu:min", "not key=value"),
            ("cpu:max=3", "unknown key"),
            ("cpu:min=abc", "not a number"),
            ("threads:min=10MiB", "does not fit"),
            ("cpu:diff=0%", "above 0%"),
            ("rss:min=-5MiB", "not a number"),
            ("cpu:for=soon", "not a duration"),
        ] {
            let err = Rule::parse(text, RUNTIME).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn a_metric_can_be_turned_off() {
        assert_eq!(Rule::parse_spec("fds:off", RUNTIME).unwrap(), (Metric::Fds, None));
        assert_eq!(Rule::parse_spec("fds:min=3", RUNTIME).unwrap().1.unwrap().min, Threshold::Value(3.0));
        assert!(Rule::parse_spec("disk:off", RUNTIME).is_err());
    }

    #[test]
    fn displays_in_its_own_syntax() {
        for text in [
            "cpu:min=10%,diff=25%,abs=80%",
            "rss:min=256MiB,diff=off,abs=80%",
            "threads:min=50,diff=50%,abs=off",
            "cpu:min=10%,diff=25%,abs=50%,for=30s",
        ] {
            assert_eq!(Rule::parse(text, RUNTIME).unwrap().to_string(), text);
        }
    }

    #[test]
    fn resolves_percent_of_limits() {
        let limits = Limits { memory_bytes: 1000, open_files: Some(200), cpu: CpuCapacity::ONE_CORE };
        assert_eq!(Threshold::PercentOfLimit(50.0).resolve(Metric::Rss, &limits), Some(500.0));
        assert_eq!(Threshold::PercentOfLimit(50.0).resolve(Metric::Fds, &limits), Some(100.0));
        let unknown = Limits { open_files: None, ..limits };
        assert_eq!(Threshold::PercentOfLimit(50.0).resolve(Metric::Fds, &unknown), None);
    }
}
