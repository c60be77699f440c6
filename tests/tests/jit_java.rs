//! JIT runtimes from outside, Java: OpenJDK 17, which the agent asks for its perf map through the
//! attach mechanism, against `perf record -g` (frame pointers, the same map) on the same process
//! over the same seconds, and its waiting threads against `jcmd PID Thread.print`; a JVM in a
//! rootless container; and Debian's Rhino.

use std::{collections::BTreeMap, process::Command, time::Duration};

use autodump_tests::{
    assert_close, favour_cpu,
    java::{java_classes, spawn_jvm, start_java},
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
    let java = start_java(&["-XX:+PreserveFramePointer"]);
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

    let jit = &bundle.summary()["jit"];
    assert_eq!(jit["runtime"], "java", "{jit}");
    assert!(jit["maps_requested"].as_u64() >= Some(2), "{jit}");
    assert_eq!(jit["frame_pointers"], true, "{jit}");
    assert!(jit["cpu_share_named"].as_f64() > Some(0.9), "{jit}");
    cleanup(java);
}

/// The native function that runs `method`, a Java method jcmd marks `(Native Method)`: the JVM
/// registers `Thread.sleep` and `Object.wait` as its own functions; other JDK natives have JNI's
/// `Java_<class>_<method>` names.
fn native_function(method: &str) -> String {
    match method {
        "java.lang.Thread.sleep" => "JVM_Sleep".into(),
        "java.lang.Object.wait" => "JVM_MonitorWait".into(),
        _ => format!("Java_{}", method.replace('.', "_")),
    }
}

/// The top frame of `thread` in `jcmd PID Thread.print`, once it is a native method (the thread
/// is parked): `java.lang.Object.wait`.
fn parked_in(pid: u32, thread: &str) -> String {
    for _ in 0..20 {
        let dump = Command::new("jcmd").args([&pid.to_string(), "Thread.print"]).output().expect("jcmd");
        let dump = String::from_utf8_lossy(&dump.stdout).to_string();
        let entry =
            dump.split("\n\n").find(|t| t.starts_with(&format!("\"{thread}\""))).unwrap_or_else(|| panic!("{dump}"));
        assert!(entry.contains(&format!("Chain.{thread}(")), "jcmd places {thread} in Chain.{thread}: {entry}");
        let top = entry.lines().find_map(|l| l.trim().strip_prefix("at ")).expect("a Java frame");
        if top.contains("Native Method") {
            return top.split('(').next().expect("a method").to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("jcmd never saw {thread} parked in a native method");
}

#[test]
fn waiting_java_threads_are_where_jcmd_says_they_are() {
    if !require_bpf("waiting_java_threads_are_where_jcmd_says_they_are") {
        return;
    }
    let java = start_java(&["-XX:+PreserveFramePointer"]);
    std::thread::sleep(Duration::from_secs(2));
    let seconds = 5.0;
    let run = run_agent(&["--pid", &java.pid.to_string(), "--duration", "5s"]);
    // Thread.sleep, Object.wait and a socket read, as jcmd sees them while the agent records.
    let parked: Vec<(&str, String)> =
        ["sleeper", "waiter", "reader"].into_iter().map(|t| (t, parked_in(java.pid, t))).collect();
    let bundle = run.bundle();
    for (thread, method) in &parked {
        // The Java callers are interpreted (called too seldom to compile): they read Interpreter.
        let native = native_function(method);
        let waited = bundle.weight("offcpu.folded", |f| {
            f.frames[0] == *thread && f.frames.contains(&native) && f.frames.iter().any(|x| x == "Interpreter")
        });
        let what = format!("seconds {thread} waited in {native} (jcmd: {method}), through the interpreter");
        assert_close(&what, waited as f64 / 1e6, seconds, 0.15);
    }
    let notes = bundle.summary()["notes"].to_string();
    assert!(notes.contains("frames named Interpreter"), "{notes}");
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
    assert!(jit["cpu_share_named"].as_f64() > Some(0.9), "{jit}");
    let total = bundle.weight("cpu.folded", |_| true);
    let hot = bundle.weight("cpu.folded", |f| f.frames.iter().any(|x| is_java(x, "leafSpin")));
    assert!(hot * 2 > total, "leafSpin in {hot} of {total} samples");
    cleanup(java);
}

#[test]
fn a_jvm_without_frame_pointers_is_told_its_frames_are_leaf_only_and_asked_before_a_bundle() {
    if !require_bpf("a_jvm_without_frame_pointers_is_told_its_frames_are_leaf_only_and_asked_before_a_bundle") {
        return;
    }
    let java = start_java(&[]);
    std::thread::sleep(Duration::from_secs(2));
    // Asked at start and, though the next request is an hour away, again just before the bundle.
    let run = run_agent(&["--pid", &java.pid.to_string(), "--duration", "3s", "--jit-map-every", "1h"]);
    let summary = run.bundle().summary();
    assert_eq!(summary["jit"]["frame_pointers"], false, "{}", summary["jit"]);
    assert_eq!(summary["jit"]["maps_requested"], 2, "{}", summary["jit"]);
    let notes = summary["notes"].to_string();
    assert!(notes.contains("-XX:+PreserveFramePointer"), "{notes}");
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
