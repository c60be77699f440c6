//! Whole stacks without frame pointers: glibc's wrappers, code built `-O2` without them, a Rust
//! release build, Debian's gzip, Go calling C, and files whose CFI is garbage. References:
//! the known sleeps, and `perf record --call-graph dwarf` on the same process at the same time.

use std::{io::Write, process::Command, time::Duration};

use autodump_tests::{
    assert_close, bundle::Folded, kernel_has_bpf_loop, perf::PerfRecording, require_bpf, run_agent, scratch_dir,
    Bundle, Fixture, RunningAgent,
};

/// Off-CPU time within 15% of the known blocked time.
const TIME_TOLERANCE: f64 = 0.15;
/// Shares within 5 points of perf's.
const SHARE_POINTS: f64 = 0.05;
const RECORD_S: u64 = 8;
/// Both sample at this rate: about 2,400 samples each, so that a share's sampling error (the
/// two are independent) is about 1.5 points.
const FREQUENCY_HZ: u64 = 299;

/// Frames that mean a walk reached the bottom of a stack: a process's `main` (through glibc's
/// start) or a thread's start.
const ROOTS: [&str; 2] = ["__libc_start_call_main", "start_thread"];

fn reaches_root(frames: &[String]) -> bool {
    frames.iter().any(|f| ROOTS.contains(&f.as_str()))
}

/// Weighted share of `folded` whose frames satisfy `pred`.
fn share(folded: &[Folded], pred: impl Fn(&[String]) -> bool) -> f64 {
    let total: u64 = folded.iter().map(|f| f.weight).sum();
    let with: u64 = folded.iter().filter(|f| pred(&f.frames)).map(|f| f.weight).sum();
    with as f64 / total.max(1) as f64
}

/// Records `pid` with the agent and with perf at once; returns our bundle and perf's stacks. Perf
/// samples each CPU on its own clock, as the agent does: a per-process clock restarts at each
/// switch-in, and its samples land on other phases of the fixture's rounds than ours.
fn record_with_perf(pid: u32, name: &str) -> (Bundle, Vec<Vec<String>>) {
    let out = scratch_dir(name);
    let perf = PerfRecording::start_on_each_cpu(&[pid], RECORD_S, FREQUENCY_HZ, &out);
    let (duration, frequency) = (format!("{RECORD_S}s"), FREQUENCY_HZ.to_string());
    let pid = pid.to_string();
    let run =
        run_agent(&["--pid", &pid, "--duration", &duration, "--frequency", &frequency, "--out", out.to_str().unwrap()]);
    let bundle = run.bundle();
    (bundle, perf.finish())
}

/// Ours against perf: each function's share within 5 points, and the share reaching the root.
fn compare_with_perf(bundle: &Bundle, perf: &[Vec<String>], functions: &[&str], min_root: f64) {
    assert!(perf.len() > 100, "perf recorded {} samples", perf.len());
    let cpu = bundle.folded("cpu.folded");
    let ours_root = share(&cpu, reaches_root);
    let perf_root = autodump_tests::perf::share(perf, |f| ROOTS.contains(&f));
    eprintln!("reaching main or thread start: ours {ours_root:.3}, perf --call-graph dwarf {perf_root:.3}");
    assert!(ours_root >= min_root, "ours reach the root in {ours_root:.3}");
    assert!(ours_root >= perf_root - SHARE_POINTS, "ours {ours_root:.3} against perf {perf_root:.3}");
    for function in functions {
        let ours = share(&cpu, |frames| frames.iter().any(|f| f == function));
        let theirs = autodump_tests::perf::share(perf, |f| f == *function);
        eprintln!("{function}: ours {ours:.3}, perf {theirs:.3}");
        assert!((ours - theirs).abs() <= SHARE_POINTS, "{function}: ours {ours:.3}, perf {theirs:.3}");
    }
    assert_eq!(bundle.summary()["probes"]["unwinding"]["mode"], "cfi");
}

