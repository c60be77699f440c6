//! A HotSpot JVM read from outside with no flag and no attach: the tables libjvm.so exports for
//! the serviceability agent, against the serviceability agent's own reading of them
//! (`jhsdb clhsdb`'s `vmstructsdump`), the release `jcmd PID VM.version` prints, and the code
//! cache's bounds against where the JVM's perf map puts its compiled methods; and compiled
//! methods named from the JVM's memory against `perf record -g` with the JVM's own perf map.

use std::{collections::HashMap, process::Command, time::Duration};

use autodump_tests::{
    favour_cpu,
    java::{debian_jdk, start_chain, start_java, start_java_of, Jdk, JDK_21, JDK_25, NO_INLINING},
    jit::{assert_shares_match, cleanup, SHARE_TOLERANCE},
    perf::PerfRecording,
    require_bpf, run_agent, scratch_dir, warm_up, RunningAgent,
};

/// What `vmstructsdump` prints: each type (`type NAME SUPER isOop isInteger isUnsigned SIZE`)
/// and each non-static field (`field TYPE NAME TYPESTRING isStatic OFFSET ADDRESS`).
#[derive(Default)]
struct SaTables {
    /// name → (superclass, size; -1 when the agent does not know it).
    types: HashMap<String, (Option<String>, i64)>,
    /// (type, field) → offset.
    fields: HashMap<(String, String), u64>,
}

impl SaTables {
    fn dump(pid: u32) -> Self {
        let mut sa = Command::new("jhsdb")
            .args(["clhsdb", "--pid", &pid.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("jhsdb (the JDK's serviceability agent; setup installs the JDK)");
        use std::io::Write;
        sa.stdin.take().expect("piped").write_all(b"vmstructsdump\nquit\n").expect("write to jhsdb");
        let out = sa.wait_with_output().expect("jhsdb");
        let text = String::from_utf8_lossy(&out.stdout).replace("hsdb> ", "");
        let mut tables = Self::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                // Names with spaces ("unsigned int") are quoted: only unquoted ones are kept.
                ["type", name, superclass, _, _, _, size] => {
                    let superclass = (*superclass != "null").then(|| superclass.to_string());
                    tables.types.insert(name.to_string(), (superclass, size.parse().expect("a size")));
                }
                ["field", ty, name, _, "false", offset, _] => {
                    tables.fields.insert((ty.to_string(), name.to_string()), offset.parse().expect("an offset"));
                }
                _ => {}
            }
        }
        assert!(tables.types.len() > 500 && tables.fields.len() > 500, "jhsdb printed:\n{text}");
        tables
    }

    /// A field of `ty` or of the superclass that declares it.
    fn inherited<'a>(&'a self, mut ty: &'a str, field: &str) -> Option<u64> {
        loop {
            if let Some(&offset) = self.fields.get(&(ty.to_string(), field.to_string())) {
                return Some(offset);
            }
            ty = self.types.get(ty)?.0.as_deref()?;
        }
    }
}

