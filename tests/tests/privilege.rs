//! Least privilege: as an unprivileged user holding exactly CAP_BPF, CAP_PERFMON and
//! CAP_SYS_PTRACE (as README says) the agent works; without any one of them it fails clearly.
//! The repository's systemd unit grants those, and the agent watches a service with them.

use std::{process::Command, time::Duration};

use autodump_tests::{agent, fixture_bin, own_copy, require_bpf, scratch_dir, AgentRun, Bundle, Fixture, RunningAgent};

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

/// The probes sampled the fixture's spinning thread, and /proc and the symbols named 90% of its
/// samples `hot_spin`. Three samples at the least: beside a test that favours its CPU
/// (`favour_cpu`), the thread may get only a tenth of one.
fn hot_thread_is_named(bundle: &Bundle) -> bool {
    let all = bundle.weight("cpu.folded", |f| f.frames[0] == "hot");
    let named = bundle.weight_in("cpu.folded", "hot", "hot_spin");
    eprintln!("hot thread: {named} of {all} samples in hot_spin");
    all >= 3 && named * 10 >= all * 9
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
    assert!(hot_thread_is_named(&bundle), "probes, /proc and symbols all work");
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

/// The repository's systemd unit: systemd accepts it, and the agent runs in watch mode with the
/// capabilities it grants (as root, whose capabilities the bounding set caps; no new privileges).
#[test]
fn the_systemd_unit_verifies_and_its_capabilities_suffice() {
    if !require_bpf("the_systemd_unit_verifies_and_its_capabilities_suffice") {
        return;
    }
    let unit = std::fs::read_to_string(autodump_tests::workspace().join("dist/autodump.service")).unwrap();
    let value = |key: &str| unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string);
    let bounding = value("CapabilityBoundingSet").expect("the unit caps its capabilities");
    assert_eq!(value("AmbientCapabilities").as_deref(), Some(bounding.as_str()));
    assert_eq!(value("Restart").as_deref(), Some("on-failure"));
    assert!(value("SystemCallFilter").is_none(), "no filter that could block bpf, perf_event_open or ptrace");
    assert!(value("ExecStart").unwrap().contains("--config /etc/autodump/config.toml"));
    if autodump_tests::host_tool_available("systemd-analyze") {
        let dir = scratch_dir("unit_verify");
        let path = dir.join("autodump.service");
        std::fs::write(&path, unit.replace("/usr/bin/autodump-agent", agent().to_str().unwrap())).unwrap();
        let verify = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
        assert!(verify.status.success(), "systemd-analyze verify: {}", String::from_utf8_lossy(&verify.stderr));
    }

    let caps: Vec<String> = bounding.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_lowercase()).collect();
    let set =
        std::iter::once("-all".to_string()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>().join(",");
    // Its own copy: the agent selects by executable, and a test beside it may run two_threads.
    let exe = own_copy(&fixture_bin("two_threads"), "unit_caps");
    let _fixture = Fixture::start_at(&exe, &[]);
    let out = scratch_dir("unit_caps");
    let mut command = Command::new("setpriv");
    command.arg(format!("--bounding-set={set}")).arg(format!("--inh-caps={set}")).arg("--no-new-privs");
    command.arg(agent()).args(["--exe", exe.to_str().unwrap(), "--interval", "500ms", "--out", out.to_str().unwrap()]);
    // setpriv execs the agent: same process. Two seconds of recording, then a manual bundle.
    let mut running = RunningAgent::spawn(command);
    running.wait_recording(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    running.signal(libc::SIGUSR1);
    let bundle = running.expect_bundle(Duration::from_secs(30), "a manual bundle");
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait_exit(Duration::from_secs(10)), Some(0), "it stops on SIGTERM");
    assert_eq!(bundle.summary()["target"]["selector"], format!("exe:{}", exe.display()));
    assert!(hot_thread_is_named(&bundle), "{}", bundle.dir.display());
}
