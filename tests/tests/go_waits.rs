//! Where a Go service's goroutines wait, read from outside, against Go's own profiles of the
//! same process at the same time: the block profile (shares of blocking time by function), the
//! goroutine profile (counts by function) and the traceback's wait durations. A fixture with
//! known waits, built plainly with Debian 12's Go and stripped with the newest Go; and Debian's
//! Prometheus under load, which nobody here wrote.

use std::{collections::HashMap, time::Duration};

use autodump_tests::{
    gopprof::{self, own_function},
    in_vm, require_bpf, run_agent, scratch_dir, servers, unix_now, Bundle, Fixture, RunningAgent,
};

/// Function shares of blocking time agree within this many points (for functions with at
/// least `SHARE_FLOOR` of it on either side).
const SHARE_TOLERANCE: f64 = 0.10;
const SHARE_FLOOR: f64 = 0.05;
/// Goroutines leaked before the window, and during it.
const LEAKED_BEFORE: u64 = 20;
const LEAKED_DURING: u64 = 30;
/// Wait reasons Go's block profile records a wait under (when it ends).
const BLOCKING: &[&str] = &[
    "chan receive",
    "chan send",
    "select",
    "semacquire",
    "sync.Mutex.Lock",
    "sync.RWMutex.Lock",
    "sync.RWMutex.RLock",
    "sync.WaitGroup.Wait",
    "sync.Cond.Wait",
];

#[test]
fn goroutine_waits_match_gos_own_profiles() {
    if require_bpf("goroutine_waits_match_gos_own_profiles") {
        waits_match("gowaits", "go_waits", false);
    }
}

/// Stripped (`-s -w`), and with the newest Go's runtime layout; and waits past a minute, which
/// Go's traceback gives in minutes.
#[test]
fn the_same_stripped_with_the_newest_go_and_how_long_they_waited() {
    if !require_bpf("the_same_stripped_with_the_newest_go_and_how_long_they_waited") {
        return;
    }
    if autodump_tests::fixture::newer_go().is_none() {
        let why = "the newer Go is not in target/go-toolchains (`cargo xtask setup` fetches it)";
        autodump_tests::skip("the_same_stripped_with_the_newest_go_and_how_long_they_waited", why);
        return;
    }
    waits_match("gowaits-stripped-newest-go", "go_waits_stripped", true);
}

fn leak(port: u16, n: u64) {
    for _ in 0..n {
        assert_eq!(gopprof::get(port, "/leak").trim(), "leaked");
    }
}

/// Frames of a folded goroutine stack, innermost first, without the state and pseudo frames.
fn function_of(frames: &[String]) -> String {
    let names: Vec<&str> = frames[1..].iter().rev().map(|f| f.as_str()).filter(|f| !f.starts_with('[')).collect();
    own_function(&names).to_string()
}

