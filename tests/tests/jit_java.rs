//! JIT runtimes from outside, Java: OpenJDK 17, asked for its perf map through the attach
//! mechanism by flag, against `perf record -g` (frame pointers, the same map) on the same process
//! over the same seconds, and its waiting threads against `jcmd PID Thread.print`; a JVM in a
//! rootless container; and Debian's Rhino.

use std::{collections::BTreeMap, process::Command, time::Duration};

use autodump_tests::{
    assert_close, favour_cpu,
    java::{debian_jdk, java_classes, spawn_jvm, start_chain, start_java, Jdk, JDK_21, JDK_25, NO_INLINING},
    jit::{assert_shares_match, cleanup, record_against_perf, SHARE_TOLERANCE},
    require_bpf, run_agent,
};

/// A Java frame of method `name` of the fixture (HotSpot names read `long Chain.leafSpin(int)`).
fn is_java(frame: &str, name: &str) -> bool {
    frame.contains(&format!("Chain.{name}("))
}

#[test]
fn java_frames_are_named_and_walked_as_perf_does() {
    if !require_bpf("java_frames_are_named_and_walked_as_perf_does") {
        return;
    }
    // Shares against perf's on a starved target drift apart (6.6 points seen beside a test
    // that favours its CPU), as rbspy's do.
    favour_cpu();
    let java = start_java(&["-XX:+PreserveFramePointer", NO_INLINING[0], NO_INLINING[1]]);
    // Let the hot methods reach the compilers first.
    autodump_tests::warm_up(java.pid, 4.0);
    // The agent asks the JVM for its perf map (nobody ran jcmd); perf reads the same map after.
    let methods = ["leafSpin", "outerLoop", "sideLoop"];
    let (bundle, ours, theirs) = record_against_perf(java.pid, &["--jit-map-every", "2s"]);
    assert_shares_match(&ours, &theirs, &methods, is_java);
    assert!(autodump_tests::perf::share(&theirs, |f| is_java(f, "leafSpin")) > 0.5, "perf named the hot method");
    // Through the JIT code and the interpreter, down to the thread's start in libc.
    let hot: Vec<_> = ours.iter().filter(|f| f.frames.iter().any(|x| is_java(x, "leafSpin"))).collect();
    let hot_total = hot.iter().map(|f| f.weight).sum::<u64>();
    let whole = hot.iter().filter(|f| f.frames.iter().any(|x| x == "start_thread")).map(|f| f.weight).sum::<u64>();
    assert!(
        whole as f64 >= 0.9 * hot_total as f64,
        "{whole} of {hot_total} samples walk from leafSpin to start_thread"
    );

    // Asked by flag; the JVM's memory names first, the map only what that does not.
    let jit = &bundle.summary()["jit"];
    assert_eq!(jit["runtime"], "java", "{jit}");
    assert!(jit["maps_requested"].as_u64() >= Some(2), "{jit}");
    assert_eq!(jit["frame_pointers"], true, "{jit}");
    let hotspot = &bundle.summary()["hotspot"];
    assert!(hotspot["cpu_share_named"].as_f64() > Some(0.9), "{hotspot}");
    cleanup(java);
}

