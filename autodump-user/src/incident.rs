//! Turns what the flight recorder holds into one incident bundle: the window around a trigger,
//! its profiles, the metric charts, the diff and the summary.

use crate::{
    collect::{
        memory::RssSplit,
        metrics::{Limits, Metric, MetricSample},
    },
    host::ProbeHost,
    model::{
        regressions::{regressions, TOP_REGRESSIONS},
        reports::{AlertReason, Reason, TargetInfo},
        summary,
    },
    probes::targets::ExitStatus,
    record::{
        flight::FlightRecorder,
        profile::{Profile, ProfileKind},
    },
    session::Session,
    trigger::{Fired, Trigger},
    write::{
        self,
        chart::Series,
        diff::{DiffGraph, DiffSide, CPU_DIFF},
        Recording, Written,
    },
};

/// Why a bundle is written.
#[derive(Clone, Debug)]
pub enum Incident {
    Rule(Fired),
    Manual,
    Exit(Option<ExitStatus>),
    /// An Alertmanager alert matched `--alert-trigger`.
    Alert(AlertReason),
}

impl Incident {
    pub fn kind(&self) -> &'static str {
        match self {
            Incident::Rule(_) => "rule",
            Incident::Manual => "manual",
            Incident::Exit(_) => "exit",
            Incident::Alert(_) => "alert",
        }
    }
}

/// The bundle's window, Unix seconds: [from, to) with the trigger in between.
pub struct Span {
    pub from: f64,
    pub trigger: f64,
    pub to: f64,
}

/// What writing a bundle needs besides the flight recorder.
pub struct Context<'a> {
    pub host: &'a ProbeHost,
    pub session: &'a mut Session,
    pub flight: &'a FlightRecorder,
    pub trigger: &'a Trigger,
    pub limits: &'a Limits,
    /// Add threads blocked right now (not for exit bundles: the process is gone).
    pub include_blocked_now: bool,
    /// What the agent watches and which instance this is.
    pub target: Option<&'a TargetInfo>,
}

pub fn write(ctx: Context<'_>, incident: &Incident, span: Span, out: &std::path::Path) -> anyhow::Result<Written> {
    let (start, end) = ctx.flight.coverage(span.from, span.to).unwrap_or((span.from, span.to));
    let mut profiles = ctx.flight.profiles(span.from, span.to);
    if ctx.include_blocked_now {
        let blocked = ctx.session.blocked_now(ctx.host, start)?;
        profiles.get_mut(ProfileKind::OFF_CPU).merge(&blocked);
    }
    // A dead process's runtimes have nothing to read now (what they kept over time still tells).
    let alive = !matches!(incident, Incident::Exit(_));
    let metrics = ctx.flight.metrics(start, end);
    ctx.session.name_late_frames(&mut profiles, alive);
    let runtimes = ctx.session.runtime_bundles((start, end), alive);
    runtimes.profiles.into_iter().for_each(|p| profiles.insert(p));
    let (mut diffs, files) = (runtimes.diffs, runtimes.files);
    let (before, after): (Profile, Profile) = match incident {
        Incident::Rule(_) => (ctx.flight.cpu(span.from, span.trigger), ctx.flight.cpu(span.trigger, span.to)),
        _ => (Profile::new(ProfileKind::CPU), Profile::new(ProfileKind::CPU)),
    };
    let fired = match incident {
        Incident::Rule(f) => Some(f),
        _ => None,
    };
    let mut reason = fired.map_or_else(|| Reason::of_kind(incident.kind()), Reason::from_fired);
    if let Incident::Alert(alert) = incident {
        reason.alert = Some(alert.clone());
    }
    let mut facts = summary::Facts {
        start,
        trigger: Some(span.trigger),
        end,
        exited: matches!(incident, Incident::Exit(_)),
        exit: match incident {
            Incident::Exit(status) => *status,
            _ => None,
        },
        regressed: if fired.is_some() { regressions(&before, &after, TOP_REGRESSIONS) } else { Vec::new() },
        metrics: metrics.clone(),
        memory: Some(ctx.session.memory.report(start, end)),
        cpu_capacity: Some(ctx.limits.cpu),
        target_info: ctx.target.cloned(),
        shed_before: ctx.flight.shed_before,
        ..ctx.session.facts(ctx.host, reason, &profiles)?
    };
    let html = facts.runtimes.iter_mut().filter_map(|r| r.html.take()).collect();
    let summary = summary::build(facts);
    let charts = charts(&metrics, span.trigger, fired, ctx.trigger, ctx.limits);
    if fired.is_some() {
        diffs.insert(0, cpu_diff(before, after));
    }
    let recording = Recording { profiles: &profiles, summary, charts: Some(charts), diffs, files, html };
    Ok(write::write_bundle(out, recording)?)
}

