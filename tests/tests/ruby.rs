//! Ruby programs read like Ruby: Ruby frames in the stacks, named `label (file:line)` with the C
//! frames around them, on and off the CPU, and a thread dump in every bundle, checked against
//! rbspy on the same process over the same seconds (Debian 12's 3.1), and where rbspy cannot read
//! the interpreter against Ruby's own sampler, stackprof, in a second run of the same program
//! (Debian 13's 3.3), or the program's own CPU clocks around its methods (unstable's 3.4), and
//! against Ruby's own backtraces (all three).

use std::time::Duration;

use autodump_tests::{
    favour_cpu,
    ruby::{self, record_with_rbspy, ruby_frames, stackprof_shares, with_each_ruby, Reference, Ruby},
    run_agent, scratch_dir,
};

#[test]
fn ruby_on_cpu_shares_match_rbspy_or_stackprof() {
    // A starved target runs in bursts, and rbspy's samples (at wall-clock times) drift from ours
    // (on its CPU time): 7 points seen beside a test that favours its CPU.
    favour_cpu();
    with_each_ruby("ruby_on_cpu_shares_match_rbspy_or_stackprof", |ruby, reference| {
        let mut fixture = ruby::start(ruby, "busy.rb", &[]);
        let scratch = scratch_dir("ruby_on_cpu");
        let (bundle, theirs) = match reference {
            Reference::Rbspy => {
                let (bundle, collapsed) = record_with_rbspy(fixture.pid, &scratch, &["--on-cpu"]);
                (bundle, ruby::inclusive_shares(&collapsed))
            }
            Reference::Stackprof => {
                let pid = fixture.pid.to_string();
                let run = run_agent(&["--pid", &pid, "--duration", "5s", "--frequency", "499"]);
                (run.bundle(), stackprof_shares(ruby, "busy.rb", "5"))
            }
            Reference::OwnClocks => {
                let pid = fixture.pid.to_string();
                let during = || run_agent(&["--pid", &pid, "--duration", "5s", "--frequency", "499"]);
                let (run, clocks) = ruby::own_clock_shares(&mut fixture, during);
                (run.bundle(), clocks)
            }
        };
        let summary = bundle.summary();
        let status = &summary["ruby"];
        eprintln!("{status}");
        if !autodump_tests::kernel_has_bpf_loop() {
            // The kernel matrix's 5.10: frame pointers only, and the summary says why.
            assert_eq!(status["frames_in_stacks"], false, "{status}");
            let why = status["frames_not_in_stacks"].as_str().unwrap_or_default();
            assert!(why.contains("frame pointer"), "{status}");
            assert_eq!(status["threads"].as_u64(), Some(2), "the thread dump has both threads: {status}");
            return;
        }
        assert_eq!(status["frames_in_stacks"], true, "{status}");
        assert!(status["cpu_share_with_ruby"].as_f64() > Some(0.95), "{status}");
        let cpu = bundle.read("cpu.folded");
        let compared = ruby::assert_shares_like(&cpu, &theirs, reference, reference.tolerance());
        let least = if reference == Reference::OwnClocks { 2 } else { 4 };
        assert!(compared >= least, "run, work, spin, heavy at least (heavy, light by clocks): {compared}");
        // Merged: the Ruby frames sit on the interpreter's own C frames, from `_start` up, and
        // every stack has them all, from <main> (the C code between them in its place).
        let lines: Vec<&str> = cpu.lines().filter(|l| !ruby_frames(l).is_empty()).collect();
        let weight = |l: &str| l.rsplit_once(' ').and_then(|(_, w)| w.parse::<u64>().ok()).unwrap_or(0);
        let total: u64 = lines.iter().map(|l| weight(l)).sum();
        let rooted = |l: &&&str| ["_start", "ruby_run_node"].iter().all(|root| l.split(';').any(|f| f == *root));
        let on_main: u64 = lines.iter().filter(rooted).map(|l| weight(l)).sum();
        assert!(on_main * 10 >= total * 9, "{on_main} of {total} samples reach _start");
        let whole: u64 = lines
            .iter()
            .filter(|l| {
                let labels: Vec<String> = ruby_frames(l).into_iter().map(|f| f.0).collect();
                let chain = ["<main>", "run", "work"];
                let under = |m: &str| {
                    let block = format!("block in {m}");
                    let order = [m, "clocked", block.as_str(), "spin"];
                    let mut at = labels.iter().skip(3);
                    order.iter().all(|want| at.any(|l| l == want))
                };
                labels.iter().take(3).map(String::as_str).eq(chain) && (under("heavy") || under("light"))
            })
            .map(|l| weight(l))
            .sum();
        eprintln!("{whole} of {total} samples have the whole chain, <main> to spin");
        assert!(whole * 100 >= total * 95, "{whole} of {total} samples have <main> .. spin in order");
        let spin = lines.iter().find(|l| l.contains("spin (")).expect("a stack in spin");
        let own = |f: &(String, String, u32)| {
            f.1.is_empty() || f.1.starts_with("<internal:") || (f.1 == "busy.rb" && f.2 > 0)
        };
        assert!(ruby_frames(spin).iter().all(own), "{spin}");
    });
}