/// The Java frames of `thread` in `jcmd PID Thread.print`, top to bottom
/// (`Chain.sleeper(Chain.java:28)`), once its top frame is a native method (the thread is parked),
/// and its `java.lang.Thread.State` line (`TIMED_WAITING (sleeping)`).
fn parked_in(jdk: &Jdk, pid: u32, thread: &str) -> (Vec<String>, String) {
    for _ in 0..20 {
        let dump = jdk.tool("jcmd").args([&pid.to_string(), "Thread.print"]).output().expect("jcmd");
        let dump = String::from_utf8_lossy(&dump.stdout).to_string();
        let entry =
            dump.split("\n\n").find(|t| t.starts_with(&format!("\"{thread}\""))).unwrap_or_else(|| panic!("{dump}"));
        let frames: Vec<&str> = entry.lines().filter_map(|l| l.trim().strip_prefix("at ")).collect();
        if frames.first().is_some_and(|top| top.contains("Native Method")) {
            return (frames.iter().map(|f| f.to_string()).collect(), thread_state(entry));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("jcmd never saw {thread} parked in a native method");
}

/// A thread entry's `java.lang.Thread.State:` (empty without one).
fn thread_state(entry: &str) -> String {
    let state = entry.lines().find_map(|l| l.trim().strip_prefix("java.lang.Thread.State: "));
    state.unwrap_or_default().to_string()
}

/// `Class.method` of a Java frame as jcmd prints it (`Chain.sleeper(Chain.java:27)`) or as we
/// name it (`Chain.sleeper()`); a hidden class's name as jcmd writes it (`Chain$$Lambda$14/0x..`).
fn java_method(frame: &str) -> String {
    frame.split('(').next().unwrap_or_default().replace('+', "/")
}

/// A frame's method and line as `Thread.print` writes it: `Chain.sleeper(Chain.java:28)` or
/// `java.lang.Thread.sleep(java.base@17.0.15/Native Method)`.
fn method_and_line(frame: &str) -> (String, Option<u32>) {
    let line = frame.rsplit_once(':').and_then(|(_, l)| l.strip_suffix(')')?.parse().ok());
    (frame.split('(').next().unwrap_or_default().to_string(), line)
}

/// `thread`'s frames in the bundle's `java-threads.txt`, top to bottom, and its state.
fn dumped(dump: &str, thread: &str) -> (Vec<(String, Option<u32>)>, String) {
    let entry =
        dump.split("\n\n").find(|t| t.starts_with(&format!("\"{thread}\" "))).unwrap_or_else(|| panic!("{dump}"));
    (entry.lines().filter_map(|l| l.trim().strip_prefix("at ")).map(method_and_line).collect(), thread_state(entry))
}

/// A frame the agent names as a Java method, not native code (`JavaCalls::call_helper(...)`).
fn is_java_method(frame: &str) -> bool {
    let name = frame.split('(').next().unwrap_or_default();
    frame.contains('(') && !name.contains("::") && !name.contains(' ') && name.contains('.')
}

/// Threads in `Thread.sleep`, `Object.wait`, a socket read and on a `ReentrantLock`, without
/// frame pointers and nothing asked of the JVM by the agent (jcmd attaches, as the reference):
/// their off-CPU stacks hold the Java frames `jcmd Thread.print` gives, top to bottom, for the
/// seconds they waited; and the bundle's thread dump gives them with their lines.
#[test]
fn waiting_java_threads_are_where_jcmd_says_they_are() {
    if !require_bpf("waiting_java_threads_are_where_jcmd_says_they_are") {
        return;
    }
    waiting_threads_read_as_jcmd_prints_them(&Jdk::host());
}

/// The same on Debian 13's JDK 21, in a Debian 13 root of its own.
#[test]
fn jdk_21_waiting_threads_are_where_its_jcmd_says_they_are() {
    if !require_bpf("jdk_21_waiting_threads_are_where_its_jcmd_says_they_are") {
        return;
    }
    let jdk = debian_jdk(JDK_21);
    waiting_threads_read_as_jcmd_prints_them(&jdk);
}

/// The same on Debian unstable's JDK 25, in an unstable root of its own.
#[test]
fn jdk_25_waiting_threads_are_where_its_jcmd_says_they_are() {
    if !require_bpf("jdk_25_waiting_threads_are_where_its_jcmd_says_they_are") {
        return;
    }
    let jdk = debian_jdk(JDK_25);
    waiting_threads_read_as_jcmd_prints_them(&jdk);
}

fn waiting_threads_read_as_jcmd_prints_them(jdk: &Jdk) {
    // Its main thread sleeps too: the test needs no CPU, and runs beside the share tests.
    let java = start_chain(jdk, &[], &["wait"]);
    std::thread::sleep(Duration::from_secs(2));
    let run = run_agent(&["--pid", &java.pid.to_string(), "--duration", "5s"]);
    // `main` by Java's own name (the OS calls it `java`).
    let parked: Vec<(&str, (Vec<String>, String))> = ["main", "sleeper", "waiter", "reader", "locker"]
        .into_iter()
        .map(|t| (t, parked_in(jdk, java.pid, t)))
        .collect();
    let bundle = run.bundle();
    let dump = std::fs::read_to_string(bundle.dir.join("java-threads.txt")).expect("the bundle's java-threads.txt");
    // The seconds the probes recorded (the agent reads a JVM's tables first; slower under load).
    let seconds = bundle.window_seconds();
    for (thread, (jcmd, state)) in &parked {
        // The bundle's thread dump, read from the JVM's memory: the same frames, lines, state.
        let theirs: Vec<_> = jcmd.iter().map(|f| method_and_line(f)).collect();
        assert_eq!(
            dumped(&dump, thread),
            (theirs, state.clone()),
            "{thread} in java-threads.txt and in jcmd Thread.print"
        );
        let jcmd: Vec<String> = jcmd.iter().map(|f| java_method(f)).collect();
        let ours = |frames: &[String]| -> Vec<String> {
            frames.iter().rev().filter(|f| is_java_method(f)).map(|f| java_method(f)).collect()
        };
        // Folded stacks start with the OS's thread name: the launcher's main thread is `java`.
        let comm = if *thread == "main" { "java" } else { thread };
        let waited = bundle.weight("offcpu.folded", |f| f.frames[0] == comm && ours(&f.frames) == jcmd);
        if waited == 0 {
            let mine: Vec<_> = bundle.folded("offcpu.folded").into_iter().filter(|f| f.frames[0] == comm).collect();
            let heaviest = mine.iter().max_by_key(|f| f.weight).map(|f| ours(&f.frames));
            panic!("{thread}: jcmd {jcmd:?}, our heaviest {heaviest:?}");
        }
        let what = format!("seconds {thread} waited in {jcmd:?}");
        if (waited as f64 / 1e6 - seconds).abs() > 0.15 * seconds {
            // Where the rest of its time went: its heaviest stacks, in seconds.
            let mut mine: Vec<_> = bundle.folded("offcpu.folded").into_iter().filter(|f| f.frames[0] == comm).collect();
            mine.sort_by_key(|f| std::cmp::Reverse(f.weight));
            for f in mine.iter().take(4) {
                eprintln!("  {thread}: {:.3} s in {}", f.weight as f64 / 1e6, f.frames.join(";"));
            }
        }
        assert_close(&what, waited as f64 / 1e6, seconds, 0.15);
    }
    assert_eq!(bundle.summary()["hotspot"]["frames_walked"], true, "{}", bundle.summary()["hotspot"]);
    assert_eq!(bundle.summary()["jit"], serde_json::Value::Null, "the agent asked the JVM nothing");
    // The verdict names the Java method most of the program's threads wait in (four of seven
    // sleep), not libc's wait under it or the JVM's own idle threads.
    let verdict = bundle.summary()["verdict"].as_str().unwrap_or_default().to_string();
    eprintln!("verdict: {verdict}");
    let waited_in = verdict.split("; ").find_map(|part| part.split("off-CPU waiting in ").nth(1));
    assert!(waited_in.is_some_and(|m| m.starts_with("java.lang.Thread.sleep")), "{verdict}");
    cleanup(java);
}

/// The host uid and gid of the rootless container's process.
const CONTAINER_ID: u32 = 100_000;

/// Makes `command`'s process one of a rootless container: host uid and gid `CONTAINER_ID`, root
/// in a user namespace of its own that maps only that id, with a mount namespace and a `/tmp` of
/// its own (as `podman run` as a user gives it).
fn in_rootless_container(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: system calls on constants, run in the child between fork and exec (no allocation).
    unsafe {
        command.pre_exec(|| {
            let id = CONTAINER_ID;
            let null = std::ptr::null::<libc::c_char>();
            let failed = || Err(std::io::Error::last_os_error());
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(id, id, id) != 0
                || libc::setresuid(id, id, id) != 0
                || libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0
                || libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0
            {
                return failed();
            }
            let maps = [
                (c"/proc/self/setgroups", c"deny"),
                (c"/proc/self/uid_map", c"0 100000 1"),
                (c"/proc/self/gid_map", c"0 100000 1"),
            ];
            for (file, text) in maps {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, text.as_ptr().cast(), text.count_bytes()) < 0 {
                    return failed();
                }
                libc::close(fd);
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(c"none".as_ptr(), c"/".as_ptr(), null, private, std::ptr::null()) != 0
                || libc::mount(c"tmpfs".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) != 0
            {
                return failed();
            }
            Ok(())
        });
    }
}

/// As a rootless container runs it: the JVM in user and mount namespaces of its own, with a
/// `/tmp` nobody else sees, root inside and uid 100000 outside. The agent asks it for its map as
/// that user, in that mount namespace, and finds the map there.
#[test]
fn a_jvm_in_a_rootless_container_is_named() {
    if !require_bpf("a_jvm_in_a_rootless_container_is_named") {
        return;
    }
    // The classes through the working directory, which the container's /tmp does not hide (the
    // workspace may lie under the host's /tmp; java would resolve "." to that path again).
    let mut command = Command::new("java");
    command.args(["-XX:+PreserveFramePointer", "-cp", "/proc/self/cwd", "Chain"]).current_dir(java_classes());
    in_rootless_container(&mut command);
    let java = spawn_jvm(command, "Chain.java in a rootless container");
    let status = std::fs::read_to_string(format!("/proc/{}/status", java.pid)).expect("the JVM's status");
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("100000")), "{status}");
    autodump_tests::warm_up(java.pid, 4.0);
    let run = run_agent(&["--pid", &java.pid.to_string(), "--duration", "4s", "--jit-map-every", "2s"]);
    assert!(!std::path::Path::new(&format!("/tmp/perf-{}.map", java.pid)).exists(), "the map is in the JVM's /tmp");
    let bundle = run.bundle();
    let jit = &bundle.summary()["jit"];
    assert_eq!(jit["map_found"], true, "{jit}");
    assert!(jit["maps_requested"].as_u64() >= Some(1), "{jit}");
    assert!(jit["entries"].as_u64() > Some(0), "{jit}");
    let hotspot = &bundle.summary()["hotspot"];
    assert!(hotspot["cpu_share_named"].as_f64() > Some(0.9), "{hotspot}");
    let total = bundle.weight("cpu.folded", |_| true);
    let hot = bundle.weight("cpu.folded", |f| f.frames.iter().any(|x| is_java(x, "leafSpin")));
    assert!(hot * 2 > total, "leafSpin in {hot} of {total} samples");
    cleanup(java);
}

