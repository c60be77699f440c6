//! Go services from outside: the goroutine count read from the live process matches what the
//! program itself reports, the goroutines rule fires on a leak, the dump counts the leaked
//! goroutines at their blocking function, and non-Go or stripped binaries degrade cleanly.

use std::{process::Command, time::Duration};

use autodump_tests::{require_bpf, run_agent, scratch_dir, Fixture, RunningAgent};

/// The agent's readings and the program's own `runtime.NumGoroutine()` within 2%.
const COUNT_TOLERANCE: f64 = 0.02;
const LEAKED: u64 = 5000;

#[test]
fn goroutine_leak_is_counted_exactly_and_dumped() {
    if require_bpf("goroutine_leak_is_counted_exactly_and_dumped") {
        leak_is_counted_exactly_and_dumped("goleak", "go_leak");
    }
}

/// The same against a runtime of today's layout: Debian 12's Go 1.19 keeps the free counts in
/// `gFree.n`, newer runtimes in list sizes (`gFree.stack.size`, `p.gFree.size`).
#[test]
fn the_same_with_the_newest_go_in_debian() {
    if !require_bpf("the_same_with_the_newest_go_in_debian") {
        return;
    }
    let Some((_, version)) = autodump_tests::fixture::newer_go() else {
        let why = "the newer Go is not in target/go-toolchains (`cargo xtask setup` fetches it)";
        autodump_tests::skip("the_same_with_the_newest_go_in_debian", why);
        return;
    };
    eprintln!("fixture built with {version}");
    leak_is_counted_exactly_and_dumped("goleak-newest-go", "go_leak_newest");
}

/// A leak of `LEAKED` goroutines in `fixture`: the goroutines rule fires, our counts equal the
/// program's own `NumGoroutine()`, and the dump finds every leaked goroutine where it blocks.
fn leak_is_counted_exactly_and_dumped(fixture: &str, scratch: &str) {
    let fixture = Fixture::start(fixture, &["6", &(LEAKED / 1000).to_string()]);
    let out = scratch_dir(scratch);
    let pid = fixture.pid.to_string();
    let mut agent = RunningAgent::start(&[
        "--pid",
        &pid,
        "--out",
        out.to_str().unwrap(),
        "--interval",
        "500ms",
        "--warmup",
        "3s",
        "--lookback",
        "10s",
        "--after",
        "8s",
        "--rule",
        "goroutines:min=500,diff=50%,abs=3000",
        "--rule",
        "cpu:off",
    ]);
    agent.wait_recording(Duration::from_secs(30));
    let bundle = agent.expect_bundle(Duration::from_secs(40), "a goroutines rule bundle");
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(0));
    let summary = bundle.summary();
    assert_eq!(summary["reason"]["metric"], "goroutines");
    assert_eq!(summary["go"]["goroutines_available"], true);

    // The program's own readings: (unix seconds, NumGoroutine), every 250 ms.
    let mut own = Vec::new();
    while let Some(line) = fixture.next_line(Duration::from_millis(100)) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"count") {
            own.push((f[1].parse::<f64>().unwrap(), f[2].parse::<f64>().unwrap()));
        }
    }
    // Compare where the program's count was the same just before and just after our reading.
    let (mut compared, mut exact, mut worst) = (0, 0, 0.0f64);
    for m in summary["metrics"].as_array().unwrap() {
        let (t, ours) = (m["t"].as_f64().unwrap(), m["goroutines"].as_f64().expect("goroutines sampled"));
        let before = own.iter().rev().find(|o| o.0 <= t);
        let after = own.iter().find(|o| o.0 > t);
        if let (Some(b), Some(a)) = (before, after) {
            if b.1 == a.1 && a.0 - b.0 < 0.5 {
                let error = (ours - b.1).abs() / b.1;
                assert!(error <= COUNT_TOLERANCE, "at {t:.2}: we read {ours}, the program says {}", b.1);
                compared += 1;
                exact += usize::from(ours == b.1);
                worst = worst.max(error);
            }
        }
    }
    eprintln!(
        "{compared} readings compared: {exact} equal to the program's own count, worst off by {:.3}%",
        worst * 100.0
    );
    assert!(compared >= 8, "too few steady moments to compare ({compared})");

    // The dump, taken when the bundle is written (after the leak), counts every leaked goroutine.
    let leaked = bundle.weight("goroutines.folded", |f| f.frames.iter().any(|x| x == "main.notifier")) as f64;
    eprintln!("dump: {leaked} goroutines in main.notifier, {LEAKED} leaked");
    assert!((leaked - LEAKED as f64).abs() <= LEAKED as f64 * COUNT_TOLERANCE, "{leaked} goroutines in main.notifier");
    let first = bundle.folded("goroutines.folded")[0].clone();
    assert_eq!(first.frames[0], "chan receive", "the root frame is the wait reason");
    let text = bundle.read("goroutines.txt");
    // As Go's `debug=2`: one goroutine at a time, its state, then each frame and its place.
    assert!(text.starts_with("goroutine 1 ["), "{}", &text[..80.min(text.len())]);
    let notifiers = text.split("\n\n").filter(|g| g.contains("\nmain.notifier(...)\n")).count() as f64;
    assert!(
        (notifiers - LEAKED as f64).abs() <= LEAKED as f64 * COUNT_TOLERANCE,
        "{notifiers} listed in main.notifier"
    );
    assert!(text.contains(" [chan receive]:\nruntime.gopark(...)\n"), "the state heads each goroutine");
    bundle.assert_well_formed_xml("goroutines.svg");
    if !autodump_tests::host_tool_available("go tool pprof") {
        return;
    }
    let top = Command::new("go")
        .args(["tool", "pprof", "-top", "-symbolize=none"])
        .arg(bundle.dir.join("goroutines.pb.gz"))
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(top.status.success() && String::from_utf8_lossy(&top.stdout).contains("runtime.gopark"));
}

