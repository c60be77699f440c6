//! CPU rules in units of what the process may use, sustained rules and one bundle per incident:
//! a steady two-thread service using 150% of a core on two CPUs is not an anomaly, the same
//! service in a cgroup limited to 1.6 CPUs is at 94% of its capacity, and `for=30s` needs 30 s.

use std::time::{Duration, Instant};

use autodump_tests::{cgroup::TestCgroup, favour_cpu, require_bpf, scratch_dir, Bundle, Fixture, RunningAgent};

fn watch(fixture: &Fixture, test: &str, extra: &[&str]) -> RunningAgent {
    let out = scratch_dir(test);
    let pid = fixture.pid.to_string();
    let mut args = vec!["--pid", &pid, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut agent = RunningAgent::start(&args);
    agent.wait_recording(Duration::from_secs(30));
    agent
}

/// The mean of a bundle's metric samples of `field`.
fn mean(bundle: &Bundle, field: &str) -> f64 {
    let summary = bundle.summary();
    let values: Vec<f64> = summary["metrics"].as_array().unwrap().iter().filter_map(|m| m[field].as_f64()).collect();
    assert!(!values.is_empty(), "no {field} in the bundle's metrics");
    values.iter().sum::<f64>() / values.len() as f64
}

fn online_cpus() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as f64 }
}

#[test]
fn steady_busy_service_fires_nothing_at_default_rules() {
    if !require_bpf("steady_busy_service_fires_nothing_at_default_rules") {
        return;
    }
    favour_cpu();
    let fixture = Fixture::start("cpuload", &["2", "75"]);
    let mut agent = watch(&fixture, "capacity_steady", &[]);
    let watching = Instant::now();
    // 90 s at default rules and timings (a 10 s warmup, then the 30 s baseline filled and
    // rolled twice over): not one rule bundle.
    let quiet = agent.next_bundle(Duration::from_secs(90));
    assert!(
        quiet.is_none(),
        "a rule fired on steady load after {:?}: {:?}",
        watching.elapsed(),
        quiet.map(|b| b.summary()["reason"].clone())
    );
    agent.signal(libc::SIGUSR1);
    let manual = agent.expect_bundle(Duration::from_secs(15), "a manual bundle");
    let capacity = &manual.summary()["target"]["cpu_capacity"];
    eprintln!(
        "capacity {capacity}; cpu {:.1}% of a core, {:.1}% of capacity",
        mean(&manual, "cpu_percent"),
        mean(&manual, "cpu_capacity_percent")
    );
    assert_eq!(capacity["cores"].as_f64(), Some(online_cpus()), "{capacity}");
    let (core, share) = (mean(&manual, "cpu_percent"), mean(&manual, "cpu_capacity_percent"));
    assert!((130.0..=165.0).contains(&core), "the load is 150% of a core: {core:.1}");
    assert!((share - core / online_cpus()).abs() < 1.0, "{share:.1}% of capacity");
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn the_same_service_in_a_smaller_cgroup_fires_at_abs() {
    if !require_bpf("the_same_service_in_a_smaller_cgroup_fires_at_abs") {
        return;
    }
    favour_cpu();
    let cgroup = TestCgroup::cpu("capacity", Some(1.6));
    cgroup.favour();
    let fixture = Fixture::start("cpuload", &["2", "75"]);
    cgroup.add(fixture.pid);
    let mut agent = watch(&fixture, "capacity_cgroup", &["--warmup", "5s", "--after", "3s", "--cooldown", "10s"]);
    let bundle = agent.expect_bundle(Duration::from_secs(40), "a cpu rule bundle");
    let summary = bundle.summary();
    eprintln!("reason {}; capacity {}", summary["reason"], summary["target"]["cpu_capacity"]);
    assert_eq!(summary["reason"]["metric"], "cpu");
    assert_eq!(summary["reason"]["crossed"], "abs");
    assert_eq!(summary["reason"]["threshold"].as_f64(), Some(80.0));
    let capacity = &summary["target"]["cpu_capacity"];
    assert_eq!((capacity["cores"].as_f64(), capacity["source"].as_str()), (Some(1.6), Some("cgroup-quota")));
    let value = summary["reason"]["value"].as_f64().unwrap();
    assert!((80.0..=100.0).contains(&value), "150% of a core is 94% of 1.6 CPUs: {value:.1}");
    // One incident: the load stays, and no second bundle comes after the cooldown.
    assert!(agent.next_bundle(Duration::from_secs(30)).is_none(), "the rule re-armed while the load stayed high");
    drop(fixture);
}

#[test]
fn a_sustained_rule_needs_its_duration_and_reaches_back_to_its_start() {
    if !require_bpf("a_sustained_rule_needs_its_duration_and_reaches_back_to_its_start") {
        return;
    }
    favour_cpu();
    // Calm at 5% of a core per thread, then bursts of both threads at 100% (100% of capacity).
    let mut fixture = Fixture::start("cpuload", &["2", "5"]);
    let rule = ["--rule", "cpu:for=30s,abs=50%", "--warmup", "5s", "--after", "3s", "--lookback", "10s"];
    let mut agent = watch(&fixture, "capacity_for", &rule);
    let burst = |fixture: &mut Fixture, duty: u32| -> f64 {
        fixture.send(&format!("duty {duty}"));
        let line = fixture.next_line(Duration::from_secs(5)).expect("the fixture acknowledges");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    std::thread::sleep(Duration::from_secs(6));
    burst(&mut fixture, 100);
    assert!(agent.next_bundle(Duration::from_secs(20)).is_none(), "a 20 s burst does not fire a 30 s rule");
    burst(&mut fixture, 5);
    std::thread::sleep(Duration::from_secs(8));
    let started = burst(&mut fixture, 100);
    let bundle = agent.expect_bundle(Duration::from_secs(50), "a bundle for the 40 s burst");
    let arrived = autodump_tests::unix_now();
    burst(&mut fixture, 5);
    let summary = bundle.summary();
    let (trigger, start) =
        (summary["window"]["trigger"].as_f64().unwrap(), summary["window"]["start"].as_f64().unwrap());
    let held = summary["reason"]["held_s"].as_f64().unwrap();
    eprintln!(
        "burst at {started:.1}: trigger {:+.1} s, window start {:+.1} s, held {held:.1} s, bundle {:+.1} s",
        trigger - started,
        start - started,
        arrived - started
    );
    assert!((30.0..33.0).contains(&held), "fired once the condition held 30 s: {held}");
    assert!((trigger - started).abs() <= 2.5, "the window's trigger is the burst's start");
    assert!(start <= started - 8.0, "the window reaches back before the burst: {:.1}", start - started);
    assert!(arrived - started >= 30.0, "not before the 30 s");
    // The bundle holds the burst from its start: at least 25 s of both threads spinning.
    let spinning = bundle.weight("cpu.folded", |f| f.frames.iter().any(|x| x == "load_work"));
    let hz = summary["frequency_hz"].as_f64().unwrap();
    assert!(spinning as f64 / hz >= 2.0 * 25.0, "{:.1} s on CPU in load_work", spinning as f64 / hz);
}