fn waits_match(name: &str, scratch: &str, durations: bool) {
    let fixture = Fixture::start(name, &[]);
    let port: u16 =
        fixture.next_line(Duration::from_secs(5)).and_then(|l| l.strip_prefix("port ")?.parse().ok()).unwrap();
    let leaked_at = unix_now();
    leak(port, LEAKED_BEFORE);
    let block_before = gopprof::get(port, "/debug/pprof/block?debug=1");
    let out = scratch_dir(scratch);
    let pid = fixture.pid.to_string();
    let mut agent = RunningAgent::start(&["--pid", &pid, "--duration", "10s", "--out", out.to_str().unwrap()]);
    // More leak during the window, well after its first snapshot (a slow guest starts late):
    // what grew.
    agent.wait_recording(Duration::from_secs(60));
    let during = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        leak(port, LEAKED_DURING);
    });
    let bundle = agent.finish().bundle();
    let block_after = gopprof::get(port, "/debug/pprof/block?debug=1");
    let go_goroutines = gopprof::goroutines_by_function(&gopprof::get(port, "/debug/pprof/goroutine?debug=1"));
    during.join().unwrap();

    let summary = bundle.summary();
    let snapshots = &summary["go"]["goroutine_snapshots"];
    // A snapshot each tick, a tick a second; in a kernel-matrix guest under TCG a tick's first
    // symbolization takes over a second and delays the next (7 of 10 seen).
    let least = if in_vm() { 6 } else { 8 };
    assert!(snapshots["snapshots"].as_u64().unwrap() >= least, "a snapshot a second: {snapshots}");
    assert_eq!(snapshots["goroutines"], snapshots["read"], "all read, none sampled: {snapshots}");

    // Shares of blocking time: ours over the waits Go's block profile records, which it records
    // when they end (a goroutine leaked for ever never is).
    let mut ours: HashMap<String, f64> = HashMap::new();
    for f in bundle.folded("gowait.folded") {
        let function = function_of(&f.frames);
        if BLOCKING.contains(&f.frames[0].as_str()) && function != "main.leakyHandler.func1" {
            *ours.entry(function).or_default() += f.weight as f64;
        }
    }
    let (ours, go) =
        (gopprof::shares(&ours), gopprof::shares(&gopprof::delta_by_function(&block_before, &block_after)));
    eprintln!("{name}: blocking time by function, ours against Go's block profile:");
    let mut functions: Vec<&String> = ours.keys().chain(go.keys()).collect();
    functions.sort();
    functions.dedup();
    for f in functions {
        let (a, b) = (ours.get(f).copied().unwrap_or(0.0), go.get(f).copied().unwrap_or(0.0));
        if a >= SHARE_FLOOR || b >= SHARE_FLOOR {
            eprintln!("  {f}: {:.1}% vs {:.1}%", a * 100.0, b * 100.0);
            assert!((a - b).abs() <= SHARE_TOLERANCE, "{f}: ours {a:.3}, Go's {b:.3}");
        }
    }
    // 99 of 100 goroutines wait on the mutex, 50 on the channel: about two thirds and a third.
    let lock = ours.get("main.holdLock").copied().unwrap_or(0.0);
    assert!((0.55..0.78).contains(&lock), "main.holdLock holds {lock:.3} of the blocking time");

    // Goroutine counts by function, ours at the window's end and Go's just after.
    let mut counts: HashMap<String, u64> = HashMap::new();
    for f in bundle.folded("goroutines.folded") {
        *counts.entry(function_of(&f.frames)).or_default() += f.weight;
    }
    eprintln!("{name}: goroutines by function, ours against Go's: {counts:?} / {go_goroutines:?}");
    let count = |m: &HashMap<String, u64>, f: &str| m.get(f).copied().unwrap_or(0);
    let leaked = LEAKED_BEFORE + LEAKED_DURING;
    assert_eq!(count(&counts, "main.leakyHandler.func1"), leaked);
    assert_eq!(count(&go_goroutines, "main.leakyHandler.func1"), leaked);
    for (f, n) in [("main.holdLock", 100), ("main.waitChan", 50)] {
        // Between two calls a goroutine is for a moment in its loop, not the function.
        for (whose, m) in [("ours", &counts), ("Go's", &go_goroutines)] {
            assert!(count(m, f).abs_diff(n) <= 2, "{whose} count of {f}: {} (expected {n})", count(m, f));
        }
    }

    // What grew: the leak during the window, first, from 20 to 50.
    let grew = &summary["go"]["goroutines_grew"][0];
    assert!(
        grew["stack"]
            .as_str()
            .unwrap()
            .ends_with("main.leakyHandler.func1;runtime.chanrecv1;runtime.chanrecv;runtime.gopark"),
        "{grew}"
    );
    assert_eq!((grew["before"].as_u64(), grew["after"].as_u64()), (Some(LEAKED_BEFORE), Some(leaked)), "{grew}");
    assert_eq!(grew["state"], "chan receive");
    bundle.assert_well_formed_xml("goroutines-diff.svg");
    assert!(bundle.read("goroutines-diff.svg").contains("main.leakyHandler.func1"));
    assert!(
        summary["verdict"]
            .as_str()
            .unwrap()
            .contains("of goroutine time waiting on [chan receive] in main.leakyHandler.func1")
            || summary["verdict"].as_str().unwrap().contains("in main.holdLock"),
        "{}",
        summary["verdict"]
    );
    // The runtime's idle threads are set apart in the thread-level off-CPU profile.
    let idle = bundle.weight("offcpu.folded", |f| f.frames.get(1).is_some_and(|x| x == "[go: idle scheduler thread]"));
    let idle_us = summary["offcpu"]["idle_go_threads_us"].as_u64().unwrap_or(0);
    assert!(
        idle > 0 && idle.abs_diff(idle_us) <= idle / 100 + 100,
        "{idle} µs in offcpu.folded, {idle_us} µs in the summary"
    );

    if durations {
        how_long_they_waited(&fixture, port, leaked_at, scratch);
    }
}

