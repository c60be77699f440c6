//! `summary.json`: why the bundle was written, what was recorded, and what was lost.
//! Every field is documented in README.md ("summary.json").

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use crate::{
    cli::KernelStacks,
    collect::{
        drain::{ExitStatus, ProbeStats},
        metrics::MetricSample,
    },
    record::{
        profile::{pseudo, Profile, ProfileKind},
        Profiles,
    },
    trigger::{Crossed, Fired},
};

/// Modules that leave less of a profile than this unnamed get no note (they are still listed in
/// `naming`).
const NAMING_NOTE_SHARE: f64 = 0.001;

/// Bumped when a field changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub format_version: u32,
    pub reason: Reason,
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub kernel: String,
    pub agent_version: String,
    pub frequency_hz: u64,
    pub window: Window,
    pub cpu: CpuTotals,
    pub offcpu: OffCpuTotals,
    /// Page faults, by the class of memory they touched.
    pub faults: super::listing::FaultTotals,
    /// Every profile of the bundle: its files and totals.
    pub profiles: Vec<super::listing::ProfileListing>,
    /// Events the probes could not record (from their stats map).
    pub dropped: ProbeStats,
    pub target: TargetState,
    pub threads: Vec<Thread>,
    /// Metric samples over the window (watch mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSample>,
    /// How the target ended, when it died during the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Which memory grew over the window: resident kinds, mappings, the cgroup's accounting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::collect::memory::MemoryReport>,
    /// Go programs: whether goroutines could be read, and the dump's total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<GoStatus>,
    /// Rule bundles: the stacks whose share of on-CPU samples grew most after the trigger.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regressed_stacks: Vec<Regression>,
    /// What the kernel offered the probes and which probes it did not take.
    pub probes: ProbeReport,
    /// Per recorded profile (`cpu`, `offcpu`, `faults`): the share whose frames are all named, and which modules
    /// left frames unnamed and why.
    pub naming: BTreeMap<&'static str, crate::record::naming::Naming>,
    /// Facts a reader needs to interpret the numbers (e.g. the target exited early).
    pub notes: Vec<String>,
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

