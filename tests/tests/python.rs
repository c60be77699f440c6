//! Python programs from outside, against py-spy, which nobody here wrote: Debian 12's own python3
//! (3.11), Debian 13's 3.13 and unstable's 3.14 in root filesystems of their own releases (and
//! pyenv's 3.12 and 3.13 where the machine has them) with threads whose stacks are known:
//! the thread dump against `py-spy dump`, on-CPU shares against `py-spy record`, and threads that
//! wait over and over against `py-spy dump` of the same threads.

use std::{collections::BTreeMap, process::Command};

use autodump_tests::{
    python::{
        functions, inclusive_shares, parse_dump, python_frames, record_with_py_spy, start, weight, with_each_python,
        PyFrame, Python, FRAME_CAP,
    },
    run_agent, scratch_dir,
};

#[test]
fn python_threads_read_as_py_spy_dumps_them() {
    with_each_python("python_threads_read_as_py_spy_dumps_them", dump_matches_py_spy);
}

fn dump_matches_py_spy(python: &Python) {
    let fixture = start(python, "parked.py", &[]);
    let run = run_agent(&["--pid", &fixture.pid.to_string(), "--duration", "2s"]);
    let bundle = run.bundle();
    let spy = Command::new("py-spy").args(["dump", "--pid", &fixture.pid.to_string()]).output().expect("py-spy");
    assert!(spy.status.success(), "py-spy dump: {}", String::from_utf8_lossy(&spy.stderr));
    let theirs = parse_dump(&String::from_utf8_lossy(&spy.stdout));
    let ours = parse_dump(&bundle.read("python-threads.txt"));

    let version = python.version();
    let python = &bundle.summary()["python"];
    assert_eq!(python["version"], version, "{python}");
    assert_eq!(python["threads"], 6, "{python}");
    assert_eq!(python["threads_with_frames"], 6, "{python}");

    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "the same threads");
    for (tid, spy) in &theirs {
        let mine = &ours[tid];
        eprintln!("thread {tid} ({}): {:?}", spy.state, functions(spy).iter().take(4).collect::<Vec<_>>());
        let parked = spy.state == "idle";
        if spy.frames.len() > FRAME_CAP {
            assert!(mine.cut, "thread {tid}: {} frames, cut at {FRAME_CAP}", spy.frames.len());
            assert_eq!(mine.frames[..], spy.frames[..FRAME_CAP], "thread {tid}: the innermost frames");
        } else if parked {
            // Parked threads stay where they are: the same functions, files and lines.
            assert_eq!(mine.frames, spy.frames, "thread {tid}");
        } else {
            // Running threads move between the two reads: the same functions, in order.
            assert_eq!(functions(mine), functions(spy), "thread {tid}");
        }
    }
    let by_function = |f: &str| ours.values().find(|t| t.frames.first().is_some_and(|(n, _, _)| n == f));
    for (leaf, caller) in [("sleeper", "Thread.run"), ("waits_on_lock", "Thread.run"), ("receiver", "Thread.run")] {
        let t = by_function(leaf).unwrap_or_else(|| panic!("a thread parked in {leaf}: {ours:?}"));
        assert_eq!(t.frames[1].0, caller);
    }
    // The key function sorted() calls back, then the caller of sorted(): a C function between
    // two Python frames.
    let sorter = by_function("key_fn").expect("a thread in key_fn");
    assert_eq!(functions(sorter)[..2], ["key_fn", "sorter"]);
    let main = by_function("Worker.spin").expect("the main thread");
    assert_eq!(functions(main), ["Worker.spin", "Worker.run", "main", "<module>"]);
}

/// On-CPU shares by Python function agree with py-spy's within this many points.
const SHARE_TOLERANCE: f64 = 0.05;

#[test]
fn python_on_cpu_shares_match_py_spy() {
    with_each_python("python_on_cpu_shares_match_py_spy", on_cpu_shares_match);
}