#[test]
fn culprits_show_under_glibc_wrappers_with_their_time() {
    if !require_bpf("culprits_show_under_glibc_wrappers_with_their_time") {
        return;
    }
    let fixture = Fixture::start("libc_blocker", &[]);
    let out = scratch_dir("unwind_libc");
    let run = run_agent(&["--pid", &fixture.pid.to_string(), "--duration", "6s", "--out", out.to_str().unwrap()]);
    let bundle = run.bundle();
    let unwinding = &bundle.summary()["probes"]["unwinding"];
    if !kernel_has_bpf_loop() {
        // The kernel matrix's 5.10: frame pointers, and the summary says why.
        assert_eq!(unwinding["mode"], "frame-pointers", "{unwinding}");
        assert!(unwinding["why"].as_str().unwrap().contains("bpf_loop"), "{unwinding}");
        return;
    }
    assert_eq!(unwinding["mode"], "cfi", "{unwinding}");
    let window = bundle.window_seconds();
    let offcpu = bundle.folded("offcpu.folded");
    for (thread, culprit, wrapper) in [
        ("napper", "nap_culprit", "nanosleep"),
        ("piper", "read_culprit", "read"),
        ("waiter", "wait_culprit", "pthread_cond_wait"),
    ] {
        // The culprit, then glibc's wrapper further in: the frame frame pointers lose.
        let under_wrapper = |frames: &[String]| {
            frames
                .iter()
                .position(|f| f == culprit)
                .is_some_and(|at| frames[at + 1..].iter().any(|f| f.contains(wrapper)))
        };
        let of_thread: Vec<&Folded> = offcpu.iter().filter(|f| f.frames[0] == thread).collect();
        let seconds = of_thread.iter().filter(|f| under_wrapper(&f.frames)).map(|f| f.weight).sum::<u64>() as f64 / 1e6;
        // The block in progress at attach is not seen (its switch-out came before): at most 200 ms.
        assert_close(&format!("{culprit} under {wrapper}, seconds"), seconds, window, TIME_TOLERANCE);
        for stack in &of_thread {
            assert!(reaches_root(&stack.frames), "{thread}: a stack short of start_thread: {:?}", stack.frames);
        }
    }
    // A signal handler's sleep: through the signal frame to the interrupted pause(), then to the
    // thread's start.
    let in_handler: Vec<&Folded> = offcpu
        .iter()
        .filter(|f| f.frames[0] == "signalled" && f.frames.iter().any(|x| x == "nap_in_handler"))
        .collect();
    assert!(!in_handler.is_empty(), "the handler's naps");
    for stack in in_handler {
        let f = &stack.frames;
        let interrupted = f.iter().position(|x| x == "interrupted_here");
        let handler = f.iter().position(|x| x == "nap_in_handler");
        assert!(interrupted < handler && reaches_root(f), "through the signal frame: {f:?}");
    }
    // The same PC, stack and frame pointer at every block, two callers: a walk remembered from
    // one must not answer for the other (each had half the time).
    for side in ["nap_left", "nap_right"] {
        let under = |f: &&Folded| f.frames[0] == "alternator" && f.frames.iter().any(|x| x == side);
        let seconds = offcpu.iter().filter(under).map(|f| f.weight).sum::<u64>() as f64 / 1e6;
        assert_close(&format!("{side}, seconds"), seconds, window / 2.0, TIME_TOLERANCE);
    }
    let main_thread: Vec<&Folded> = offcpu.iter().filter(|f| f.frames[0] == "libc_blocker").collect();
    assert!(main_thread.iter().all(|f| f.frames.iter().any(|x| x == "main")), "{main_thread:?}");
    let dropped = &bundle.summary()["dropped"];
    assert!(dropped["unwound_stacks"].as_u64().unwrap() > 0);
    // Every thread here blocks (and the main thread wakes the others) from the same places, over
    // and over: past each place's first walk in an interval, the memo answers, but never for the
    // alternator (its two places share one start and differ on the stack; about a third of the
    // walks): about half were answered, here and in the kernel matrix's guests.
    let (walks, hits) = (dropped["unwound_stacks"].as_u64().unwrap(), dropped["walk_memo_hits"].as_u64().unwrap());
    eprintln!("{hits} of {walks} walks answered from memory");
    assert!(hits * 3 > walks, "{hits} of {walks} walks answered from memory");
    assert_eq!(dropped["unwind_broken"], 0, "{dropped}");
}

#[test]
fn c_without_frame_pointers_matches_perf_dwarf() {
    if !require_bpf("c_without_frame_pointers_matches_perf_dwarf") {
        return;
    }
    let fixture = Fixture::start("spin_nofp", &[]);
    let (bundle, perf) = record_with_perf(fixture.pid, "unwind_nofp");
    // compare_keys is called back from glibc's qsort: our frames on both sides of glibc's.
    compare_with_perf(&bundle, &perf, &["run_round", "hash_stage", "hash_block", "sort_stage", "compare_keys"], 0.95);
}

#[test]
fn rust_release_build_matches_perf_dwarf() {
    if !require_bpf("rust_release_build_matches_perf_dwarf") {
        return;
    }
    let fixture = Fixture::start("spin_rust", &[]);
    let (bundle, perf) = record_with_perf(fixture.pid, "unwind_rust");
    compare_with_perf(
        &bundle,
        &perf,
        &["spin_rust::work_round", "spin_rust::crunch_numbers", "spin_rust::shuffle_words"],
        0.95,
    );
    // Rust into glibc: the napper sleeps in std, then glibc's clock_nanosleep, from its thread start.
    let offcpu = bundle.folded("offcpu.folded");
    let napper: Vec<&Folded> = offcpu.iter().filter(|f| f.frames[0] == "rust-napper").collect();
    assert!(!napper.is_empty(), "the napper's sleeps");
    for stack in napper {
        let f = &stack.frames;
        let at = f.iter().position(|x| x == "spin_rust::nap_in_rust").unwrap_or_else(|| panic!("{f:?}"));
        assert!(f[at..].iter().any(|x| x.contains("clock_nanosleep")) && reaches_root(f), "{f:?}");
    }
}