/// A rule bundle's `cpu-diff.svg`: on-CPU after the trigger against before.
fn cpu_diff(before: Profile, after: Profile) -> DiffGraph {
    DiffGraph {
        file: "cpu-diff.svg",
        follows: ProfileKind::CPU,
        caption: "On-CPU: after the trigger against before",
        title: ("on-CPU", "after the trigger vs before"),
        style: &CPU_DIFF,
        before: DiffSide::Own(before),
        after: DiffSide::Own(after),
    }
}

/// One chart per metric that has values: its line, the mean before the trigger (the rule's own
/// baseline for the metric that fired) and its threshold.
fn charts(
    metrics: &[MetricSample],
    trigger_t: f64,
    fired: Option<&Fired>,
    trigger: &Trigger,
    limits: &Limits,
) -> Vec<Series> {
    let mut charts = metric_charts(metrics, trigger_t, fired, trigger, limits);
    // Resident memory split by kind, after the rss chart: anonymous memory is what a leak grows.
    type Part = fn(&RssSplit) -> u64;
    let splits: [(&str, Part); 2] = [("rss anon", |s| s.anon_bytes), ("rss file", |s| s.file_bytes)];
    let at = charts.iter().position(|c| c.name == Metric::Rss.name()).map_or(charts.len(), |i| i + 1);
    for (i, (name, bytes)) in splits.into_iter().enumerate() {
        let points: Vec<(f64, f64)> =
            metrics.iter().filter_map(|m| Some((m.t, bytes(m.rss_split.as_ref()?) as f64))).collect();
        if !points.is_empty() {
            let series =
                Series { name: name.into(), unit: "bytes".into(), points, baseline_mean: None, threshold: None };
            charts.insert((at + i).min(charts.len()), series);
        }
    }
    charts
}

fn metric_charts(
    metrics: &[MetricSample],
    trigger_t: f64,
    fired: Option<&Fired>,
    trigger: &Trigger,
    limits: &Limits,
) -> Vec<Series> {
    let mut runtime: Vec<Metric> = metrics.iter().flat_map(MetricSample::runtime_metrics).collect();
    runtime.sort_unstable();
    runtime.dedup();
    Metric::ALL
        .into_iter()
        .chain(runtime)
        .filter_map(|metric| {
            let points: Vec<(f64, f64)> = metrics.iter().filter_map(|m| Some((m.t, m.get(metric)?))).collect();
            if points.is_empty() {
                return None;
            }
            let earlier: Vec<f64> = points.iter().filter(|p| p.0 < trigger_t).map(|p| p.1).collect();
            let mean_before = (!earlier.is_empty()).then(|| earlier.iter().sum::<f64>() / earlier.len() as f64);
            let rule = trigger.rules().find(|r| r.metric == metric);
            let (baseline_mean, threshold) = match fired.filter(|f| f.metric == metric) {
                Some(f) => (f.baseline_mean, Some(f.threshold)),
                None => (mean_before, rule.and_then(|r| r.abs).and_then(|a| a.resolve(metric, limits))),
            };
            let capacity = format!("% of {} CPUs ({})", limits.cpu.cores, capacity_source(limits.cpu.source));
            let unit = match metric {
                Metric::Cpu => capacity.as_str(),
                Metric::Rss => "bytes",
                Metric::Threads => "threads",
                Metric::Fds => "open files",
                Metric::LockWait => "s of lock wait per s",
                Metric::Runtime(m) => m.unit,
            };
            Some(Series { name: metric.name().into(), unit: unit.into(), points, baseline_mean, threshold })
        })
        .collect()
}

fn capacity_source(source: crate::collect::capacity::CapacitySource) -> &'static str {
    use crate::collect::capacity::CapacitySource::*;
    match source {
        CgroupQuota => "cgroup quota",
        Affinity => "cpuset or affinity",
        OnlineCpus => "online CPUs",
    }
}
