//! A service of many processes of one executable: the agent watches 200 of them within its
//! memory budget, and one that spikes still gets its bundle, its stacks whole through glibc and
//! named from glibc's debug file (read once for all of them).

use std::time::{Duration, Instant};

use autodump_tests::{favour_cpu, fixture_bin, own_copy, require_bpf, scratch_dir, Fixture, RunningAgent};

/// Short timings: 500 ms ticks, 4 s warm-up, 10 s lookback, 3 s after a trigger.
const FAST: &[&str] =
    &["--interval", "500ms", "--warmup", "4s", "--baseline", "10s", "--lookback", "10s", "--after", "3s"];
/// The agent's default memory budget (`--memory-budget`).
const DEFAULT_BUDGET: u64 = 64 << 20;

/// The test's own copy of the worker fixture: the agent selects by executable, and the other
/// test here may run beside this one.
fn worker_exe(test: &str) -> String {
    own_copy(&fixture_bin("worker"), test).to_str().unwrap().to_string()
}

/// A kB field of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix(key)).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    kib * 1024
}

/// Starts the agent on the worker executable and waits until it watches `n` processes.
fn watch_workers(test: &str, exe: &str, n: usize, extra: &[&str]) -> RunningAgent {
    let out = scratch_dir(test);
    let mut args = vec!["--exe", &exe, "--out", out.to_str().unwrap()];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    let mut agent = RunningAgent::start(&args);
    let started = Instant::now();
    while agent.logged("watching a new process").len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent watches {} of {n} workers",
            agent.logged("watching a new process").len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{n} workers watched {:.1} s after the agent started", started.elapsed().as_secs_f64());
    agent
}

/// Spikes one worker and returns its rule bundle's on-CPU share through glibc's qsort, the
/// share of whole stacks (to `main`), and the summary.
fn spike_and_check(agent: &mut RunningAgent, spiking: &mut Fixture) -> serde_json::Value {
    spiking.send("sort 6");
    let bundle = agent.expect_bundle(Duration::from_secs(30), "a cpu rule bundle for the spiking worker");
    let summary = bundle.summary();
    assert_eq!(summary["reason"]["kind"], "rule", "{summary}");
    assert_eq!(summary["reason"]["metric"], "cpu");
    assert_eq!(summary["target"]["instance"]["pid"], spiking.pid, "the bundle is the spiking worker's");
    let cpu = bundle.folded("cpu.folded");
    let total: u64 = cpu.iter().map(|f| f.weight).sum();
    let has = |f: &autodump_tests::bundle::Folded, name: &str| f.frames.iter().any(|x| x == name);
    // sort_spike -> qsort (glibc's qsort_r and msort_with_tmp, named from libc6-dbg), some of
    // it calling back into compare_ints.
    let through_glibc: u64 =
        cpu.iter().filter(|f| has(f, "sort_spike") && has(f, "msort_with_tmp")).map(|f| f.weight).sum();
    let callback: u64 =
        cpu.iter().filter(|f| has(f, "msort_with_tmp") && has(f, "compare_ints")).map(|f| f.weight).sum();
    let whole: u64 = cpu.iter().filter(|f| has(f, "sort_spike") && has(f, "main")).map(|f| f.weight).sum();
    eprintln!(
        "spiking worker: {total} samples, {:.0}% through sort_spike -> msort_with_tmp ({:.0}% on to compare_ints), {:.0}% to main",
        100.0 * through_glibc as f64 / total.max(1) as f64,
        100.0 * callback as f64 / total.max(1) as f64,
        100.0 * whole as f64 / total.max(1) as f64
    );
    assert!(total > 0 && callback > 0);
    assert!(through_glibc * 2 > total, "most samples named through glibc's qsort: {through_glibc} of {total}");
    assert!(whole * 10 >= total * 9, "stacks whole to main: {whole} of {total}");
    summary
}

#[test]
fn two_hundred_workers_stay_within_the_budget_and_a_spike_gives_its_bundle() {
    if !require_bpf("two_hundred_workers_stay_within_the_budget_and_a_spike_gives_its_bundle") {
        return;
    }
    favour_cpu();
    let exe = worker_exe("many_processes_200");
    let mut workers: Vec<Fixture> = (0..200).map(|_| Fixture::start_at(exe.as_ref(), &[])).collect();
    let mut agent = watch_workers("many_processes_200", &exe, workers.len(), &[]);
    // A whole lookback of recording for every worker, then the spike.
    std::thread::sleep(Duration::from_secs(12));
    let steady = status_bytes(agent.pid(), "VmRSS:");
    let summary = spike_and_check(&mut agent, &mut workers[100]);
    let (peak, rss) = (status_bytes(agent.pid(), "VmHWM:"), status_bytes(agent.pid(), "VmRSS:"));
    let memory = &summary["agent_memory"];
    eprintln!(
        "agent with 200 workers: RSS {} MiB steady, {} MiB after the bundle, peak {} MiB; heap {} MiB of a {} MiB budget; {}",
        steady >> 20,
        rss >> 20,
        peak >> 20,
        memory["heap_bytes"].as_u64().unwrap() >> 20,
        memory["budget_bytes"].as_u64().unwrap() >> 20,
        memory["file_cache"]
    );
    assert_eq!(memory["budget_bytes"], DEFAULT_BUDGET);
    assert!(memory["heap_bytes"].as_u64().unwrap() <= DEFAULT_BUDGET, "heap within the budget: {memory}");
    assert_eq!(memory["over_budget_checks"], 0, "never over the budget: {memory}");
    // Every process maps the same glibc: its debug file is parsed once, not 200 times.
    assert!(memory["file_cache"]["loads"].as_u64().unwrap() < 10, "files parsed once each: {memory}");
    assert!(peak <= DEFAULT_BUDGET, "the agent's peak RSS ({} MiB) is within 64 MiB", peak >> 20);
}

#[test]
fn over_its_budget_the_agent_frees_caches_and_still_names_the_spike() {
    if !require_bpf("over_its_budget_the_agent_frees_caches_and_still_names_the_spike") {
        return;
    }
    favour_cpu();
    let exe = worker_exe("many_processes_budget");
    let mut workers: Vec<Fixture> = (0..40).map(|_| Fixture::start_at(exe.as_ref(), &[])).collect();
    // A budget below what the agent needs at all: it frees what it can, counts it, and goes on.
    let mut agent = watch_workers("many_processes_budget", &exe, workers.len(), &["--memory-budget", "4MiB"]);
    agent.wait_log(&["over the memory budget"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(6));
    let summary = spike_and_check(&mut agent, &mut workers[7]);
    let memory = &summary["agent_memory"];
    eprintln!("over budget: {memory}");
    assert!(memory["over_budget_checks"].as_u64().unwrap() > 0);
    assert!(memory["address_cache_resets"].as_u64().unwrap() > 0, "address caches were dropped: {memory}");
    let notes = summary["notes"].to_string();
    assert!(notes.contains("over its memory budget (4 MiB"), "the summary says so: {notes}");
}