/// A JVM is asked for its perf map only by flag when its memory names its code: then at start
/// and, though the next request is an hour away, again just before the bundle. Its frames are
/// walked whole without frame pointers, so no note calls them leaf-only.
#[test]
fn a_jvm_is_asked_for_its_map_only_by_flag_and_then_before_a_bundle_too() {
    if !require_bpf("a_jvm_is_asked_for_its_map_only_by_flag_and_then_before_a_bundle_too") {
        return;
    }
    let java = start_java(&[]);
    std::thread::sleep(Duration::from_secs(2));
    let pid = java.pid.to_string();
    let run = run_agent(&["--pid", &pid, "--duration", "2s"]);
    let summary = run.bundle().summary();
    assert_eq!(summary["jit"], serde_json::Value::Null, "nothing asked, no map: {}", summary["jit"]);
    let run = run_agent(&["--pid", &pid, "--duration", "3s", "--jit-map-every", "1h"]);
    let summary = run.bundle().summary();
    assert_eq!(summary["jit"]["frame_pointers"], false, "{}", summary["jit"]);
    assert_eq!(summary["jit"]["maps_requested"], 2, "{}", summary["jit"]);
    let notes = summary["notes"].to_string();
    assert!(!notes.contains("leaf-only"), "{notes}");
    cleanup(java);
}

