//! JIT runtimes from outside, node: Debian's node, started with `--perf-basic-prof-only-functions`,
//! against `perf record -g`, which walks JIT code by frame pointer and names it from the same perf
//! map, on the same process over the same seconds. The Java tests are in `jit_java.rs`.

use std::{collections::BTreeMap, process::Command, time::Duration};

use autodump_tests::{
    assert_close, favour_cpu,
    jit::{assert_shares_match, cleanup, record_against_perf},
    require_bpf, run_agent, scratch_dir, workspace, Bundle, Fixture, Folded,
};

const FUNCTIONS: [&str; 6] = ["leafSpin", "middleHop", "outerLoop", "sideHop", "sideLoop", "tick"];

fn start_node(mode: &str, flags: &[&str]) -> Fixture {
    let script = workspace().join("tests/fixtures/jit/chain.js");
    let mut command = Command::new("node");
    command.args(flags).arg(script).arg(mode).current_dir(scratch_dir("jit-node"));
    Fixture::spawn(command, "chain.js")
}

/// A JavaScript frame of `function` (perf map names read `JS:*name file:line:col`, the mark
/// telling the tier).
fn is_js(frame: &str, function: &str) -> bool {
    frame
        .strip_prefix("JS:")
        .is_some_and(|f| f.trim_start_matches(['*', '^', '~', '+']).split(' ').next() == Some(function))
}

/// The JavaScript frames of a stack, root first, by function name.
fn js_chain<'a>(frames: impl Iterator<Item = &'a String>) -> Vec<String> {
    frames
        .filter_map(|f| f.strip_prefix("JS:"))
        .map(|f| f.trim_start_matches(['*', '^', '~', '+']).split(' ').next().unwrap_or("").to_string())
        .collect()
}

/// The most common value of `items`, weighted.
fn heaviest<T: Ord + Clone>(items: impl Iterator<Item = (T, u64)>) -> Option<T> {
    let mut by: BTreeMap<T, u64> = BTreeMap::new();
    for (item, weight) in items {
        *by.entry(item).or_default() += weight;
    }
    by.into_iter().max_by_key(|(_, w)| *w).map(|(t, _)| t)
}

#[test]
fn node_frames_are_named_and_walked_as_perf_does() {
    if !require_bpf("node_frames_are_named_and_walked_as_perf_does") {
        return;
    }
    // Shares against perf's on a starved target drift apart (6.6 points seen beside a test
    // that favours its CPU), as rbspy's do.
    favour_cpu();
    let node = start_node("spin", &["--perf-basic-prof-only-functions", "--no-turbo-inlining"]);
    // Let the hot functions reach the optimizing compiler first (which inlines none of them, so
    // that each is a frame of its own).
    autodump_tests::warm_up(node.pid, 3.0);
    let (bundle, ours, theirs) = record_against_perf(node.pid, &[]);
    assert_shares_match(&ours, &theirs, &FUNCTIONS, is_js);
    let total: u64 = ours.iter().map(|f| f.weight).sum();
    // The same chain of JavaScript callers above the hot code, and native frames on both sides
    // of it: the walk goes on through JIT code into the event loop.
    let hot = |frames: &[String]| frames.iter().any(|f| is_js(f, "outerLoop"));
    let mine = heaviest(ours.iter().filter(|f| hot(&f.frames)).map(|f| (js_chain(f.frames.iter()), f.weight)));
    let perf = heaviest(theirs.iter().filter(|s| hot(s)).map(|s| (js_chain(s.iter()), 1)));
    eprintln!("JavaScript chains: ours {mine:?}, perf {perf:?}");
    assert_eq!(mine, perf, "the heaviest chain of JavaScript frames through outerLoop");
    let leaf = |f: &&Folded| f.frames.iter().any(|x| is_js(x, "leafSpin"));
    let through = ours.iter().filter(leaf).filter(|f| f.frames.iter().any(|x| x == "uv_run"));
    let through = through.map(|f| f.weight).sum::<u64>() as f64 / total.max(1) as f64;
    assert!(through > 0.9, "{:.0}% of samples walk from leafSpin down to uv_run", through * 100.0);

    let jit = &bundle.summary()["jit"];
    assert_eq!(jit["runtime"], "node", "{jit}");
    assert_eq!(jit["map"], format!("/tmp/perf-{}.map", node.pid), "{jit}");
    assert!(jit["entries"].as_u64() > Some(50), "{jit}");
    assert!(jit["cpu_share_named"].as_f64() > Some(0.9), "{jit}");
    cleanup(node);
}

#[test]
fn a_node_thread_blocked_in_javascript_is_named_off_cpu() {
    if !require_bpf("a_node_thread_blocked_in_javascript_is_named_off_cpu") {
        return;
    }
    let node = start_node("wait", &["--perf-basic-prof-only-functions", "--interpreted-frames-native-stack"]);
    std::thread::sleep(Duration::from_secs(2));
    let seconds = 5.0;
    let run = run_agent(&["--pid", &node.pid.to_string(), "--duration", "5s"]);
    let bundle: Bundle = run.bundle();
    let blocked = bundle.weight("offcpu.folded", |f| {
        js_chain(f.frames.iter()).ends_with(&["waitLoop".to_string(), "blockingWait".to_string()])
    });
    // The main thread waits 200 ms at a time, all the time.
    assert_close("seconds blocked in blockingWait (called from waitLoop)", blocked as f64 / 1e6, seconds, 0.15);
    cleanup(node);
}

#[test]
fn node_without_a_perf_map_is_told_how_to_start() {
    if !require_bpf("node_without_a_perf_map_is_told_how_to_start") {
        return;
    }
    let node = start_node("spin", &[]);
    let run = run_agent(&["--pid", &node.pid.to_string(), "--duration", "2s"]);
    let summary = run.bundle().summary();
    assert_eq!(summary["jit"]["runtime"], "node", "{}", summary["jit"]);
    assert_eq!(summary["jit"]["map_found"], false, "{}", summary["jit"]);
    let notes = summary["notes"].to_string();
    assert!(notes.contains("--perf-basic-prof-only-functions"), "{notes}");
}
