//! Off-CPU accounting on a fixture that blocks in known functions for known times: a sleep
//! loop, a pipe read, and a thread that blocks mid-window and never wakes.

use std::time::Duration;

use autodump_tests::{assert_close, require_bpf, scratch_dir, Fixture, RunningAgent};

/// Off-CPU time per function within 15% of the known blocked time.
const TOLERANCE: f64 = 0.15;
const STUCK_AFTER_S: &str = "2.5";

#[test]
fn blocked_time_per_function_matches_known_sleeps() {
    if !require_bpf("blocked_time_per_function_matches_known_sleeps") {
        return;
    }
    let fixture = Fixture::start("blocker", &[STUCK_AFTER_S]);
    let out = scratch_dir("off_cpu");
    let pid = fixture.pid.to_string();
    let mut agent = RunningAgent::start(&["--pid", &pid, "--duration", "6s", "--out", out.to_str().unwrap()]);
    agent.wait_recording(Duration::from_secs(30));
    let blocked_line = fixture.next_line(Duration::from_secs(10)).expect("the stuck thread blocks");
    let blocked_at: f64 = blocked_line.strip_prefix("blocked ").expect("blocked <time>").parse().unwrap();
    let bundle = agent.finish().bundle();
    let summary = bundle.summary();
    let window = bundle.window_seconds();
    let window_end = summary["window"]["end"].as_f64().unwrap();
    let us = |thread, function| bundle.weight_in("offcpu.folded", thread, function) as f64 / 1e6;

    // Threads blocked the whole window: the sleep in progress when recording started is not
    // seen (its switch-out came before attach), at most 200 ms here.
    assert_close("sleep_in_nanosleep seconds", us("sleeper", "sleep_in_nanosleep"), window, TOLERANCE);
    assert_close("wait_on_pipe seconds", us("reader", "wait_on_pipe"), window, TOLERANCE);
    assert_close("feed_pipe seconds", us("blocker", "feed_pipe"), window, TOLERANCE);

    // Blocked mid-window and never woke: counted from the block up to the window's close.
    assert!(blocked_at < window_end, "the stuck thread must block inside the window");
    assert_close("block_forever seconds", us("stuck", "block_forever"), window_end - blocked_at, TOLERANCE);

    // Kernel frames show where in the kernel they blocked.
    let pipe_stacks = bundle.folded("offcpu.folded");
    assert!(pipe_stacks.iter().any(|f| f.frames[0] == "reader" && f.frames.iter().any(|x| x.ends_with("_[k]"))));
    assert_eq!(summary["dropped"]["offcpu_start_full"], 0);
    assert_eq!(summary["dropped"]["offcpu_totals_full"], 0);
    let total_us = summary["offcpu"]["total_us"].as_u64().unwrap();
    assert!(total_us as f64 >= 3.0 * window * 1e6 * (1.0 - TOLERANCE), "summary total {total_us} us");
}
