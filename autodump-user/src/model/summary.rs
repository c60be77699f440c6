//! `summary.json`: why the bundle was written, what was recorded, and what was lost.
//! Every field is documented in README.md ("summary.json").

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use crate::{
    collect::{drain::ProbeStats, metrics::MetricSample},
    probes::{targets::ExitStatus, KernelStacks},
    record::{
        profile::{pseudo, Profile, ProfileKind},
        Profiles,
    },
};

use super::reports::{BudgetReport, ProbeReport, Reason, Regression, RuntimeReport, TargetInfo};

/// Modules that leave less of a profile than this unnamed get no note (they are still listed in
/// `naming`).
const NAMING_NOTE_SHARE: f64 = 0.001;

/// Bumped when a field changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub format_version: u32,
    /// One line: what fired, where the CPU went, what waited, what grew (see `verdict`).
    pub verdict: String,
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
    /// What threads waited on and who released them (from the wake-up probe), heaviest first;
    /// `locks.txt` says the same with stacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<super::locks::LockReport>,
    /// Threads each waiting for a mutex the next one holds, when the window closed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deadlocks: Vec<super::hangs::Deadlock>,
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
    /// The process's runtimes, each under its key (`go`, `python`, `jit`): what they say.
    #[serde(flatten)]
    pub runtimes: BTreeMap<&'static str, serde_json::Value>,
    /// Rule bundles: the stacks whose share of on-CPU samples grew most after the trigger.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regressed_stacks: Vec<Regression>,
    /// What the kernel offered the probes and which probes it did not take.
    pub probes: ProbeReport,
    /// Per recorded profile (`cpu`, `offcpu`, `faults`): the share whose frames are all named, and which modules
    /// left frames unnamed and why.
    pub naming: BTreeMap<&'static str, crate::record::naming::Naming>,
    /// The agent's own memory: its budget and what keeping it took.
    pub agent_memory: BudgetReport,
    /// Facts a reader needs to interpret the numbers (e.g. the target exited early).
    pub notes: Vec<String>,
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
    /// Of which threads a runtime parked with nothing to run (`idle_go_threads_us`: Go's
    /// scheduler threads, under `[go: idle scheduler thread]`): not where the program waits.
    #[serde(flatten)]
    pub idle_us: BTreeMap<&'static str, u64>,
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
    pub watch: Option<TargetInfo>,
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
    /// What the process's runtimes say (their `html` is the page's, not the summary's).
    pub runtimes: Vec<RuntimeReport>,
    pub probes: ProbeReport,
    pub cpu_capacity: Option<crate::collect::capacity::CpuCapacity>,
    pub target_info: Option<TargetInfo>,
    pub budget: BudgetReport,
    /// The process's flight recorder was cut before this (Unix seconds) to keep the budget.
    pub shed_before: Option<f64>,
    /// Deadlocks among the threads blocked when the window closed.
    pub deadlocks: Vec<super::hangs::Deadlock>,
    /// Locks the process's runtimes know by name (CPython's GIL).
    pub named_locks: Vec<super::locks::NamedLock>,
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
        + d.fault_kernel_stack_errors
        + d.waker_user_stack_errors
        + d.waker_kernel_stack_errors;
    if lost > 0 {
        notes.push(format!(
            "{lost} stacks could not be recorded (stack-map collisions or a full map); raise --stack-slots"
        ));
    }
    let full =
        d.cpu_counts_full + d.offcpu_start_full + d.offcpu_totals_full + d.fault_counts_full + d.wakeup_totals_full;
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
    notes.extend(f.runtimes.iter().flat_map(|r| r.notes.iter().cloned()));
    notes.extend(super::notes::budget_notes(&f.budget, f.shed_before.filter(|&t| t > start)));
    for d in &f.probes.degraded {
        notes.push(format!(
            "the kernel did not take the {} probe, so this bundle lacks {} ({})",
            d.probe, d.lost, d.why
        ));
    }
    let idle: Vec<(&'static str, &'static str)> =
        f.runtimes.iter().filter_map(|r| r.idle.as_ref()).map(|i| (i.key, i.frame)).collect();
    let wakeups = f.profiles.get(ProfileKind::WAKEUPS);
    let locks = wakeups.map(|w| super::locks::locks(w, &f.named_locks, end - start)).unwrap_or_default();
    let verdict = super::verdict::verdict(&super::verdict::VerdictFacts {
        lock: locks.first(),
        deadlock: f.deadlocks.first(),
        reason: &f.reason,
        capacity: f.cpu_capacity.as_ref(),
        exit: f.exit.as_ref(),
        cpu: f.profiles.cpu(),
        offcpu: f.profiles.offcpu(),
        wait: f.runtimes.iter().find_map(|r| r.wait.clone()),
        idle_frames: idle.iter().map(|(_, frame)| *frame).collect(),
        memory: f.memory.as_ref(),
        duration_s: end - start,
    });
    Summary {
        format_version: FORMAT_VERSION,
        verdict,
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
            runnable_us: rooted_us(f.profiles.offcpu(), pseudo::RUNNABLE, true),
            idle_us: idle
                .iter()
                .map(|&(key, frame)| (key, rooted_us(f.profiles.offcpu(), frame, false)))
                .filter(|&(_, us)| us > 0)
                .collect(),
            blocks: offcpu.count,
            distinct_stacks: f.profiles.offcpu().samples.len(),
            kernel_stacks: f.offcpu_kernel_stacks,
        },
        locks,
        deadlocks: f.deadlocks.clone(),
        faults: super::listing::FaultTotals::of(
            f.profiles.get(ProfileKind::FAULTS).filter(|_| f.fault_period > 0),
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
        runtimes: f.runtimes.into_iter().map(|r| (r.key, r.section)).collect(),
        probes: f.probes,
        naming,
        agent_memory: f.budget,
        notes,
    }
}

/// Off-CPU time, in microseconds, of the stacks whose leaf (or root) is the pseudo frame `name`.
fn rooted_us(offcpu: &Profile, name: &str, leaf: bool) -> u64 {
    let is = |i: &u32| {
        let loc = &offcpu.locations[*i as usize];
        loc.address == 0 && loc.frames.first().is_some_and(|f| &*f.function == name)
    };
    offcpu
        .samples
        .iter()
        .filter(|(k, _)| if leaf { k.stack.first().is_some_and(is) } else { k.stack.last().is_some_and(is) })
        .map(|(_, v)| v.nanos / 1000)
        .sum()
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
