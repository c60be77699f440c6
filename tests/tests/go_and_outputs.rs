//! A Go service: Go function names come out symbolized, and the files open in standard tools
//! (`go tool pprof -top` names the hot function first; the SVGs are well-formed XML).

use std::{process::Command, time::Duration};

use autodump_tests::{require_bpf, run_agent, scratch_dir, Bundle, Fixture};

fn assert_well_formed_xml(bundle: &Bundle, file: &str) {
    bundle.assert_well_formed_xml(file);
    assert!(bundle.read(file).contains("<svg"), "{file} has no flamegraph in it");
}

fn pprof_top(bundle: &Bundle, file: &str) -> Vec<String> {
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-symbolize=none"])
        .arg(bundle.dir.join(file))
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run go tool pprof (cargo xtask setup installs golang-go)");
    assert!(out.status.success(), "go tool pprof failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Rows after the "flat  flat%" header: the function name is the last column.
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

#[test]
fn go_functions_are_named_and_files_open_in_pprof() {
    if !require_bpf("go_functions_are_named_and_files_open_in_pprof") {
        return;
    }
    let fixture = Fixture::start("gospin", &[]);
    let out = scratch_dir("go");
    let pid = fixture.pid.to_string();
    let bundle = run_agent(&["--pid", &pid, "--duration", "3s", "--out", out.to_str().unwrap()]).bundle();

    let total = bundle.weight("cpu.folded", |_| true);
    let hot = bundle.weight("cpu.folded", |f| f.frames.iter().any(|x| x == "main.hotLoop"));
    assert!(total > 0, "no samples");
    assert!(hot * 10 >= total * 8, "main.hotLoop should hold most samples: {hot} of {total}");
    assert!(bundle.read("cpu.folded").contains("runtime."), "Go runtime frames are symbolized too");

    let top = pprof_top(&bundle, "cpu.pb.gz");
    assert_eq!(top.first().map(String::as_str), Some("main.hotLoop"), "pprof -top: {top:?}");
    pprof_top(&bundle, "offcpu.pb.gz");
    assert_well_formed_xml(&bundle, "cpu.svg");
    assert_well_formed_xml(&bundle, "offcpu.svg");
    assert!(bundle.read("cpu.svg").contains("on-CPU gospin"), "title names kind and process");

    // The bundle is complete, named as documented, and nothing temporary is left beside it.
    let mut files: Vec<String> = std::fs::read_dir(&bundle.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // Whether a goroutine's thread was woken in these 2 s by anything but the scheduler (whose
    // idle threads' wake-ups are left out), and whether that was a lock, depends on the scheduler.
    files.retain(|f| f != "locks.txt" && !f.starts_with("wakeups."));
    // A Go program's bundle also holds its goroutines, where they waited and what grew (and its
    // heap, when the runtime records one: this one never references the memory profiler).
    let expected = [
        "cpu.folded",
        "cpu.pb.gz",
        "cpu.svg",
        "faults.folded",
        "faults.pb.gz",
        "faults.svg",
        "goroutines-diff.svg",
        "goroutines.folded",
        "goroutines.pb.gz",
        "goroutines.svg",
        "goroutines.txt",
        "gowait.folded",
        "gowait.pb.gz",
        "gowait.svg",
        "offcpu.folded",
        "offcpu.pb.gz",
        "offcpu.svg",
        "summary.json",
    ];
    assert_eq!(files, expected);
    let name = bundle.dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("gospin-{pid}-")) && name.ends_with("Z-record"), "bundle name {name}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "exactly one entry in --out");
    let summary = bundle.summary();
    for field in ["pid", "comm", "exe", "kernel", "agent_version", "frequency_hz", "window", "cpu", "offcpu", "dropped"]
    {
        assert!(!summary[field].is_null(), "summary.json lacks {field}");
    }
    assert_eq!(summary["pid"], fixture.pid);
    assert!(summary["exe"].as_str().unwrap().ends_with("gospin"));
}

#[test]
fn target_exit_mid_recording_still_writes_the_bundle() {
    if !require_bpf("target_exit_mid_recording_still_writes_the_bundle") {
        return;
    }
    let mut fixture = Fixture::start("two_threads", &[]);
    let out = scratch_dir("exit");
    let pid = fixture.pid.to_string();
    let mut agent =
        autodump_tests::RunningAgent::start(&["--pid", &pid, "--duration", "30s", "--out", out.to_str().unwrap()]);
    agent.wait_recording(Duration::from_secs(30));
    // Two CPU seconds of the target's own (a second or more of `hot`'s), not two of the wall
    // clock: beside a test that favours its CPU, two wall seconds gave `hot` too few samples.
    autodump_tests::warm_up(fixture.pid, 2.0);
    fixture.kill();
    let started = std::time::Instant::now();
    let run = agent.finish();
    assert!(started.elapsed() < Duration::from_secs(10), "the agent must stop soon after the target exits");
    let bundle = run.bundle();
    let summary = bundle.summary();
    assert_eq!(summary["target"]["exited"], true);
    assert!(summary["notes"][0].as_str().unwrap().contains("exited"));
    assert!(bundle.weight_in("cpu.folded", "hot", "hot_spin") > 50, "what was recorded before the exit is kept");
}
