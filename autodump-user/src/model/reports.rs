//! What the stages below a bundle report about it: why it was written, the probes, the target,
//! the process's runtimes. Filled by the stages (session, host, watcher), read by the summary.

use serde::Serialize;

use crate::{
    collect::process::Instance,
    trigger::{Crossed, Fired},
};

#[derive(Clone, Debug, Serialize)]
pub struct Reason {
    /// `rule` (a rule fired), `manual` (SIGUSR1), `exit` (the target died), `record`
    /// (--duration), `alert` (an Alertmanager alert matched `--alert-trigger`).
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `abs` (the high-water mark) or `diff` (over the rolling mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crossed: Option<Crossed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Unix seconds: when the rule fired (the window's `trigger` is when its condition began).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<f64>,
    /// How long the condition had held when it fired (a `for=` rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_s: Option<f64>,
    /// Alert bundles: the alert that asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertReason>,
}

/// The Alertmanager alert an `alert` bundle was written for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertReason {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// When the alert began firing (RFC 3339, as Alertmanager gives it).
    pub starts_at: String,
    pub fingerprint: String,
}

impl Reason {
    pub fn of_kind(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            metric: None,
            value: None,
            baseline_mean: None,
            threshold: None,
            crossed: None,
            rule: None,
            fired_at: None,
            held_s: None,
            alert: None,
        }
    }

    pub fn from_fired(f: &Fired) -> Self {
        Self {
            kind: "rule".into(),
            metric: Some(f.metric.name().into()),
            value: Some(f.value),
            baseline_mean: f.baseline_mean,
            threshold: Some(f.threshold),
            crossed: Some(f.crossed),
            rule: Some(f.rule.clone()),
            fired_at: Some(f.t),
            held_s: Some(f.t - f.since),
            alert: None,
        }
    }
}

/// The probes as loaded on this kernel.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProbeReport {
    /// Choices made from the kernel's BTF (see `probes/features.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_features: Option<crate::probes::features::KernelFeatures>,
    /// Probes not attached, and what the bundle lacks because of it.
    pub degraded: Vec<crate::probes::Degradation>,
    /// How user stacks were walked, and the unwind tables in the kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwinding: Option<UnwindReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnwindReport {
    #[serde(flatten)]
    pub unwinding: crate::probes::Unwinding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<crate::unwind::tables::TableStats>,
}

pub fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stack whose share of on-CPU samples grew after the trigger.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Regression {
    /// Folded: `thread;root;...;leaf`.
    pub stack: String,
    /// Share of on-CPU samples before the trigger, 0 to 1.
    pub before_share: f64,
    pub after_share: f64,
}

/// What summaries say about the watched target beyond the process itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetInfo {
    /// The target's name (the config file's `name`, else its selector).
    pub name: String,
    /// What the agent was asked to watch (`pid:N`, `exe:PATH`, `cgroup:PATH`, ...).
    pub selector: String,
    pub instance: Instance,
    /// New instances that followed an earlier one's end, in the last hour.
    pub restarts_last_hour: usize,
    /// Instances that ended in the last hour (an exit bundle counts its own).
    pub exits_last_hour: usize,
}

/// The agent's memory budget (`--memory-budget`) and what keeping it took.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BudgetReport {
    pub budget_bytes: u64,
    /// The agent's heap at the last check.
    pub heap_bytes: u64,
    /// Checks that found the agent over its budget.
    pub over_budget_checks: u64,
    /// The shared file caches: files cached, their size, loads and evictions.
    pub file_cache: crate::symbolize::files::FileCacheStats,
    /// Files read for their runtime (`python_files_read`, `go_files_read`): each once, for
    /// every process that maps it.
    #[serde(flatten)]
    pub files_read: std::collections::BTreeMap<&'static str, u64>,
    /// Processes' address caches dropped (names are looked up again).
    pub address_cache_resets: u64,
    /// Idle processes whose flight recorder was cut short.
    pub flight_recorder_cuts: u64,
}

/// What a runtime says in a bundle's summary and page (see `runtimes::seam`).
pub struct RuntimeReport {
    /// Its key in `summary.json` (`go`, `python`, `jit`), and what it says there.
    pub key: &'static str,
    pub section: serde_json::Value,
    pub notes: Vec<String>,
    /// Where the program waits, when the runtime knows better than its threads' off-CPU time
    /// (Go's goroutine waits): the verdict says this instead.
    pub wait: Option<String>,
    /// Threads the runtime parked idle (its `idle_root` frame at their off-CPU stacks' root):
    /// their off-CPU time, under its key in the summary's `offcpu`.
    pub idle: Option<IdleThreads>,
    /// A paragraph of `index.html` (HTML), and where: after the graph of this kind, or at the top.
    pub html: Option<(Option<crate::record::profile::ProfileKind>, String)>,
}

pub struct IdleThreads {
    /// The summary's key (`idle_go_threads_us`), and the frame that marks them.
    pub key: &'static str,
    pub frame: &'static str,
}

impl RuntimeReport {
    pub fn new(key: &'static str, section: impl Serialize) -> Self {
        let section = serde_json::to_value(section).unwrap_or_default();
        Self { key, section, notes: Vec::new(), wait: None, idle: None, html: None }
    }
}
