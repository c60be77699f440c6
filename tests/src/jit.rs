//! JIT runtimes against `perf record -g` on the same process over the same seconds: the helpers
//! the node and Java tests share.

use crate::{perf::PerfRecording, run_agent, scratch_dir, Bundle, Fixture, Folded};

/// Function shares agree with perf's within this many points.
pub const SHARE_TOLERANCE: f64 = 0.05;

/// Records `pid` with the agent (`extra` flags) and with `perf record -g` over the same 6 s.
pub fn record_against_perf(pid: u32, extra: &[&str]) -> (Bundle, Vec<Folded>, Vec<Vec<String>>) {
    let perf = PerfRecording::start_frame_pointers(pid, 6, 499, &scratch_dir("jit-perf"));
    let pid = pid.to_string();
    let run = run_agent(&[&["--pid", &pid, "--duration", "6s", "--frequency", "499"][..], extra].concat());
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
        assert!((mine - perf).abs() <= SHARE_TOLERANCE, "{function}: ours {mine:.3}, perf {perf:.3}");
    }
}

/// Stops the runtime and removes the perf map (and a JVM's attach socket) it left behind.
pub fn cleanup(mut runtime: Fixture) {
    let pid = runtime.pid;
    runtime.kill();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let _ = std::fs::remove_file(format!("/tmp/.java_pid{pid}"));
}