/// Debian's Rhino (`rhino`, a JavaScript engine written in Java, run as /usr/bin/rhino runs it),
/// kept busy with a recursive function: a Java program nobody here wrote, against perf.
#[test]
fn debians_rhino_is_named_as_perf_names_it() {
    if !require_bpf("debians_rhino_is_named_as_perf_names_it") {
        return;
    }
    // Shares against perf's on a starved target drift apart (6.6 points seen beside a test
    // that favours its CPU), as rbspy's do.
    favour_cpu();
    let script = "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) } print('ready'); while (true) fib(25)";
    let mut command = Command::new("java");
    command.args(["-XX:+PreserveFramePointer", "-cp", "/usr/share/java/js.jar"]);
    command.args(["org.mozilla.javascript.tools.shell.Main", "-e", script]);
    let rhino = spawn_jvm(command, "rhino");
    autodump_tests::warm_up(rhino.pid, 5.0);
    // The agent asks the JVM for its map; perf names its frames from the same map afterwards.
    let (bundle, ours, theirs) = record_against_perf(rhino.pid, &["--jit-map-every", "2s"]);
    // Rhino's own methods in at least 10% of perf's samples, each within 5 points.
    let mut methods: BTreeMap<&str, usize> = BTreeMap::new();
    for stack in &theirs {
        let mut seen: Vec<&str> = stack.iter().filter_map(|f| rhino_method(f)).collect();
        seen.sort_unstable();
        seen.dedup();
        for m in seen {
            *methods.entry(m).or_default() += 1;
        }
    }
    let hot: Vec<&str> = methods.into_iter().filter(|(_, n)| *n * 10 >= theirs.len()).map(|(m, _)| m).collect();
    eprintln!("Rhino methods in over 10% of perf's samples: {hot:?}");
    // How many distinct methods show depends on what HotSpot inlined (`_command__1.call` is
    // sometimes compiled into `OptRuntime.callName`); the recursion keeps the stacks deep either way.
    assert!(!hot.is_empty(), "perf named no Rhino method over 10%");
    assert_shares_match(&ours, &theirs, &hot, |frame, method| rhino_method(frame) == Some(method));
    // Walked through compiled frames into their callers, not leaf only: samples with three or
    // more Rhino frames, as many as perf's, and most of them.
    let deep = |frames: &[String]| frames.iter().filter(|f| rhino_method(f).is_some()).count() >= 3;
    let total = ours.iter().map(|f| f.weight).sum::<u64>().max(1);
    let mine = ours.iter().filter(|f| deep(&f.frames)).map(|f| f.weight).sum::<u64>() as f64 / total as f64;
    let perf = theirs.iter().filter(|s| deep(s)).count() as f64 / theirs.len().max(1) as f64;
    eprintln!("three or more Rhino frames: ours {:.1}%, perf {:.1}%", mine * 100.0, perf * 100.0);
    assert!(perf > 0.5 && (mine - perf).abs() <= SHARE_TOLERANCE, "deep stacks: ours {mine:.3}, perf {perf:.3}");
    assert_eq!(bundle.summary()["jit"]["runtime"], "java");
    cleanup(rhino);
}

/// `org.mozilla.javascript.Interpreter.interpretLoop` of a HotSpot frame name such as
/// `java.lang.Object org.mozilla.javascript.Interpreter.interpretLoop(org.mozilla...)`.
fn rhino_method(frame: &str) -> Option<&str> {
    let name = frame.split('(').next()?.rsplit(' ').next()?;
    name.starts_with("org.mozilla.javascript.").then_some(name)
}
