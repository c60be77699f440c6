//! Memory incidents: the page-fault profile names what grew resident memory, in our C leak and in
//! Debian's python3 (against `perf record -e page-faults --call-graph dwarf`), and an rss bundle
//! says which mappings grew and shows memory first.

use std::time::Duration;

use autodump_tests::{
    assert_close, bundle::Folded, perf::PerfRecording, require_bpf, run_agent, scratch_dir, Fixture, RunningAgent,
};

/// We record every 13th fault (a prime: python's 35 faults per two bytearrays would lock onto
/// a period of 5 or 7); perf records every one.
const FAULT_PERIOD: &str = "13";
/// Shares within this many points of perf's.
const SHARE_POINTS: f64 = 0.05;

/// Weighted share of `folded` whose frames include `function`.
fn share_through(folded: &[Folded], function: &str) -> f64 {
    let total: u64 = folded.iter().map(|f| f.weight).sum();
    let with: u64 = folded.iter().filter(|f| f.frames.iter().any(|x| x == function)).map(|f| f.weight).sum();
    with as f64 / total.max(1) as f64
}

#[test]
fn native_leak_is_named_and_churn_barely_shows() {
    if !require_bpf("native_leak_is_named_and_churn_barely_shows") {
        return;
    }
    // 100 leaks and 100 churns of 64 KiB a second, on two threads.
    let fixture = Fixture::start("memleak", &["100"]);
    let out = scratch_dir("memory_native");
    let pid = fixture.pid.to_string();
    // Every 17th fault: about 560 recorded, for the comparison with the heap's growth below.
    let args = ["--pid", &pid, "--duration", "6s", "--fault-period", "17", "--out", out.to_str().unwrap()];
    let bundle = run_agent(&args).bundle();
    let faults = bundle.folded("faults.folded");
    let summary = bundle.summary();
    let (leak, churn) = if summary["probes"]["unwinding"]["mode"] == "cfi" {
        (share_through(&faults, "leak_here"), share_through(&faults, "churn_here"))
    } else {
        // Before 5.17, by frame pointer: glibc's memset has no frame of its own, so the walk
        // from inside it skips its caller (a known limit); the threads still tell them apart.
        let of_thread = |t: &str| faults.iter().filter(|f| f.frames[0] == t).map(|f| f.weight).sum::<u64>();
        let total = faults.iter().map(|f| f.weight).sum::<u64>().max(1) as f64;
        (of_thread("leaker") as f64 / total, of_thread("churner") as f64 / total)
    };
    eprintln!("faults through leak_here {leak:.3}, churn_here {churn:.3}");
    assert!(leak >= 0.9, "leak_here holds {leak:.3} of the faults");
    assert!(churn <= leak * 0.05, "churn_here {churn:.3} against leak_here {leak:.3}");
    let f = &summary["faults"];
    assert_eq!(f["period"], 17);
    // The faults stand for the memory the kernel says the heap grew by (smaps, same window).
    let memory = &summary["memory"];
    let heap = memory["grown_mappings"].as_array().unwrap().iter().find(|g| g["mapping"] == "[heap]");
    let heap_grew = heap.unwrap_or_else(|| panic!("the heap grew: {memory}"))["grown_bytes"].as_f64().unwrap();
    assert_close("page faults × 4 KiB against the heap's growth", f["approx_bytes"].as_f64().unwrap(), heap_grew, 0.2);
    assert!(memory["rss_end"]["anon_bytes"].as_u64() > memory["rss_start"]["anon_bytes"].as_u64());
    // glibc grows the main thread's arena with brk: the faulting pages are in [heap].
    let heap_faults = f["by_class"]["heap"].as_u64().unwrap_or(0) as f64;
    assert!(heap_faults >= 0.9 * f["faults"].as_u64().unwrap() as f64, "{f}");
    let leaves: Vec<&String> = faults.iter().filter_map(|s| s.frames.last()).collect();
    assert!(leaves.iter().any(|l| *l == "[heap]"), "the kind of memory is each stack's leaf: {leaves:?}");
    let listed: Vec<&str> =
        summary["profiles"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    // Wake-ups are listed where a thread was woken while recorded (the leak's main thread sleeps),
    // on kernels that take the wake-up probe (not 5.10 yet).
    match autodump_tests::kernel_has_bpf_loop() {
        true => assert_eq!(listed, ["cpu", "off_cpu", "wakeups", "faults"]),
        false => assert_eq!(listed, ["cpu", "off_cpu", "faults"]),
    }
    assert!(std::fs::metadata(bundle.dir.join("faults.pb.gz")).unwrap().len() > 0);
    bundle.assert_well_formed_xml("faults.svg");
}

#[test]
fn python_allocations_match_perf_dwarf() {
    if !require_bpf("python_allocations_match_perf_dwarf") {
        return;
    }
    // Debian's python3.11 (no frame pointers) keeps 64 KiB bytearrays: glibc's malloc and
    // memset, under CPython's own functions; about 1,700 faults a second.
    let script = "import time\nkeep = []\nwhile True:\n    keep.append(bytearray(65536))\n    time.sleep(0.01)\n";
    let mut python = std::process::Command::new("python3").args(["-c", script]).spawn().expect("python3");
    std::thread::sleep(Duration::from_millis(500));
    let out = scratch_dir("memory_python");
    let seconds = 5;
    let perf = PerfRecording::start_faults(python.id(), seconds, &out);
    let (pid, duration) = (python.id().to_string(), format!("{seconds}s"));
    let out_dir = out.to_str().unwrap();
    let run = run_agent(&["--pid", &pid, "--duration", &duration, "--fault-period", FAULT_PERIOD, "--out", out_dir]);
    let perf = perf.finish();
    let _ = python.kill();
    let _ = python.wait();
    let faults = run.bundle().folded("faults.folded");
    assert!(perf.len() > 200, "perf recorded {} faults", perf.len());
    // Every function on some of perf's stacks but not all of them (the ones that tell stacks
    // apart), that we name the same way (glibc's aliases differ: perf's `malloc` is our
    // `__GI___libc_malloc`), compared share by share.
    let mut functions: Vec<&str> = perf.iter().flatten().map(String::as_str).collect();
    functions.sort_unstable();
    functions.dedup();
    let mut compared = 0;
    for function in functions {
        let theirs = autodump_tests::perf::share(&perf, |f| f == function);
        let ours = share_through(&faults, function);
        if !(0.01..0.995).contains(&theirs) || ours == 0.0 {
            continue;
        }
        eprintln!("{function}: ours {ours:.3}, perf --call-graph dwarf {theirs:.3}");
        assert!((ours - theirs).abs() <= SHARE_POINTS, "{function}: ours {ours:.3}, perf {theirs:.3}");
        compared += 1;
    }
    assert!(compared >= 1, "no function to compare");
    let ours_root = share_through(&faults, "__libc_start_call_main");
    assert!(ours_root >= 0.9, "{ours_root:.3} of fault stacks reach main");
}

#[test]
fn rss_bundle_shows_memory_first() {
    if !require_bpf("rss_bundle_shows_memory_first") {
        return;
    }
    // 200 leaks of 64 KiB a second: 12.5 MiB/s, past 48 MiB within about 4 s.
    let fixture = Fixture::start("memleak", &["200"]);
    let out = scratch_dir("memory_rule");
    let pid = fixture.pid.to_string();
    let mut agent = RunningAgent::start(&[
        "--pid",
        &pid,
        "--out",
        out.to_str().unwrap(),
        "--warmup",
        "2s",
        "--after",
        "2s",
        "--smaps-every",
        "2s",
        "--rule",
        "rss:min=1MiB,abs=48MiB",
    ]);
    let bundle = agent.expect_bundle(Duration::from_secs(60), "the rss rule's bundle");
    let summary = bundle.summary();
    assert_eq!(summary["reason"]["metric"], "rss");
    let grown = &summary["memory"]["grown_mappings"];
    assert_eq!(grown[0]["mapping"], "[heap]", "{grown}");
    let index = bundle.read("index.html");
    let at = |what: &str| index.find(what).unwrap_or_else(|| panic!("index.html lacks {what}"));
    assert!(at("<h2>Memory</h2>") < at("faults.svg"));
    assert!(at("faults.svg") < at("cpu.svg"), "memory first in an rss bundle");
    let faults = bundle.folded("faults.folded");
    assert!(share_through(&faults, "leak_here") >= 0.9);
    assert!(bundle.read("metrics.svg").contains("rss anon"));
}
