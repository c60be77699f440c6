//! JIT runtimes against `perf record -g` on the same process over the same seconds: the helpers
//! the node and Java tests share.

use crate::{perf::PerfRecording, scratch_dir, Bundle, Fixture, Folded, RunningAgent};
use std::time::Duration;

/// Function shares agree with perf's within this many points.
pub const SHARE_TOLERANCE: f64 = 0.05;

/// Records `pid` with the agent (`extra` flags) and with `perf record -g` over the same 6 s:
/// perf starts once the agent records. Over seconds apart, the shares differ by what the JIT
/// compiled in between (C2 inlining the hot method into its caller moved 5 points).
pub fn record_against_perf(pid: u32, extra: &[&str]) -> (Bundle, Vec<Folded>, Vec<Vec<String>>) {
    let pid_arg = pid.to_string();
    let mut agent =
        RunningAgent::start(&[&["--pid", &pid_arg, "--duration", "6s", "--frequency", "499"][..], extra].concat());
    agent.wait_recording(Duration::from_secs(60));
    let perf = PerfRecording::start_frame_pointers(pid, 6, 499, &scratch_dir("jit-perf"));
    let run = agent.finish();
    let theirs = perf.finish();
    let bundle = run.bundle();
    let ours = bundle.folded("cpu.folded");
    (bundle, ours, theirs)
}

/// Each function's share of samples (stacks with a frame `is` matches) agrees with perf's
/// within `SHARE_TOLERANCE`.
pub fn assert_shares_match(
    ours: &[Folded],
    theirs: &[Vec<String>],
    functions: &[&str],
    is: impl Fn(&str, &str) -> bool,
) {
    let total: u64 = ours.iter().map(|f| f.weight).sum();
    for &function in functions {
        let mine = ours.iter().filter(|f| f.frames.iter().any(|x| is(x, function))).map(|f| f.weight).sum::<u64>();
        let mine = mine as f64 / total.max(1) as f64;
        let perf = crate::perf::share(theirs, |f| is(f, function));
        eprintln!("{function}: ours {:.1}%, perf {:.1}%", mine * 100.0, perf * 100.0);
        if (mine - perf).abs() > SHARE_TOLERANCE {
            print_stacks_without(ours, theirs, |f| is(f, function));
        }
        assert!((mine - perf).abs() <= SHARE_TOLERANCE, "{function}: ours {mine:.3}, perf {perf:.3}");
    }
}

/// The heaviest stacks either side has without a matching frame: what a gap is made of.
fn print_stacks_without(ours: &[Folded], theirs: &[Vec<String>], is: impl Fn(&str) -> bool) {
    let mut mine: Vec<_> = ours.iter().filter(|f| !f.frames.iter().any(|x| is(x))).collect();
    mine.sort_by_key(|f| std::cmp::Reverse(f.weight));
    for f in mine.iter().take(8) {
        eprintln!("  ours without it, {}: {}", f.weight, f.frames.join(";"));
    }
    let mut perf = std::collections::BTreeMap::<String, u64>::new();
    for stack in theirs.iter().filter(|s| !s.iter().any(|f| is(f))) {
        *perf.entry(stack.join(";")).or_default() += 1;
    }
    let mut perf: Vec<_> = perf.into_iter().collect();
    perf.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (stack, n) in perf.iter().take(8) {
        eprintln!("  perf without it, {n}: {stack}");
    }
}

/// Stops the runtime and removes the perf map (and a JVM's attach socket) it left behind.
pub fn cleanup(mut runtime: Fixture) {
    let pid = runtime.pid;
    runtime.kill();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let _ = std::fs::remove_file(format!("/tmp/.java_pid{pid}"));
}