/// Past a minute, our dump and Go's traceback give the same whole minutes for each leaked
/// goroutine, and the summary's longest wait is the leak's age within a snapshot interval plus
/// Go's own rounding (its GC notes a wait when it next runs: every second here).
fn how_long_they_waited(fixture: &Fixture, port: u16, leaked_at: f64, scratch: &str) {
    std::thread::sleep(Duration::from_secs_f64((leaked_at + 70.0 - unix_now()).max(0.0)));
    let out = scratch_dir(&format!("{scratch}_durations"));
    let pid = fixture.pid.to_string();
    let bundle: Bundle = run_agent(&["--pid", &pid, "--duration", "3s", "--out", out.to_str().unwrap()]).bundle();
    let go = gopprof::goroutine_headers(&gopprof::get(port, "/debug/pprof/goroutine?debug=2"));
    let ours = gopprof::goroutine_headers(&bundle.read("goroutines.txt"));
    let text = bundle.read("goroutines.txt");
    let leaked: Vec<u64> = text
        .split("\n\n")
        .filter(|g| g.contains("main.leakyHandler.func1"))
        .filter_map(|g| g.strip_prefix("goroutine ")?.split_once(' ')?.0.parse().ok())
        .collect();
    assert_eq!(leaked.len() as u64, LEAKED_BEFORE + LEAKED_DURING);
    for goid in leaked {
        assert_eq!(ours[&goid], ("chan receive".to_string(), 1), "goroutine {goid}");
        assert_eq!(ours.get(&goid), go.get(&goid), "goroutine {goid}: ours against Go's traceback");
    }
    let summary = bundle.summary();
    let age = summary["window"]["end"].as_f64().unwrap() - leaked_at;
    let longest = summary["go"]["top_waits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["function"] == "main.leakyHandler.func1")
        .map(|w| w["waiting_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    eprintln!("the first leaked goroutines waited {longest:.1} s by our reading, {age:.1} s since the leak");
    assert!(longest <= age + 0.5 && longest >= age - 2.5, "waited {longest:.1} s, leaked {age:.1} s ago");
}

/// Debian's Prometheus, under a load of queries: our goroutine counts by function agree with its
/// own `/debug/pprof/goroutine`, and its waits are named after its own code, not the runtime's
/// idle threads.
#[test]
fn a_go_server_nobody_here_wrote() {
    if !require_bpf("a_go_server_nobody_here_wrote") {
        return;
    }
    let dir = scratch_dir("go_waits_prometheus");
    let prometheus =
        servers::PrometheusServer::start(&dir.join("prometheus"), &[], "groups: []\n", servers::free_port());
    let port = prometheus.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = gopprof::get(port, "/api/v1/query?query=up");
                    let _ = gopprof::get(port, "/metrics");
                }
            })
        })
        .collect();
    // The load ends shortly before the window does, so that the two reads of the goroutines
    // (ours as the window closes, Go's just after) see the server at rest.
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(8));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let out = dir.join("out");
    let pid = prometheus.pid().to_string();
    let bundle = run_agent(&["--pid", &pid, "--duration", "10s", "--out", out.to_str().unwrap()]).bundle();
    let go = gopprof::goroutines_by_function(&gopprof::get(port, "/debug/pprof/goroutine?debug=1"));
    stopper.join().unwrap();
    load.into_iter().for_each(|t| t.join().unwrap());

    assert_prometheus_goroutines_match(&bundle, &go);
    let gowait = bundle.folded("gowait.folded");
    let own = gowait.iter().filter(|f| f.frames.iter().any(|x| x.starts_with("github.com/prometheus/"))).count();
    assert!(own > 0, "no goroutine waits in Prometheus's own code");
    let verdict = bundle.summary()["verdict"].as_str().unwrap().to_string();
    assert!(!verdict.contains("runtime.futex") && !verdict.contains("runtime.usleep"), "{verdict}");
}