/// A Ruby program nobody here wrote: Debian's rdoc documenting Ruby's own library, its shares
/// against rbspy's on the same process over the same seconds.
#[test]
fn rdoc_shares_match_rbspy() {
    const TEST: &str = "rdoc_shares_match_rbspy";
    if !ruby::rbspy_ready(TEST) {
        return;
    }
    favour_cpu(); // as the shares above
    let scratch = scratch_dir("ruby_rdoc");
    let mut rdoc = std::process::Command::new(ruby::RUBY)
        .args(["/usr/bin/rdoc3.1", "--quiet", "--output"])
        .arg(scratch.join("doc"))
        .arg("/usr/lib/ruby/3.1.0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rdoc3.1");
    std::thread::sleep(Duration::from_secs(1));
    let (bundle, collapsed) = record_with_rbspy(rdoc.id(), &scratch, &["--on-cpu"]);
    let _ = rdoc.kill();
    let _ = rdoc.wait();
    let status = &bundle.summary()["ruby"];
    assert!(status["cpu_share_with_ruby"].as_f64() > Some(0.9), "{status}");
    let compared = ruby::assert_shares_like(
        &bundle.read("cpu.folded"),
        &ruby::inclusive_shares(&collapsed),
        Reference::Rbspy,
        Reference::Rbspy.tolerance(),
    );
    assert!(compared >= 5, "rdoc's methods at 10% or more: {compared}");
}

#[test]
fn ruby_off_cpu_stacks_name_where_threads_wait() {
    with_each_ruby("ruby_off_cpu_stacks_name_where_threads_wait", |ruby, _| {
        let fixture = ruby::start(ruby, "waits.rb", &[]);
        let pid = fixture.pid.to_string();
        let bundle = run_agent(&["--pid", &pid, "--duration", "3s"]).bundle();
        let window = bundle.window_seconds();
        let offcpu = bundle.read("offcpu.folded");
        // Each thread waits nearly all the time, under its own method and in the C function that
        // blocks: asleep, on the Mutex, in the socket read.
        for (thread, method, blocks) in
            [("sleeper", "nap", "sleep"), ("waiter", "wait_for", "synchronize"), ("reader", "read_from", "read")]
        {
            let (mut all, mut under, mut blocked) = (0u64, 0u64, 0u64);
            for line in offcpu.lines().filter(|l| l.starts_with(&format!("{thread};"))) {
                let weight: u64 = line.rsplit_once(' ').and_then(|(_, w)| w.parse().ok()).unwrap_or(0);
                let frames = ruby_frames(line);
                all += weight;
                if frames.iter().any(|f| f.0 == method && f.1 == "waits.rb" && f.2 > 0) {
                    under += weight;
                    if frames.last().is_some_and(|f| f.0 == format!("{blocks} [c function]")) {
                        blocked += weight;
                    }
                }
            }
            let seconds = all as f64 / 1e6;
            eprintln!(
                "{thread}: {seconds:.2} s off-CPU of {window:.2} s, {:.0}% under {method}, {:.0}% in {blocks}",
                under as f64 * 100.0 / all.max(1) as f64,
                blocked as f64 * 100.0 / all.max(1) as f64
            );
            assert!(seconds >= 0.8 * window, "{thread} waited {seconds:.2} s of {window:.2} s");
            assert!(under * 100 >= all * 95, "{thread}'s waits are under {method}");
            assert!(blocked * 100 >= all * 80, "{thread} waits in {blocks}");
        }
    });
}

