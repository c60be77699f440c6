//! Tests of the summary: what it says of a recording, its notes and its JSON.

use super::*;
use crate::record::profile::{tests::sample_profile, ProfileKind, SampleValue, StackPart};
use crate::{
    model::reports::{IdleThreads, RuntimeReport},
    trigger::{Crossed, Fired},
};

fn facts<'a>(profiles: &'a Profiles, threads: &'a BTreeMap<u32, Arc<str>>) -> Facts<'a> {
    Facts {
        reason: Reason::of_kind("record"),
        pid: 7,
        comm: "app",
        exe: "/usr/bin/app".into(),
        frequency_hz: 99,
        fault_period: 16,
        offcpu_kernel_stacks: KernelStacks::PerUserStack,
        start: 1_700_000_000.0,
        trigger: None,
        end: 1_700_000_002.5,
        profiles,
        threads,
        dropped: ProbeStats::default(),
        exited: false,
        exit: None,
        metrics: Vec::new(),
        regressed: Vec::new(),
        memory: None,
        runtimes: Vec::new(),
        probes: ProbeReport::default(),
        cpu_capacity: None,
        target_info: None,
        budget: Default::default(),
        shed_before: None,
        deadlocks: Vec::new(),
        named_locks: Vec::new(),
    }
}

#[test]
fn keeping_the_budget_is_noted() {
    let (profiles, threads) = (Profiles::new(), BTreeMap::new());
    let quiet = build(facts(&profiles, &threads));
    assert!(!quiet.notes.iter().any(|n| n.contains("budget") || n.contains("flight recorder")), "{:?}", quiet.notes);
    let mut f = facts(&profiles, &threads);
    f.budget.budget_bytes = 64 << 20;
    f.budget.over_budget_checks = 3;
    f.budget.file_cache.evictions = 2;
    f.shed_before = Some(f.start + 5.0);
    let s = build(f);
    assert!(
        s.notes.iter().any(|n| n.contains("memory budget (64 MiB") && n.contains("2 cached files")),
        "{:?}",
        s.notes
    );
    assert!(s.notes.iter().any(|n| n.contains("flight recorder was cut")), "{:?}", s.notes);
    assert_eq!(s.agent_memory.over_budget_checks, 3);
}

#[test]
fn summarizes_totals_window_threads_and_losses() {
    let mut offcpu = Profile::new(ProfileKind::OFF_CPU);
    let loc = crate::record::profile::tests::loc(1, "wait", false);
    let user = [loc];
    offcpu.add("t".into(), &[StackPart::User(&user)], SampleValue { count: 3, nanos: 3_000_000, ..Default::default() });
    offcpu.add(
        "t".into(),
        &[StackPart::Pseudo(pseudo::RUNNABLE), StackPart::User(&user)],
        SampleValue { count: 1, nanos: 500_000, ..Default::default() },
    );
    let threads = BTreeMap::from([(7, Arc::from("worker")), (8, Arc::from("app"))]);
    let dropped = ProbeStats { cpu_user_stack_errors: 2, offcpu_totals_full: 1, ..ProbeStats::default() };
    let mut profiles = Profiles::new();
    profiles.insert(sample_profile());
    profiles.insert(offcpu);
    let summary = build(Facts { dropped, exited: true, ..facts(&profiles, &threads) });
    assert_eq!(summary.cpu.samples, 45);
    assert!((summary.cpu.cpu_seconds - 45.0 / 99.0).abs() < 1e-9);
    assert_eq!(summary.cpu.distinct_stacks, 2);
    assert_eq!((summary.offcpu.total_us, summary.offcpu.runnable_us, summary.offcpu.blocks), (3500, 500, 4));
    assert_eq!(summary.window.start, 1_700_000_000.0);
    assert!((summary.window.duration_s - 2.5).abs() < 1e-6);
    assert_eq!(summary.threads.len(), 2);
    assert!(summary.target.exited);
    assert_eq!(summary.notes.len(), 3, "{:?}", summary.notes);

    let json: serde_json::Value = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["reason"]["kind"], "record");
    assert_eq!(json["dropped"]["cpu_user_stack_errors"], 2);
    assert_eq!(json["threads"][0]["name"], "worker");
    assert_eq!(json["format_version"], FORMAT_VERSION);
    assert!(json.get("metrics").is_none() && json.get("exit").is_none(), "record bundles omit watch fields");
    assert!(json["window"].get("trigger").is_none());
}

#[test]
fn rule_bundles_say_why() {
    let profiles = Profiles::new();
    let threads = BTreeMap::new();
    let fired = Fired {
        metric: crate::collect::metrics::Metric::Cpu,
        t: 1_700_000_001.0,
        since: 1_700_000_001.0,
        value: 99.0,
        baseline_mean: Some(3.0),
        threshold: 80.0,
        crossed: Crossed::Abs,
        rule: "cpu:min=10%,diff=25%,abs=80%".into(),
    };
    let metrics = vec![MetricSample { t: 1_700_000_001.0, cpu_percent: Some(99.0), ..Default::default() }];
    let exit = Some(ExitStatus::from_exit_code(11));
    let summary = build(Facts {
        reason: Reason::from_fired(&fired),
        trigger: Some(fired.t),
        metrics,
        exit,
        ..facts(&profiles, &threads)
    });
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["reason"]["kind"], "rule");
    assert_eq!(json["reason"]["metric"], "cpu");
    assert_eq!(json["reason"]["baseline_mean"], 3.0);
    assert_eq!(json["reason"]["threshold"], 80.0);
    assert_eq!(json["reason"]["crossed"], "abs");
    assert_eq!(json["window"]["trigger"], 1_700_000_001.0);
    assert_eq!(json["metrics"][0]["cpu_percent"], 99.0);
    assert_eq!(json["exit"]["signal"], 11);
}

#[test]
fn a_clean_recording_has_no_notes() {
    let (profiles, threads) = (Profiles::new(), BTreeMap::new());
    let summary = build(facts(&profiles, &threads));
    assert!(summary.notes.is_empty());
    assert_eq!(summary.offcpu.runnable_us, 0);
}

#[test]
fn a_runtime_says_its_section_notes_wait_and_idle_threads() {
    let threads = BTreeMap::new();
    let mut offcpu = Profile::new(ProfileKind::OFF_CPU);
    let parked = [crate::record::profile::tests::loc(1, "park", false)];
    let idle = SampleValue { count: 1, nanos: 9_000_000, ..Default::default() };
    offcpu.add("t".into(), &[StackPart::User(&parked), StackPart::Pseudo("[parked]")], idle);
    let mut profiles = Profiles::new();
    profiles.insert(offcpu);
    let mut report = RuntimeReport::new("widgets", serde_json::json!({"version": "1.2"}));
    report.notes = vec!["no widget profile: it is off".into()];
    report.wait = Some("60% of widget time waiting on [lock] in main.hold".into());
    report.idle = Some(IdleThreads { key: "idle_widget_threads_us", frame: "[parked]" });
    let summary = build(Facts { runtimes: vec![report], ..facts(&profiles, &threads) });
    assert_eq!(summary.notes, ["no widget profile: it is off"]);
    assert!(summary.verdict.ends_with("; 60% of widget time waiting on [lock] in main.hold"), "{}", summary.verdict);
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["widgets"]["version"], "1.2");
    assert_eq!(json["offcpu"]["idle_widget_threads_us"], 9000);
    assert_eq!(json["profiles"][2]["kind"], "faults");
    let quiet = build(facts(&profiles, &threads));
    assert!(serde_json::to_value(&quiet).unwrap()["offcpu"].get("idle_widget_threads_us").is_none());
}