/// Debian's gzip, which has no frame pointers and no symbols, compressing data fed on a pipe.
#[test]
fn distribution_gzip_reaches_the_root_like_perf_dwarf() {
    if !require_bpf("distribution_gzip_reaches_the_root_like_perf_dwarf") {
        return;
    }
    let mut gzip = Command::new("/usr/bin/gzip")
        .args(["-9", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("Debian's gzip");
    let mut input = gzip.stdin.take().unwrap();
    // Text-like bytes that do not repeat within deflate's 32 KiB window.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let block: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b"etaoin shrdlu cmfwyp"[(state % 20) as usize]
        })
        .collect();
    let feeder = std::thread::spawn(move || while input.write_all(&block).is_ok() {});
    std::thread::sleep(Duration::from_millis(300));
    let (bundle, perf) = record_with_perf(gzip.id(), "unwind_gzip");
    let _ = gzip.kill();
    let _ = gzip.wait();
    let _ = feeder.join();
    compare_with_perf(&bundle, &perf, &[], 0.95);
}

#[test]
fn go_calling_c_and_c_calling_go_are_whole_stacks() {
    if !require_bpf("go_calling_c_and_c_calling_go_are_whole_stacks") {
        return;
    }
    let fixture = Fixture::start("cgospin", &[]);
    let out = scratch_dir("unwind_cgo");
    let run = run_agent(&["--pid", &fixture.pid.to_string(), "--duration", "4s", "--out", out.to_str().unwrap()]);
    let cpu = run.bundle().folded("cpu.folded");
    // Go into C, and C back into Go: each leaf's samples come out as one stack from the goroutine's
    // root.
    for (leaf, path) in [
        ("c_spin_inner", &["runtime.goexit", "main.goCaller", "c_spin", "c_spin_inner"][..]),
        (
            "main.spinInCallback",
            &[
                "runtime.goexit",
                "main.goCallsC",
                "c_calls_go",
                "crosscall2",
                "runtime.cgocallback",
                "main.spinInCallback",
            ],
        ),
    ] {
        let whole = |frames: &[String]| {
            let mut at = 0;
            path.iter().all(|want| match frames[at..].iter().position(|f| f == want) {
                Some(i) => {
                    at += i + 1;
                    true
                }
                None => false,
            })
        };
        let in_leaf = share(&cpu, |f| f.iter().any(|x| x == leaf));
        let whole_share = share(&cpu, whole);
        eprintln!("in {leaf} {in_leaf:.3}; from runtime.goexit through it {whole_share:.3}");
        assert!(in_leaf > 0.3, "a goroutine spins in {leaf}");
        assert!(whole_share >= 0.95 * in_leaf, "{leaf} reaches the goroutine's root: {whole_share:.3} of {in_leaf:.3}");
    }
}

/// A process whose file's CFI is rewritten with garbage on disk after it started (run through
/// the dynamic loader, so that its file may be written): the agent notes it, never fails, and
/// the fixture's own frames (built with frame pointers) are still found.
#[test]
fn garbage_cfi_on_disk_is_noted_and_never_fatal() {
    if !require_bpf("garbage_cfi_on_disk_is_noted_and_never_fatal") {
        return;
    }
    let out = scratch_dir("unwind_garbage");
    let copy = out.join("libc_blocker_copy");
    std::fs::copy(autodump_tests::fixture::fixture_bin("libc_blocker"), &copy).unwrap();
    let mut child = Command::new("/lib64/ld-linux-x86-64.so.2")
        .arg(&copy)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the copy through ld.so");
    let lines = autodump_tests::line_channel(child.stdout.take().unwrap());
    assert_eq!(lines.recv_timeout(Duration::from_secs(10)).ok().as_deref(), Some("ready"));
    // Overwrite .eh_frame in place (same inode: the mapped file changes under the process).
    let (offset, size) = section_range(&copy, ".eh_frame");
    let mut file = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset)).unwrap();
    let garbage: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8 ^ 0x5a).collect();
    file.write_all(&garbage).unwrap();
    drop(file);

    let mut agent =
        RunningAgent::start(&["--pid", &child.id().to_string(), "--duration", "3s", "--out", out.to_str().unwrap()]);
    agent.wait_recording(Duration::from_secs(30));
    let bundle = agent.finish().bundle();
    let _ = child.kill();
    let _ = child.wait();
    let summary = bundle.summary();
    let noted = summary["probes"]["unwinding"]["tables"]["frame_pointer_files"].as_array().unwrap();
    assert!(noted.iter().any(|n| n["path"].as_str().unwrap().ends_with("libc_blocker_copy")), "{noted:?}");
    let offcpu = bundle.folded("offcpu.folded");
    assert!(offcpu.iter().any(|f| f.frames.iter().any(|x| x == "nap_culprit")), "frame pointers still find our code");
}

