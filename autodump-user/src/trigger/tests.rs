//! The trigger's decisions, sample by sample.
use super::*;
use crate::collect::capacity::CpuCapacity;

const LIMITS: Limits = Limits { memory_bytes: 1 << 30, open_files: Some(1024), cpu: CpuCapacity::ONE_CORE };
const SETTINGS: Settings =
    Settings { warmup_s: 5.0, baseline_s: 10.0, cooldown_s: 30.0, max_per_hour: 3, rearm_fraction: 0.9 };

fn trigger(rules: &[&str]) -> Trigger {
    let rules = rules.iter().map(|r| Rule::parse(r, &[]).unwrap()).map(|r| (r.metric, r)).collect();
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
        let rule = Rule::parse(text, &[]).unwrap();
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
fn alerts_share_the_cooldown_rules_and_the_hourly_cap() {
    let mut trigger = trigger(&[]);
    assert_eq!(trigger.admit("HighLatency", 100.0), Ok(()));
    assert_eq!(trigger.admit("HighLatency", 110.0), Err("cooldown"));
    assert_eq!(trigger.admit("ErrorRate", 110.0), Ok(()), "its own cooldown per alert");
    assert_eq!(trigger.admit("Disk", 120.0), Ok(()));
    assert_eq!(trigger.admit("Other", 130.0), Err("hourly bundle cap"), "3 an hour, all triggers together");
    assert_eq!(trigger.admit("Other", 3701.0), Ok(()));
}

#[test]
fn cooldown_and_hourly_cap_hold_back_repeats() {
    let mut t = trigger(&["cpu:min=10,diff=off,abs=80"]);
    // Bursts of 10 s every 20 s: each re-arms, but the 30 s cooldown and 3 an hour hold them.
    let bursts: Vec<(f64, f64)> = (0..400).map(|i| (i as f64, if (i / 10) % 2 == 1 { 90.0 } else { 20.0 })).collect();
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