#[test]
fn non_go_programs_have_no_go_section() {
    if !require_bpf("non_go_programs_have_no_go_section") {
        return;
    }
    let out = scratch_dir("go_degrade");
    let c = Fixture::start("two_threads", &[]);
    let bundle = run_agent(&["--pid", &c.pid.to_string(), "--duration", "2s", "--out", out.to_str().unwrap()]).bundle();
    assert!(bundle.summary().get("go").is_none(), "no Go section for a C program");
    assert!(!bundle.dir.join("goroutines.txt").exists());
}

/// Stripped with `-ldflags=-s -w`, as Go services ship: no symbol table, no DWARF. The globals
/// come from the runtime's instructions, the layouts from the table for the binary's Go version:
/// the count is exact and the dump complete, exactly as unstripped.
#[test]
fn stripped_goroutine_leak_is_counted_exactly_and_dumped() {
    if require_bpf("stripped_goroutine_leak_is_counted_exactly_and_dumped") {
        leak_is_counted_exactly_and_dumped("goleak-stripped", "go_leak_stripped");
    }
}

#[test]
fn the_same_stripped_with_the_newest_go_in_debian() {
    stripped_with("newest", "the_same_stripped_with_the_newest_go_in_debian");
}

/// Debian 13's Go (1.24 today): a runtime layout between 1.19's and today's.
#[test]
fn the_same_stripped_with_debian_13s_go() {
    stripped_with("middle", "the_same_stripped_with_debian_13s_go");
}

fn stripped_with(toolchain: &str, test: &str) {
    if !require_bpf(test) {
        return;
    }
    let Some((_, version)) = autodump_tests::fixture::go_toolchain(toolchain) else {
        let why = format!("the {toolchain} Go is not in target/go-toolchains (`cargo xtask setup` fetches it)");
        autodump_tests::skip(test, &why);
        return;
    };
    eprintln!("fixture built with {version}, -ldflags=-s -w");
    leak_is_counted_exactly_and_dumped(
        &format!("goleak-stripped-{toolchain}-go"),
        &format!("go_leak_stripped_{toolchain}"),
    );
}