#[test]
fn a_jvms_own_tables_read_as_its_serviceability_agent_reads_them() {
    if !require_bpf("a_jvms_own_tables_read_as_its_serviceability_agent_reads_them") {
        return;
    }
    // No flag: the JVM as it runs in production.
    let java = start_java(&[]);
    let pid = java.pid.to_string();
    // Nothing asked of the JVM: no perf map, named from its memory (leaf frames, without frame
    // pointers).
    let run = run_agent(&["--pid", &pid, "--duration", "2s", "--jit-map-every", "0"]);
    assert!(!std::path::Path::new(&format!("/tmp/perf-{pid}.map")).exists(), "the JVM was asked for a perf map");
    let summary = run.bundle().summary();
    let hotspot = &summary["hotspot"];
    assert!(hotspot["cpu_share_named"].as_f64() > Some(0.5), "{hotspot}");
    assert_eq!(hotspot["error"], serde_json::Value::Null, "{hotspot}");
    assert_eq!(hotspot["missing"], serde_json::json!([]), "{hotspot}");
    assert_eq!((hotspot["unreadable"].as_u64(), hotspot["truncated"].as_bool()), (Some(0), Some(false)), "{hotspot}");

    // The release, as the JVM itself prints it.
    let version = Command::new("jcmd").args([&pid, "VM.version"]).output().expect("jcmd");
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let release = hotspot["vm_release"].as_str().expect("a release");
    assert!(version.lines().any(|l| l.ends_with(&format!(" version {release}"))), "{release} in:\n{version}");

    // Every offset and size the walk reads, as the serviceability agent reads them (it dumps
    // fields at an offset, not statics); and as many fields and types as it has of its own
    // (it adds pointer types, and GrowableArray's fields for each instantiation).
    let sa = SaTables::dump(java.pid);
    let mut compared = 0;
    for (name, value) in hotspot["layout"].as_object().expect("the layout") {
        let value = value.as_u64().expect("a number");
        let theirs = match name.split_once("::") {
            Some((ty, field)) => sa.inherited(ty, field).map(|o| o as i64),
            None => sa.types.get(name.as_str()).map(|t| t.1),
        };
        if let Some(theirs) = theirs {
            assert_eq!(value as i64, theirs, "{name}: ours {value}, jhsdb {theirs}");
            compared += 1;
        }
    }
    assert!(compared >= 18, "only {compared} of the layout's entries are in jhsdb's dump");
    let ours = hotspot["fields"].as_u64().expect("fields") as f64;
    let theirs = sa.fields.len() as f64;
    assert!(ours >= 0.95 * theirs, "{ours} fields at an offset read; jhsdb has {theirs}");

    // The code cache holds every compiled method the JVM's own perf map lists.
    let out = Command::new("jcmd").args([&pid, "Compiler.perfmap"]).output().expect("jcmd");
    assert!(out.status.success(), "jcmd Compiler.perfmap failed");
    let map_path = format!("/tmp/perf-{pid}.map");
    let map = std::fs::read_to_string(&map_path).expect("the perf map jcmd wrote");
    let _ = std::fs::remove_file(&map_path);
    let (low, high) = (hotspot["code_cache"]["low"].as_u64(), hotspot["code_cache"]["high"].as_u64());
    let (low, high) = (low.expect("low"), high.expect("high"));
    let starts: Vec<u64> = map
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().next()?.trim_start_matches("0x"), 16).ok())
        .collect();
    assert!(starts.len() > 100, "{} perf map entries", starts.len());
    let outside: Vec<_> = starts.iter().filter(|&&a| a < low || a >= high).collect();
    assert!(outside.is_empty(), "{} of {} compiled methods outside {low:#x}..{high:#x}", outside.len(), starts.len());
    cleanup(java);
}

/// A JVM that cannot be asked for a perf map (attach disabled): its compiled methods named from
/// its memory, against `perf record -g` over the same seconds with the map the JVM writes as it
/// exits (`-XX:+DumpPerfMapAtExit`).
#[test]
fn compiled_java_is_named_from_the_jvms_memory_as_its_perf_map_names_it() {
    if !require_bpf("compiled_java_is_named_from_the_jvms_memory_as_its_perf_map_names_it") {
        return;
    }
    favour_cpu();
    // Nothing inlined, as a perf map cannot say (inlining is compared against JFR below).
    let flags = [
        "-XX:+PreserveFramePointer",
        "-XX:+DisableAttachMechanism",
        "-XX:+UnlockDiagnosticVMOptions",
        "-XX:+DumpPerfMapAtExit",
        NO_INLINING[0],
        NO_INLINING[1],
    ];
    let mut java = start_java(&flags);
    warm_up(java.pid, 4.0);
    let pid = java.pid.to_string();
    let mut agent = RunningAgent::start(&["--pid", &pid, "--duration", "6s", "--frequency", "499"]);
    agent.wait_recording(Duration::from_secs(60));
    let mut perf = PerfRecording::start_frame_pointers(java.pid, 6, 499, &scratch_dir("hotspot-perf"));
    let run = agent.finish();
    perf.wait();
    java.terminate();
    let theirs = perf.finish();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));

    let bundle = run.bundle();
    let summary = bundle.summary();
    assert_ne!(summary["jit"]["map_found"], true, "no perf map while the agent records: {}", summary["jit"]);
    let hotspot = &summary["hotspot"];
    assert_eq!(hotspot["naming_error"], serde_json::Value::Null, "{hotspot}");
    assert!(hotspot["cpu_share_named"].as_f64() > Some(0.9), "{hotspot}");
    let ours = bundle.folded("cpu.folded");
    let is_java = |frame: &str, name: &str| frame.contains(&format!("Chain.{name}("));
    assert_shares_match(&ours, &theirs, &["leafSpin", "outerLoop", "sideLoop"], is_java);
    // Named as Java writes a method: class, name and parameters.
    let leaf = |x: &str| x == "Chain.leafSpin(int)" || x.starts_with("Chain.leafSpin(int) (Chain.java:");
    assert!(ours.iter().any(|f| f.frames.iter().any(|x| leaf(x))), "no Chain.leafSpin(int) frame");
}