#[test]
fn ruby_threads_read_as_ruby_and_rbspy_see_them() {
    with_each_ruby("ruby_threads_read_as_ruby_and_rbspy_see_them", |ruby: &Ruby, reference| {
        let fixture = ruby::start(ruby, "nested.rb", &[]);
        // Ruby's own view of the main thread, once it sleeps.
        let mut own = Vec::new();
        while let Some(line) = fixture.next_line(Duration::from_secs(10)).filter(|l| l != "end") {
            let (label, place) =
                line.strip_prefix("frame ").and_then(|f| f.rsplit_once(' ')).expect("frame LABEL FILE:LINE");
            own.push(format!("{} {place}", unqualified(label)));
        }
        let pid = fixture.pid.to_string();
        let bundle = run_agent(&["--pid", &pid, "--duration", "1s"]).bundle();
        let dump = bundle.read("ruby-threads.txt");
        eprintln!("{dump}");
        // The main thread is listed first; its frames, as (label, file:line) and C functions by name.
        let ours: Vec<String> =
            dump.lines().skip(1).take_while(|l| l.starts_with("    ")).map(|l| dump_frame(l.trim())).collect();
        // Ruby places a C function where its caller is; ours are by name, as rbspy's.
        let same = ours.len() == own.len()
            && ours.iter().zip(&own).all(|(o, r)| o == r || (!o.contains(' ') && r.starts_with(&format!("{o} "))));
        assert!(same, "the main thread, as Ruby sees it:\n ours {ours:?}\n Ruby's {own:?}");
        if reference == Reference::Rbspy {
            let out =
                std::process::Command::new("rbspy").args(["snapshot", "--pid", &pid]).output().expect("rbspy snapshot");
            let snapshot = String::from_utf8_lossy(&out.stdout);
            eprintln!("rbspy snapshot:\n{snapshot}");
            // rbspy shows the thread that holds the interpreter's lock, root first, names no C
            // function ("(unknown)"), and gives a caller the line after its call (the instruction
            // its pc points to): its methods must be those of one thread of ours.
            let theirs: Vec<&str> = snapshot
                .lines()
                .rev()
                .filter_map(|l| l.trim().rsplit_once(" - ").map(|(label, _)| label))
                .filter(|l| !l.ends_with("[c function]"))
                .collect();
            let threads: Vec<Vec<&str>> = dump
                .split("Thread ")
                .map(|t| t.lines().skip(1).filter_map(|l| l.trim().rsplit_once(" (").map(|(label, _)| label)).collect())
                .collect();
            assert!(threads.contains(&theirs), "rbspy's {theirs:?} is none of our threads, {threads:?}");
        }
        let ruby = &bundle.summary()["ruby"];
        assert_eq!((ruby["threads_available"].as_bool(), ruby["threads"].as_u64()), (Some(true), Some(2)), "{ruby}");
    });
}

/// A frame of ours, `label (path:line)` or `name [c function]`, as `label file:line` or `name`.
fn dump_frame(frame: &str) -> String {
    match frame.strip_suffix(" [c function]") {
        Some(name) => name.to_string(),
        None => {
            let (label, place) = frame.rsplit_once(" (").expect("label (path:line)");
            format!("{label} {}", place.trim_end_matches(')').rsplit('/').next().unwrap_or_default())
        }
    }
}

/// A label without the class Ruby 3.4 qualifies methods with (`Object#c`, `Kernel#sleep`).
fn unqualified(label: &str) -> String {
    match label.split_once(['#', '.']) {
        Some((class, method)) if class.starts_with(char::is_uppercase) => method.to_string(),
        _ => label.to_string(),
    }
}