/// Prometheus's own goroutines (not the connections of a load, which come and go between two
/// reads, nor the one answering Go's profile request), counted by function in `bundle`: one by
/// one, the same as Go's goroutine profile `go` says.
fn assert_prometheus_goroutines_match(bundle: &Bundle, go: &HashMap<String, u64>) {
    let summary = bundle.summary();
    assert_eq!(summary["go"]["goroutines_available"], true, "{}", summary["go"]);
    let mut ours: HashMap<String, u64> = HashMap::new();
    for f in bundle.folded("goroutines.folded") {
        *ours.entry(function_of(&f.frames)).or_default() += f.weight;
    }
    let total = |m: &HashMap<String, u64>| m.values().sum::<u64>();
    eprintln!("Prometheus goroutines: ours {}, Go's {}", total(&ours), total(go));
    let steady = |f: &str| {
        ["github.com/prometheus/", "github.com/oklog/", "main."].iter().any(|p| f.starts_with(p))
            && !f.ends_with(".serveDebug")
    };
    let mut compared = 0;
    for (f, &n) in go.iter().filter(|(f, _)| steady(f)) {
        let mine = ours.get(f).copied().unwrap_or(0);
        eprintln!("  {f}: {mine} vs {n}");
        assert_eq!(mine, n, "goroutines in {f}: ours {mine}, Go's {n}");
        compared += 1;
    }
    assert!(compared >= 10, "too few of the server's own functions to compare: {go:?}");
}

/// Two Debian Prometheus servers (one binary, loaded at two addresses), watched with `--exe`:
/// the binary is read once for both, and each bundle's goroutines are its own server's, as its
/// own `/debug/pprof/goroutine` counts them.
#[test]
fn two_prometheus_servers_share_one_reading_of_their_binary() {
    if !require_bpf("two_prometheus_servers_share_one_reading_of_their_binary") {
        return;
    }
    let dir = scratch_dir("go_waits_two_prometheus");
    // Its own copy: the agent selects by executable, and a test beside it may run Prometheus.
    let binary = autodump_tests::own_copy(std::path::Path::new("/usr/bin/prometheus"), "go_waits_two_prometheus");
    let servers: Vec<servers::PrometheusServer> = (0..2)
        .map(|i| {
            let (port, dir) = (servers::free_port(), dir.join(format!("prometheus-{i}")));
            servers::PrometheusServer::start_binary(&binary, &dir, &[], "groups: []\n", port)
        })
        .collect();
    let out = dir.join("out");
    let mut agent = RunningAgent::start(&["--exe", binary.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let started = std::time::Instant::now();
    while agent.logged("watching a new process").len() < servers.len() {
        assert!(started.elapsed() < Duration::from_secs(60), "both servers watched");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));
    agent.signal(libc::SIGUSR1);
    let mut bundles: Vec<Bundle> = Vec::new();
    while bundles.len() < servers.len() {
        bundles.push(agent.next_bundle(Duration::from_secs(60)).expect("a bundle per server"));
    }
    agent.signal(libc::SIGTERM);
    for server in &servers {
        let go = gopprof::goroutines_by_function(&gopprof::get(server.port, "/debug/pprof/goroutine?debug=1"));
        let bundle = bundles.iter().find(|b| b.summary()["pid"] == server.pid()).expect("the server's bundle");
        eprintln!("== Prometheus {} (port {})", server.pid(), server.port);
        assert_prometheus_goroutines_match(bundle, &go);
        let memory = &bundle.summary()["agent_memory"];
        assert_eq!(memory["go_files_read"], 1, "the executable read once for both: {memory}");
    }
}
