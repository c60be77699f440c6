//! Threads that blocked before the agent attached and never run again: a read on a pipe nobody
//! writes and two threads deadlocked on two mutexes. They never switch, so the probes never
//! see them; the agent takes their stacks from outside when it starts watching.

use autodump_tests::{kernel_has_bpf_loop, require_bpf, run_agent, scratch_dir, skip, Fixture};

/// Share of the window each hung thread must show under its blocking function.
const MIN_SHARE: f64 = 0.8;

#[test]
fn threads_hung_before_attach_are_counted_and_their_deadlock_named() {
    if !require_bpf("threads_hung_before_attach_are_counted_and_their_deadlock_named") {
        return;
    }
    if !kernel_has_bpf_loop() {
        skip("threads_hung_before_attach", "the task iterator loads with CFI unwinding (5.17+)");
        return;
    }
    // "ready" comes once all three are blocked.
    let fixture = Fixture::start("hung", &[]);
    let out = scratch_dir("hangs");
    let pid = fixture.pid.to_string();
    let bundle = run_agent(&["--pid", &pid, "--duration", "4s", "--out", out.to_str().unwrap()]).bundle();
    let window = bundle.window_seconds();
    for (thread, function, kernel) in [
        ("piper", "wait_for_input", "pipe_read"),
        ("left", "take_left_then_right", "futex_wait"),
        ("right", "take_right_then_left", "futex_wait"),
    ] {
        let seconds = bundle.weight_in("offcpu.folded", thread, function) as f64 / 1e6;
        assert!(seconds >= MIN_SHARE * window, "{thread}: {seconds:.2} s of {window:.2} s under {function}");
        // Walked whole from its registers (to the thread's start), with its kernel stack.
        let folded = bundle.folded("offcpu.folded");
        let stack = folded.iter().find(|f| f.frames[0] == thread && f.frames.iter().any(|x| x == function));
        let frames = &stack.expect("the hung thread's stack").frames;
        assert!(frames.iter().any(|x| x == "start_thread"), "{thread}: walked to its start: {frames:?}");
        assert!(frames.iter().any(|x| x.ends_with("_[k]") && x.contains(kernel)), "{thread}: {frames:?}");
    }
    let summary = bundle.summary();
    let verdict = summary["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("deadlock: left waits in take_left_then_right (hung.c:")
            && verdict.contains("for right, which waits in take_right_then_left (hung.c:"),
        "{verdict}"
    );
    let cycle = summary["deadlocks"][0]["threads"].as_array().expect("a deadlock in the summary");
    assert_eq!(cycle.len(), 2, "{cycle:?}");
    assert_eq!(cycle[0]["held_by"], cycle[1]["tid"]);
    assert_eq!(cycle[1]["held_by"], cycle[0]["tid"]);
}
