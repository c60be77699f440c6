//! Least privilege: as an unprivileged user holding exactly CAP_BPF, CAP_PERFMON and
//! CAP_SYS_PTRACE (as README says) the agent works; without any one of them it fails clearly.

use std::process::Command;

use autodump_tests::{agent, require_bpf, scratch_dir, AgentRun, Bundle, Fixture};

const CAPS: [&str; 3] = ["bpf", "perfmon", "sys_ptrace"];

/// Runs the agent as nobody with exactly `caps` (setpriv, from util-linux).
fn run_as_nobody_with(caps: &[&str], pid: u32, out: &std::path::Path) -> AgentRun {
    let set =
        std::iter::once("-all".to_string()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>().join(",");
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(agent())
        .args(["--pid", &pid.to_string(), "--duration", "2s", "--out", out.to_str().unwrap()])
        .output()
        .expect("run setpriv");
    AgentRun::from(output)
}

#[test]
fn runs_with_exactly_the_documented_capabilities() {
    if !require_bpf("runs_with_exactly_the_documented_capabilities") {
        return;
    }
    let fixture = Fixture::start("two_threads", &[]);
    let out = scratch_dir("least_privilege");
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    let run = run_as_nobody_with(&CAPS, fixture.pid, &out);
    let bundle: Bundle = run.bundle();
    assert!(bundle.weight_in("cpu.folded", "hot", "hot_spin") > 50, "probes, /proc and symbols all work");
    assert!(bundle.summary()["offcpu"]["total_us"].as_u64().unwrap() > 0);

    // Without any one of them, and without all of them: exit 4 and one line naming what is missing.
    let mut cases: Vec<(Vec<&str>, String)> = CAPS
        .iter()
        .map(|dropped| {
            (CAPS.iter().copied().filter(|c| c != dropped).collect(), format!("CAP_{}", dropped.to_uppercase()))
        })
        .collect();
    cases.push((Vec::new(), "CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE".into()));
    for (caps, missing) in cases {
        let run = run_as_nobody_with(&caps, fixture.pid, &out);
        assert_eq!(run.code, 4, "with {caps:?}: {}", run.stderr);
        let line = run.stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(line.starts_with(&format!("autodump-agent: error: missing {missing}:")), "names {missing}: {line}");
        assert!(run.stdout.is_empty());
    }
}
