//! What the stages below a bundle report about it: why it was written, the probes, the target,
//! a Go program's runtime. Filled by the stages (session, host, watcher), read by the summary.

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

/// Go-specific facts of a bundle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoStatus {
    /// False for a Go binary whose goroutines cannot be read (e.g. stripped with -ldflags=-s -w).
    pub goroutines_available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The runtime's heap profile, when the bundle tried to read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapReport>,
    /// The goroutine snapshots behind `gowait.*`: how often, how many, how much they cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutine_snapshots: Option<SnapshotReport>,
    /// The stacks whose goroutine count grew most over the window (where a leak shows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub goroutines_grew: Vec<GoroutineGrowth>,
    /// The goroutines waiting longest when the bundle was written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_waits: Vec<GoroutineWait>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotReport {
    pub every_s: f64,
    /// Snapshots in the bundle's window.
    pub snapshots: usize,
    /// Goroutines at the last snapshot, and how many of them it read (evenly, over
    /// `--goroutine-max`).
    pub goroutines: usize,
    pub read: usize,
    /// The last snapshot's cost, and the stacks it had to walk (the others had not moved).
    pub read_ms: f64,
    pub walked: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutineGrowth {
    /// Folded, root first.
    pub stack: String,
    pub before: u64,
    pub after: u64,
    /// The state most of them were in at the end.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutineWait {
    pub goid: u64,
    pub state: String,
    /// Seconds it had waited in this state, at least (as the snapshots and the runtime saw it).
    pub waiting_s: f64,
    /// Its innermost user function.
    pub function: String,
}

/// What was read of a Go program's heap profile (`heap.pb.gz`, `heap-base.pb.gz`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeapReport {
    pub available: bool,
    /// `runtime.MemProfileRate`: one sample per this many bytes allocated (0: off).
    pub rate: u64,
    pub buckets: usize,
    /// When the earlier snapshot (`heap-base.pb.gz`) was read, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_read_at: Option<f64>,
    /// Buckets that made no sense and ended the read (a garbled list).
    #[serde(skip_serializing_if = "is_zero")]
    pub garbage_buckets: u64,
    pub read_ms: f64,
    /// Why there is no heap profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub(crate) fn is_zero(n: &u64) -> bool {
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
    /// CPython interpreter files read (once per file, for every process that maps it).
    pub python_files_read: u64,
    /// Executables read for their Go runtime (once per file, for every process that runs it).
    pub go_files_read: u64,
    /// Processes' address caches dropped (names are looked up again).
    pub address_cache_resets: u64,
    /// Idle processes whose flight recorder was cut short.
    pub flight_recorder_cuts: u64,
}
