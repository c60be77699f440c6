//! A Go service's heap profile read from outside: the same, function by function, as the
//! program's own `/debug/pprof/heap` (Go 1.19 and the newest Go, unstripped and stripped); the
//! growth since before the window; a summary that says why when the binary has memory profiling
//! off, where the page-fault profile still names the leak; and an rss rule's bundle.

use std::{collections::BTreeMap, io::Read, path::Path, process::Command, time::Duration};

use autodump_tests::{assert_close, require_bpf, scratch_dir, Fixture, RunningAgent};

const LEAK: &str = "main.newPublisherPerMessage";
/// Per function, ours within this share of the program's own.
const TOLERANCE: f64 = 0.10;

/// `GET /debug/pprof/heap` from the fixture's own server, written to `file`.
fn fetch_heap(address: &str, file: &Path) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the fixture's pprof server");
    use std::io::Write;
    write!(stream, "GET /debug/pprof/heap HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let body = response.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response") + 4;
    std::fs::write(file, &response[body..]).unwrap();
}

/// `go tool pprof -top` of `file` (with `-diff_base` when given): flat bytes by function.
fn top(file: &Path, diff_base: Option<&Path>) -> BTreeMap<String, f64> {
    let mut cmd = Command::new("go");
    cmd.args(["tool", "pprof", "-top", "-unit=B", "-sample_index=inuse_space"]);
    if let Some(base) = diff_base {
        cmd.arg("-diff_base").arg(base);
    }
    let out = cmd.arg(file).output().expect("go tool pprof");
    assert!(out.status.success(), "go tool pprof: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let bytes = fields.first()?.trim_end_matches('B').parse::<f64>().ok()?;
            Some((fields.get(5..)?.join(" "), bytes))
        })
        .collect()
}

/// Waits for the fixture's "gc done" after asking for a collection, which publishes the profile.
fn collect_garbage(fixture: &mut Fixture) {
    fixture.send("gc");
    let done = (0..20).find_map(|_| fixture.next_line(Duration::from_secs(5)).filter(|l| l == "gc done"));
    assert!(done.is_some(), "the fixture did not collect");
}

fn matches_own_pprof(name: &str) {
    let mut fixture = Fixture::start(name, &["100"]);
    let line = fixture.next_line(Duration::from_secs(10)).expect("the pprof address");
    let address = line.strip_prefix("pprof ").expect("pprof ADDRESS").to_string();
    std::thread::sleep(Duration::from_secs(1));
    collect_garbage(&mut fixture);
    // What the program itself says now, which is what the agent's first snapshot will read.
    let out = scratch_dir(&format!("go_heap_{name}"));
    let theirs_base = out.join("theirs-base.pb.gz");
    fetch_heap(&address, &theirs_base);
    let pid = fixture.pid.to_string();
    let args = ["--pid", &pid, "--duration", "5s", "--heap-every", "1s", "--out", out.to_str().unwrap()];
    let mut agent = RunningAgent::start(&args);
    agent.wait_recording(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // The profile our bundle reads at its end, and the program's own read after it, are the
    // same: no other collection runs in between (the fixture runs with GOGC=off).
    collect_garbage(&mut fixture);
    let bundle = agent.finish().bundle();
    let theirs = out.join("theirs.pb.gz");
    fetch_heap(&address, &theirs);

    let summary = bundle.summary();
    let heap = &summary["go"]["heap"];
    assert_eq!(heap["available"], true, "{heap}");
    assert_eq!(heap["rate"], 512 * 1024, "the default MemProfileRate, read from the target");
    let (ours, own) = (top(&bundle.dir.join("heap.pb.gz"), None), top(&theirs, None));
    let first = ours.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(f, _)| f.as_str());
    assert_eq!(first, Some(LEAK), "{ours:?}");
    let total: f64 = own.values().sum();
    // Functions with a real share. One-sample buckets (512 KiB) allocated in inlined library
    // init code can land on the inlined callee or its caller depending on how the call site's
    // PC is expanded; they are left out here.
    for (function, &bytes) in own.iter().filter(|(_, &b)| b >= 0.05 * total) {
        let mine = ours.get(function).copied().unwrap_or(0.0);
        eprintln!("{name} {function}: ours {mine:.0} B, /debug/pprof/heap {bytes:.0} B");
        assert_close(&format!("{name}: {function} in use"), mine, bytes, TOLERANCE);
    }
    // What grew between the snapshot from before the window and the end: the leak, as much as
    // the program's own profiles say it grew between the same two collections.
    let grew = top(&bundle.dir.join("heap.pb.gz"), Some(&bundle.dir.join("heap-base.pb.gz")));
    let own_growth = top(&theirs, Some(&theirs_base));
    let (ours, own) = (grew.get(LEAK).copied().unwrap_or(0.0), own_growth.get(LEAK).copied().unwrap_or(0.0));
    assert!(own > 1e6, "the leak grew by {own:.0} B: {own_growth:?}");
    assert_close(&format!("{name}: {LEAK} growth since heap-base"), ours, own, TOLERANCE);
    bundle.assert_well_formed_xml("heap-diff.svg");
}