#[derive(Debug, Serialize)]
pub struct Reason {
    /// `rule` (a rule fired), `manual` (SIGUSR1), `exit` (the target died), `record` (--duration).
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
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Window {
    /// Unix seconds.
    pub start: f64,
    /// When the rule fired, SIGUSR1 came or the target died (absent in record mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<f64>,
    pub end: f64,
    pub duration_s: f64,
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

fn is_zero(n: &u64) -> bool {
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

#[derive(Debug, Serialize)]
pub struct CpuTotals {
    pub samples: u64,
    /// samples / frequency: the CPU time the samples stand for.
    pub cpu_seconds: f64,
    pub distinct_stacks: usize,
}

#[derive(Debug, Serialize)]
pub struct OffCpuTotals {
    pub total_us: u64,
    /// Of which the threads were runnable (waiting for a CPU), not blocked.
    pub runnable_us: u64,
    /// Switch-outs whose time was counted.
    pub blocks: u64,
    pub distinct_stacks: usize,
    /// How kernel stacks were taken: `per-user-stack` (walked once per user stack per drain
    /// interval and reused for later blocks there) or `every-switch`.
    pub kernel_stacks: KernelStacks,
}

#[derive(Debug, Serialize)]
pub struct TargetState {
    /// The target exited before the window closed; the bundle holds what was recorded.
    pub exited: bool,
    /// Watch bundles: the CPU the process may use, which the `cpu` metric is a percentage of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_capacity: Option<crate::collect::capacity::CpuCapacity>,
    /// Watch bundles: the selector, the instance, and its restarts.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watcher::TargetInfo>,
}

#[derive(Debug, Serialize)]
pub struct Thread {
    pub tid: u32,
    pub name: String,
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// What a summary is made from. Times are Unix seconds.
pub struct Facts<'a> {
    pub reason: Reason,
    pub pid: u32,
    pub comm: &'a str,
    pub exe: String,
    pub frequency_hz: u64,
    /// 0: the page-fault probe was off.
    pub fault_period: u64,
    pub offcpu_kernel_stacks: KernelStacks,
    pub start: f64,
    pub trigger: Option<f64>,
    pub end: f64,
    pub profiles: &'a Profiles,
    pub threads: &'a BTreeMap<u32, Arc<str>>,
    pub dropped: ProbeStats,
    pub exited: bool,
    pub exit: Option<ExitStatus>,
    pub metrics: Vec<MetricSample>,
    pub regressed: Vec<Regression>,
    pub memory: Option<crate::collect::memory::MemoryReport>,
    pub go: Option<GoStatus>,
    pub probes: ProbeReport,
    pub cpu_capacity: Option<crate::collect::capacity::CpuCapacity>,
    pub target_info: Option<crate::watcher::TargetInfo>,
}

pub fn build(f: Facts<'_>) -> Summary {
    let (start, end) = (f.start, f.end);
    let (cpu, offcpu) = (f.profiles.cpu().total(), f.profiles.offcpu().total());
    let mut notes = Vec::new();
    if f.exited {
        notes.push("the target exited before the window closed; the bundle holds what was recorded until then".into());
    }
    let d = &f.dropped;
    let lost = d.cpu_user_stack_errors
        + d.cpu_kernel_stack_errors
        + d.offcpu_user_stack_errors
        + d.offcpu_kernel_stack_errors
        + d.fault_user_stack_errors
        + d.fault_kernel_stack_errors;
    if lost > 0 {
        notes.push(format!(
            "{lost} stacks could not be recorded (stack-map collisions or a full map); raise --stack-slots"
        ));
    }
    let full = d.cpu_counts_full + d.offcpu_start_full + d.offcpu_totals_full + d.fault_counts_full;
    if full > 0 {
        notes.push(format!("{full} events were lost to full maps; raise --count-slots or --thread-slots"));
    }
    let naming: BTreeMap<&'static str, crate::record::naming::Naming> = ProfileKind::RECORDED
        .into_iter()
        .filter_map(|kind| Some((kind.info().stem, crate::record::naming::naming(f.profiles.get(kind)?)?)))
        .collect();
    for (kind, n) in &naming {
        for m in n.unnamed_modules.iter().filter(|m| m.share >= NAMING_NOTE_SHARE) {
            notes.push(format!(
                "{:.1}% of the {kind} profile has frames in {} that could not be named: {}",
                m.share * 100.0,
                m.module,
                m.why
            ));
        }
    }
    notes.extend(super::notes::unwind_notes(&f.probes, d));
    notes.extend(super::notes::heap_notes(f.go.as_ref().and_then(|g| g.heap.as_ref())));
    for d in &f.probes.degraded {
        notes.push(format!(
            "the kernel did not take the {} probe, so this bundle lacks {} ({})",
            d.probe, d.lost, d.why
        ));
    }
    Summary {
        format_version: FORMAT_VERSION,
        reason: f.reason,
        pid: f.pid,
        comm: f.comm.into(),
        exe: f.exe,
        kernel: kernel_release(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        frequency_hz: f.frequency_hz,
        window: Window { start, trigger: f.trigger, end, duration_s: end - start },
        cpu: CpuTotals {
            samples: cpu.count,
            cpu_seconds: cpu.count as f64 / f.frequency_hz as f64,
            distinct_stacks: f.profiles.cpu().samples.len(),
        },
        offcpu: OffCpuTotals {
            total_us: offcpu.nanos / 1000,
            runnable_us: runnable_us(f.profiles.offcpu()),
            blocks: offcpu.count,
            distinct_stacks: f.profiles.offcpu().samples.len(),
            kernel_stacks: f.offcpu_kernel_stacks,
        },
        faults: super::listing::FaultTotals::of(
            f.profiles.get(ProfileKind::Faults).filter(|_| f.fault_period > 0),
            f.fault_period,
        ),
        profiles: super::listing::listing(f.profiles),
        dropped: f.dropped,
        target: TargetState { exited: f.exited, cpu_capacity: f.cpu_capacity, watch: f.target_info },
        threads: f.threads.iter().map(|(&tid, name)| Thread { tid, name: name.to_string() }).collect(),
        metrics: f.metrics,
        exit: f.exit,
        regressed_stacks: f.regressed,
        memory: f.memory,
        go: f.go,
        probes: f.probes,
        naming,
        notes,
    }
}

/// Off-CPU time of samples whose leaf is the runnable pseudo frame, in microseconds.
fn runnable_us(offcpu: &Profile) -> u64 {
    let is_runnable = |i: u32| {
        let loc = &offcpu.locations[i as usize];
        loc.address == 0 && loc.frames.first().is_some_and(|f| &*f.function == pseudo::RUNNABLE)
    };
    offcpu
        .samples
        .iter()
        .filter(|(k, _)| k.stack.first().is_some_and(|&i| is_runnable(i)))
        .map(|(_, v)| v.nanos / 1000)
        .sum()
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