/// Java stacks with no flag and no attach, against JFR, HotSpot's own profiler, on the same JVM
/// over the same seconds: a JVM without frame pointers, attach disabled. Every method JFR puts
/// in at least 10% of the main thread's samples, within 5 points inclusive (inlined methods as
/// their own frames, the interpreted `main` too); the hottest chain the same; and the stacks
/// whole, down to the thread's start; `main`'s line. Nothing is asked of the JVM (JFR starts
/// with it).
#[test]
fn java_stacks_without_frame_pointers_read_as_jfr_records_them() {
    if !require_bpf("java_stacks_without_frame_pointers_read_as_jfr_records_them") {
        return;
    }
    stacks_read_as_jfr_records_them(&Jdk::host(), &[], true);
}

/// The same on Debian 13's JDK 21, in a Debian 13 root of its own.
#[test]
fn jdk_21_stacks_in_a_debian_13_root_read_as_jfr_records_them() {
    if !require_bpf("jdk_21_stacks_in_a_debian_13_root_read_as_jfr_records_them") {
        return;
    }
    let jdk = debian_jdk(JDK_21);
    stacks_read_as_jfr_records_them(&jdk, &[], true);
}

/// The same on Debian unstable's JDK 25, in an unstable root of its own: its layout of code
/// blobs, and of what an nmethod inlined (in the nmethod's immutable and mutable data, from 23).
#[test]
fn jdk_25_stacks_without_frame_pointers_read_as_jfr_records_them() {
    if !require_bpf("jdk_25_stacks_without_frame_pointers_read_as_jfr_records_them") {
        return;
    }
    let jdk = debian_jdk(JDK_25);
    stacks_read_as_jfr_records_them(&jdk, &[], true);
}

