//! What the agent does on a kernel that lacks something: every choice made from the kernel's
//! BTF is in the summary, a probe the kernel will not take costs only what it feeds (named in
//! the summary), and an agent that can record no profile at all exits 5 naming the probe.
//! `cargo xtask vmtest` runs these on each kernel of the matrix too.

use autodump_tests::{require_bpf, run_agent, scratch_dir, Fixture};

const KERNEL_UNSUPPORTED: i32 = 5;

#[test]
fn a_missing_exit_probe_costs_the_exit_code_only() {
    if !require_bpf("a_missing_exit_probe_costs_the_exit_code_only") {
        return;
    }
    let fixture = Fixture::start("two_threads", &[]);
    let out = scratch_dir("degraded_exit");
    let pid = fixture.pid.to_string();
    let args = ["--pid", &pid, "--duration", "2s", "--out", out.to_str().unwrap(), "--skip-probe", "process_exit"];
    let bundle = run_agent(&args).bundle();
    let summary = bundle.summary();
    let mut degraded = summary["probes"]["degraded"].as_array().unwrap().clone();
    // 5.10 (no bpf_loop) does not take the wake-up probe yet: said, and nothing else is lost.
    if !autodump_tests::kernel_has_bpf_loop() {
        degraded.retain(|d| d["probe"] != "sched_waking");
    }
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    assert_eq!(degraded[0]["probe"], "process_exit");
    assert!(degraded[0]["lost"].as_str().unwrap().contains("exit code"));
    let notes = summary["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap().contains("process_exit")), "{notes:?}");
    // Both profiles are still recorded.
    assert!(bundle.weight("cpu.folded", |f| f.frames.iter().any(|x| x == "hot_spin")) > 50);
    assert!(summary["offcpu"]["blocks"].as_u64().unwrap() > 0);
    // The choices made from this kernel's BTF are named.
    let features = &summary["probes"]["kernel_features"];
    assert!(features["switch_state"].is_string() && features["group_end"].is_string(), "{features}");
}

#[test]
fn no_profile_probe_at_all_is_kernel_unsupported() {
    if !require_bpf("no_profile_probe_at_all_is_kernel_unsupported") {
        return;
    }
    let fixture = Fixture::start("two_threads", &[]);
    let out = scratch_dir("degraded_all");
    let pid = fixture.pid.to_string();
    let run = run_agent(&[
        "--pid",
        &pid,
        "--duration",
        "1s",
        "--out",
        out.to_str().unwrap(),
        "--skip-probe",
        "on_cpu_sample",
        "--skip-probe",
        "sched_switch",
    ]);
    assert_eq!(run.code, KERNEL_UNSUPPORTED, "{}", run.stderr);
    let line = run.stderr.lines().find(|l| l.starts_with("autodump-agent: error:")).unwrap_or_default();
    assert!(line.contains("on_cpu_sample"), "the error names the probe: {line}");
    assert!(std::fs::read_dir(&out).unwrap().next().is_none(), "no bundle is written");
}