fn on_cpu_shares_match(python: &Python) {
    let fixture = start(python, "spin.py", &[]);
    let (bundle, spy) = record_with_py_spy(fixture.pid, &scratch_dir("python_spin"), &[]);
    let cpu = bundle.read("cpu.folded");
    let (ours, theirs) = (inclusive_shares(&cpu), inclusive_shares(&spy));
    for function in ["heavy", "light", "main", "<module>"] {
        let (mine, spy) = (ours.get(function).copied().unwrap_or(0.0), theirs.get(function).copied().unwrap_or(0.0));
        eprintln!("{function:<10} ours {:>5.1}%  py-spy {:>5.1}%", mine * 100.0, spy * 100.0);
        assert!((mine - spy).abs() <= SHARE_TOLERANCE, "{function}: {mine:.3} against py-spy's {spy:.3}");
    }
    // Root first: the module, main, then the function it called; no eval-loop C frame between.
    let heavy = cpu.lines().find(|l| l.contains("heavy (")).expect("a stack in heavy");
    let names: Vec<String> = python_frames(heavy).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["<module>", "main", "heavy"], "{heavy}");
    let eval = cpu.lines().find(|l| l.contains("_PyEval_EvalFrameDefault"));
    assert!(eval.is_none(), "eval-loop frames are hidden by default: {eval:?}");
    let summary = bundle.summary();
    let share = summary["python"]["cpu_share_with_python"].as_f64().unwrap_or(0.0);
    assert!(share >= 0.95, "{:.1}% of on-CPU samples have Python frames", share * 100.0);
    // The verdict names the Python function most of the CPU was in, not the interpreter's.
    let verdict = summary["verdict"].as_str().unwrap_or_default();
    eprintln!("verdict: {verdict}");
    assert!(verdict.contains("% of on-CPU in heavy"), "{verdict}");
}

/// Threads that wait over and over: their off-CPU time is in stacks that name the Python
/// function they wait in and its caller, as py-spy's dump of the same thread does.
#[test]
fn python_off_cpu_stacks_name_where_threads_wait() {
    with_each_python("python_off_cpu_stacks_name_where_threads_wait", off_cpu_stacks_name_waits);
}

fn off_cpu_stacks_name_waits(python: &Python) {
    let fixture = start(python, "waits.py", &[]);
    let pid = fixture.pid.to_string();
    let run = run_agent(&["--pid", &pid, "--duration", "3s"]);
    let bundle = run.bundle();
    let window = bundle.window_seconds();
    let offcpu = bundle.read("offcpu.folded");
    // Each waiter waits nearly all the time (the lock's holder lets go 1 ms in 21).
    let mut heaviest: BTreeMap<&str, (u64, Vec<PyFrame>)> = BTreeMap::new();
    for (caller, leaf) in [("napper", "nap"), ("locker", "wait_lock"), ("receiver", "recv_one")] {
        let mut waited = 0u64;
        for line in offcpu.lines() {
            let frames = python_frames(line);
            let names: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
            if names.ends_with(&[caller, leaf]) {
                waited += weight(line);
                let best = heaviest.entry(leaf).or_default();
                if weight(line) > best.0 {
                    *best = (weight(line), frames);
                }
            }
        }
        let seconds = waited as f64 / 1e6;
        eprintln!("{caller} -> {leaf}: {seconds:.2} s off-CPU of {window:.2} s");
        assert!(seconds >= 0.7 * window, "{caller} -> {leaf} waited {seconds:.2} s of {window:.2} s");
    }
    // The verdict names a Python function the threads wait in (six threads wait about as long
    // as each other), not the interpreter's frames under it; or the lock `wait_lock` takes, which
    // `hold` holds, named by those Python functions.
    let verdict = bundle.summary()["verdict"].as_str().unwrap_or_default().to_string();
    eprintln!("verdict: {verdict}");
    let waits = ["nap", "hold", "wait_lock", "recv_one", "sender", "main"];
    let waited_in = verdict.split("; ").find_map(|part| part.split("off-CPU waiting in ").nth(1));
    let lock = verdict.contains("taken in wait_lock (waits.py:") && verdict.contains("released by hold (waits.py:");
    assert!(lock || waited_in.is_some_and(|f| waits.contains(&f)), "{verdict}");
    // py-spy's dump of the same threads: the same functions, files and lines, root first.
    let mut matched = 0;
    for _ in 0..5 {
        let spy = Command::new("py-spy").args(["dump", "--pid", &pid]).output().expect("py-spy");
        for thread in parse_dump(&String::from_utf8_lossy(&spy.stdout)).values() {
            let Some((leaf, _, _)) = thread.frames.first() else { continue };
            let Some((_, ours)) = heaviest.get(leaf.as_str()) else { continue };
            let theirs: Vec<PyFrame> = thread.frames.iter().rev().cloned().collect();
            assert_eq!(ours, &theirs, "the thread waiting in {leaf}");
            matched += 1;
        }
        if matched >= 3 {
            break;
        }
    }
    assert!(matched >= 2, "py-spy caught {matched} of the waiting threads in their wait");
}