/// Code the JIT compiles while the agent records (the main thread starts methods it never ran
/// once the probes record): walks that stop in it before the agent has read it are counted,
/// and the agent reads it at once (`--code-check`), not at the next interval. Nine in ten of
/// those methods' samples, and more, are walked whole (with the code read each interval only,
/// 212 of 399 were, in two runs of two).
#[test]
fn code_compiled_while_recorded_is_walked_whole_within_a_code_check() {
    if !require_bpf("code_compiled_while_recorded_is_walked_whole_within_a_code_check") {
        return;
    }
    favour_cpu();
    let go = scratch_dir("hotspot-late").join(format!("go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let late = ["late", go.to_str().expect("a UTF-8 path")];
    let mut java = start_chain(&Jdk::host(), &["-XX:+DisableAttachMechanism"], &late);
    let pid = java.pid.to_string();
    let mut agent = RunningAgent::start(&["--pid", &pid, "--duration", "4s"]);
    agent.wait_recording(Duration::from_secs(60));
    std::fs::write(&go, b"").expect("tell the fixture to start");
    let run = agent.finish();
    java.terminate();
    let _ = std::fs::remove_file(&go);
    let bundle = run.bundle();
    let stops = &bundle.summary()["dropped"]["new_code_stops"];
    let hotspot = &bundle.summary()["hotspot"];
    let late: Vec<_> = bundle
        .folded("cpu.folded")
        .into_iter()
        .filter(|f| f.frames[0] == "java" && f.frames.iter().any(|x| x.starts_with("Chain.lateSpin(")))
        .collect();
    let total = late.iter().map(|f| f.weight).sum::<u64>();
    let whole = late.iter().filter(|f| f.frames.iter().any(|x| x == "JavaMain")).map(|f| f.weight).sum::<u64>();
    eprintln!("lateSpin's samples walked to JavaMain: {whole} of {total}; walks stopped in new code: {stops}");
    // Named from the JVM's memory on every kernel.
    assert!(total > 100, "{total} samples in Chain.lateSpin");
    if !autodump_tests::kernel_has_bpf_loop() {
        // The kernel matrix's 5.10: frame pointers only (HotSpot's code keeps none), and the
        // summary says why.
        assert_eq!(hotspot["frames_walked"], false, "{hotspot}");
        let why = hotspot["walk_error"].as_str().unwrap_or_default();
        assert!(why.contains("frame pointer"), "{hotspot}");
        return;
    }
    assert_eq!(hotspot["frames_walked"], true, "{hotspot}");
    let mut short: Vec<_> = late.iter().filter(|f| !f.frames.iter().any(|x| x == "JavaMain")).collect();
    short.sort_by_key(|f| std::cmp::Reverse(f.weight));
    for f in short.iter().take(3) {
        eprintln!("  stopped short ({}): {}", f.weight, f.frames.join(";"));
    }
    assert!(whole as f64 >= 0.85 * total as f64, "{whole} of {total} samples walked whole");
}

fn stacks_read_as_jfr_records_them(jdk: &Jdk, flags: &[&str], inlining: bool) {
    favour_cpu();
    let (dir, on_host) = jdk.scratch("hotspot-jfr");
    let name = format!("chain-{}.jfr", std::process::id());
    let (recording, on_host) = (format!("{dir}/{name}"), on_host.join(&name));
    let jfr = format!("-XX:StartFlightRecording=filename={recording},settings=profile,dumponexit=true");
    // JFR says it started on standard output, where the fixture says it is ready.
    let mut all = vec!["-XX:+DisableAttachMechanism", "-Xlog:jfr+startup=off", &jfr];
    all.extend_from_slice(flags);
    let mut java = start_java_of(jdk, &all);
    warm_up(java.pid, 4.0);
    let (run, from, to) = autodump_tests::record_between(java.pid, "6s");
    java.terminate();
    let bundle = run.bundle();
    let hotspot = &bundle.summary()["hotspot"];
    assert_eq!(hotspot["inlining"], inlining, "{hotspot}");
    if inlining {
        assert!(hotspot["naming"]["inlined"].as_u64() > Some(0), "{hotspot}");
    }
    assert_eq!(hotspot["frames_walked"], true, "{hotspot}");
    assert_eq!(bundle.summary()["jit"], serde_json::Value::Null, "nothing asked of the JVM");

    let theirs: Vec<_> = autodump_tests::jfr::execution_samples(jdk.tool("jfr"), recording.as_ref())
        .into_iter()
        .filter(|s| s.thread == "main" && (from..to).contains(&s.time))
        .collect();
    let _ = std::fs::remove_file(&on_host);
    assert!(theirs.len() > 100, "{} JFR samples of the main thread in the window", theirs.len());
    let ours: Vec<_> = bundle.folded("cpu.folded").into_iter().filter(|f| f.frames[0] == "java").collect();
    let total = ours.iter().map(|f| f.weight).sum::<u64>() as f64;
    // Whole: through every Java frame and the call stub to the launcher's thread (`JavaMain`,
    // under which only libc's thread start lies, named where its debug symbols are).
    let whole = ours.iter().filter(|f| f.frames.iter().any(|x| x == "JavaMain")).map(|f| f.weight).sum::<u64>();
    eprintln!("main thread's samples walked to JavaMain: {:.1}%", whole as f64 / total * 100.0);
    // Where the walks that stopped short stopped: the heaviest few, innermost frames last.
    let mut short: Vec<_> = ours.iter().filter(|f| !f.frames.iter().any(|x| x == "JavaMain")).collect();
    short.sort_by_key(|f| std::cmp::Reverse(f.weight));
    for f in short.iter().take(3) {
        eprintln!("  stopped short ({}): {}", f.weight, f.frames.join(";"));
    }
    assert!(whole as f64 >= 0.9 * total, "{whole} of {total} samples walked whole");
    // The verdict names the hot Java method.
    let verdict = bundle.summary()["verdict"].as_str().unwrap_or_default().to_string();
    assert!(verdict.contains("% of on-CPU in Chain.leafSpin("), "{verdict}");
    let mut counts = HashMap::<&str, usize>::new();
    for s in &theirs {
        let mut seen: Vec<&str> = s.frames.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for m in seen {
            *counts.entry(m).or_default() += 1;
        }
    }
    let mut methods: Vec<&str> = counts.iter().filter(|(_, &n)| n * 10 >= theirs.len()).map(|(&m, _)| m).collect();
    methods.sort_unstable();
    for method in ["Chain.leafSpin", "Chain.middleHop", "Chain.outerLoop", "Chain.main"] {
        assert!(methods.contains(&method), "JFR puts {method} under 10%: {methods:?}");
    }
    for method in methods {
        let named = |frame: &str| frame.split('(').next() == Some(method);
        let mine = ours.iter().filter(|f| f.frames.iter().any(|x| named(x))).map(|f| f.weight).sum::<u64>();
        let mine = mine as f64 / total;
        let jfr = counts[method] as f64 / theirs.len() as f64;
        eprintln!("{method}: ours {:.1}%, JFR {:.1}%", mine * 100.0, jfr * 100.0);
        assert!((mine - jfr).abs() <= SHARE_TOLERANCE, "{method}: ours {mine:.3}, JFR {jfr:.3}");
    }
    // The hot chain, innermost first, as JFR records it most often.
    let chain = |frames: &[String]| -> Vec<String> {
        frames.iter().filter_map(|f| Some(f.strip_prefix("Chain.")?.split('(').next()?.to_string())).take(4).collect()
    };
    let top = |stacks: Vec<(Vec<String>, u64)>| {
        let mut counts = HashMap::<Vec<String>, u64>::new();
        for (c, w) in stacks {
            *counts.entry(c).or_default() += w;
        }
        counts.into_iter().max_by_key(|(_, w)| *w).map(|(c, _)| c)
    };
    let jfr_top = top(theirs.iter().map(|s| (chain(&s.frames), 1)).collect());
    let our_top =
        top(ours.iter().map(|f| (chain(&f.frames.iter().rev().cloned().collect::<Vec<_>>()), f.weight)).collect());
    assert_eq!(our_top, jfr_top, "the hottest chain");
    // Each method's line on the hot chain (`main` interpreted, the others compiled, their lines
    // from the compiler's debug information), as JFR reads it most often.
    for method in ["Chain.leafSpin", "Chain.middleHop", "Chain.outerLoop", "Chain.main"] {
        let jfr_lines = top(theirs
            .iter()
            .filter_map(|s| {
                let at = s.frames.iter().position(|f| f == method)?;
                Some((vec![s.lines.get(at).copied().flatten()?.to_string()], 1))
            })
            .collect());
        let our_lines = top(ours
            .iter()
            .filter_map(|f| {
                let frame = f.frames.iter().find(|x| x.split('(').next() == Some(method))?;
                let line = frame.rsplit(':').next()?.strip_suffix(')')?;
                Some((vec![line.to_string()], f.weight))
            })
            .collect());
        eprintln!("{method}: line ours {our_lines:?}, JFR {jfr_lines:?}");
        assert!(jfr_lines.is_some(), "JFR gave {method}'s line");
        assert_eq!(our_lines, jfr_lines, "{method}'s line");
    }
    let expected = ["leafSpin", "middleHop", "outerLoop", "main"].map(String::from).to_vec();
    assert_eq!(jfr_top, Some(expected));
}