/// (file offset, size) of a section, from readelf.
fn section_range(path: &std::path::Path, name: &str) -> (u64, u64) {
    let out = Command::new("readelf").args(["-SW"]).arg(path).output().expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.split_whitespace().any(|w| w == name)).expect("the section");
    let fields: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    // Name Type Address Off Size ...
    (u64::from_str_radix(fields[3], 16).unwrap(), u64::from_str_radix(fields[4], 16).unwrap())
}

/// A full unwound-stack map loses stacks, counted, never samples.
#[test]
fn a_full_unwound_stack_map_is_counted() {
    if !require_bpf("a_full_unwound_stack_map_is_counted") {
        return;
    }
    // Thousands of distinct stacks against 64 slots.
    let fixture = Fixture::start("stacky", &["2"]);
    let out = scratch_dir("unwind_full");
    let pid = fixture.pid.to_string();
    let run = run_agent(&["--pid", &pid, "--duration", "3s", "--stack-slots", "64", "--out", out.to_str().unwrap()]);
    let bundle = run.bundle();
    let summary = bundle.summary();
    let dropped = &summary["dropped"];
    assert!(dropped["unwound_stacks_lost"].as_u64().unwrap() > 0, "{dropped}");
    assert_eq!(summary["cpu"]["samples"], dropped["cpu_samples"], "every sample is still counted");
    assert!(bundle.weight("cpu.folded", |f| f.frames.iter().any(|x| x == "[user stack lost]")) > 0);
}

/// Code no file maps (a JIT's): the walk steps through it by frame pointer, into the native code
/// that called it, when the code keeps one; where RBP holds no frame, the JIT frame is the last,
/// the stop is counted, and the summary says so. Other threads' stacks are whole.
#[test]
fn jit_code_is_walked_by_frame_pointer_or_stops_counted() {
    if !require_bpf("jit_code_is_walked_by_frame_pointer_or_stops_counted") {
        return;
    }
    let fixture = Fixture::start("jit_spin", &[]);
    let out = scratch_dir("unwind_jit");
    let run = run_agent(&["--pid", &fixture.pid.to_string(), "--duration", "3s", "--out", out.to_str().unwrap()]);
    let bundle = run.bundle();
    let summary = bundle.summary();
    assert!(summary["dropped"]["jit_walk_stops"].as_u64().unwrap() > 0, "{}", summary["dropped"]);
    assert!(summary["dropped"]["jit_frames"].as_u64().unwrap() > 0, "{}", summary["dropped"]);
    let notes = summary["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap().contains("JIT code")), "{notes:?}");
    let cpu = bundle.folded("cpu.folded");
    let user = |f: &Folded| -> Vec<String> { f.frames[1..].iter().filter(|x| !x.ends_with("_[k]")).cloned().collect() };
    let jitted: Vec<&Folded> = cpu.iter().filter(|f| f.frames[0] == "jitted").collect();
    let total: u64 = jitted.iter().map(|f| f.weight).sum();
    // From the JIT frame to its caller and on to the thread's start (a sample on the first
    // instruction, before the frame is set up, skips run_jitted: allowed for a few).
    let through: u64 = jitted
        .iter()
        .filter(|f| {
            let user = user(f);
            let n = user.len();
            reaches_root(&f.frames) && n >= 2 && user[n - 2] == "run_jitted" && user[n - 1].starts_with("[anon]+0x")
        })
        .map(|f| f.weight)
        .sum();
    assert!(total > 0 && through as f64 >= 0.95 * total as f64, "{through} of {total}: {jitted:?}");
    let stopped: Vec<&Folded> = cpu.iter().filter(|f| f.frames[0] == "jitnofp").collect();
    assert!(!stopped.is_empty());
    for stack in stopped {
        // The thread name, then the JIT frame alone (kernel frames, if any, after it).
        assert_eq!(user(stack).len(), 1, "{:?}", stack.frames);
    }
    let main_thread: Vec<&Folded> = cpu.iter().filter(|f| f.frames[0] == "jit_spin").collect();
    assert!(main_thread.iter().all(|f| reaches_root(&f.frames)), "{main_thread:?}");
}