#[test]
fn go_heap_matches_the_programs_own_pprof() {
    if !require_bpf("go_heap_matches_the_programs_own_pprof") {
        return;
    }
    matches_own_pprof("gopublisher");
    matches_own_pprof("gopublisher-stripped-newest-go");
}

#[test]
fn memory_profiling_off_is_said_and_faults_still_name_the_leak() {
    if !require_bpf("memory_profiling_off_is_said_and_faults_still_name_the_leak") {
        return;
    }
    let fixture = Fixture::start("gopublisher_plain-stripped", &["100"]);
    let out = scratch_dir("go_heap_off");
    let pid = fixture.pid.to_string();
    // Every 3rd fault: enough of them in the kernel matrix's slow guests too.
    let args = ["--pid", &pid, "--duration", "4s", "--fault-period", "3", "--out", out.to_str().unwrap()];
    let run = autodump_tests::run_agent(&args);
    let bundle = run.bundle();
    let summary = bundle.summary();
    let heap = &summary["go"]["heap"];
    assert_eq!(heap["available"], false, "{heap}");
    let why = heap["reason"].as_str().unwrap();
    assert!(why.contains("disableMemoryProfiling"), "{why}");
    assert!(summary["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("no Go heap profile")));
    assert!(!bundle.dir.join("heap.pb.gz").exists());
    let faults = bundle.folded("faults.folded");
    let total: u64 = faults.iter().map(|f| f.weight).sum();
    let through = |f: &autodump_tests::bundle::Folded| f.frames.iter().any(|x| x == LEAK);
    let leak: u64 = faults.iter().filter(|f| through(f)).map(|f| f.weight).sum();
    // The runtime faults too (its own structures, goroutine stacks, the collector's work): in
    // the matrix's slow guests, where the program leaks slowly, 21% of faults were the leak's.
    assert!(leak as f64 >= 0.15 * total as f64, "{LEAK} in {leak} of {total} faults");
    let under_malloc = faults.iter().any(|f| {
        let at = f.frames.iter().position(|x| x == LEAK);
        at.is_some_and(|at| f.frames[at..].iter().any(|x| x == "runtime.mallocgc"))
    });
    assert!(under_malloc, "a fault under {LEAK} → runtime.mallocgc");
}

#[test]
fn go_rss_bundle_holds_the_heap() {
    if !require_bpf("go_rss_bundle_holds_the_heap") {
        return;
    }
    let mut fixture = Fixture::start("gopublisher", &["200"]);
    let _address = fixture.next_line(Duration::from_secs(10));
    let out = scratch_dir("go_heap_rule");
    let pid = fixture.pid.to_string();
    let mut agent = RunningAgent::start(&[
        "--pid",
        &pid,
        "--out",
        out.to_str().unwrap(),
        "--warmup",
        "2s",
        "--after",
        "1s",
        "--heap-every",
        "1s",
        "--rule",
        "rss:min=1MiB,abs=64MiB",
    ]);
    // The fixture collects only when asked: once a second, as a service's GC would.
    let bundle = (0..60)
        .find_map(|_| {
            fixture.send("gc");
            agent.next_bundle(Duration::from_secs(1))
        })
        .expect("the rss rule's bundle");
    let summary = bundle.summary();
    assert_eq!(summary["reason"]["metric"], "rss");
    let ours = top(&bundle.dir.join("heap.pb.gz"), None);
    let first = ours.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(f, _)| f.as_str());
    assert_eq!(first, Some(LEAK), "{ours:?}");
    let index = bundle.read("index.html");
    let at = |what: &str| index.find(what).unwrap_or_else(|| panic!("index.html lacks {what}"));
    assert!(at("heap.svg") < at("cpu.svg") && at("heap-diff.svg") < at("cpu.svg"), "memory first");
}
