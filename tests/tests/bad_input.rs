//! Bad input: one clear line on stderr and a distinct exit code, never a panic. (Missing
//! privileges, exit code 4, are tested in privilege.rs.)

use autodump_tests::{require_bpf, run_agent, scratch_dir, AgentRun};

/// Exit codes documented in README.md.
const USAGE: i32 = 2;
const NO_SUCH_PROCESS: i32 = 3;
const KERNEL_UNSUPPORTED: i32 = 5;
const OUTPUT: i32 = 6;

#[track_caller]
fn assert_fails(run: &AgentRun, code: i32, mentions: &str) {
    assert_eq!(run.code, code, "exit code; stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got {lines:?}");
    assert!(lines[0].starts_with("autodump-agent: error: "), "got {:?}", lines[0]);
    assert!(lines[0].contains(mentions), "{:?} should mention {mentions:?}", lines[0]);
    assert!(!run.stderr.contains("panicked"), "never a panic");
    assert!(run.stdout.is_empty(), "nothing on stdout when failing");
}

/// A pid that is not in use: the highest the kernel hands out.
fn unused_pid() -> String {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    (1..max).rev().find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).expect("a free pid").to_string()
}

#[test]
fn invalid_values_are_usage_errors() {
    let me = std::process::id().to_string();
    assert_fails(&run_agent(&["--pid", &me, "--duration", "abc"]), USAGE, "abc");
    assert_fails(&run_agent(&["--pid", &me, "--frequency", "0"]), USAGE, "frequency");
    assert_fails(&run_agent(&["--pid", &me, "--duration", "0s"]), USAGE, "zero");
    assert_fails(&run_agent(&["--pid", "nope"]), USAGE, "nope");
    assert_fails(&run_agent(&[]), USAGE, "--pid");
}

#[test]
fn missing_process_is_reported() {
    assert_fails(&run_agent(&["--pid", &unused_pid(), "--duration", "1s"]), NO_SUCH_PROCESS, "no process with pid");
}

#[test]
fn unusable_output_directory_is_reported() {
    let me = std::process::id().to_string();
    let file = scratch_dir("bad_out").join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("sub");
    assert_fails(
        &run_agent(&["--pid", &me, "--duration", "1s", "--out", under_file.to_str().unwrap()]),
        OUTPUT,
        "output directory",
    );
    assert_fails(&run_agent(&["--pid", &me, "--duration", "1s", "--out", "/proc/autodump"]), OUTPUT, "/proc/autodump");
}

#[test]
fn kernel_without_btf_is_reported() {
    if !require_bpf("kernel_without_btf_is_reported") {
        return;
    }
    let me = std::process::id().to_string();
    let out = scratch_dir("no_btf");
    let run =
        run_agent(&["--pid", &me, "--duration", "1s", "--out", out.to_str().unwrap(), "--btf", "/nonexistent/vmlinux"]);
    assert_fails(&run, KERNEL_UNSUPPORTED, "BTF");
}

#[test]
fn service_targets_that_cannot_work_are_usage_errors() {
    // This machine's PID 1 is not systemd; where it is, the unit would simply not exist yet.
    if !std::path::Path::new("/run/systemd/system").is_dir() {
        assert_fails(&run_agent(&["--unit", "api.service"]), USAGE, "systemd is not running");
    }
    assert_fails(&run_agent(&["--exe", "/bin/true", "--duration", "1s"]), USAGE, "give --pid");
    assert_fails(&run_agent(&["--exe", "/bin/true", "--comm", "x"]), USAGE, "--comm");
    assert_fails(&run_agent(&["--pid", &unused_pid()]), NO_SUCH_PROCESS, "no process with pid");
    let dir = scratch_dir("bad_config");
    let config = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        run_agent(&["--config", path.to_str().unwrap(), "--out", dir.join("out").to_str().unwrap()])
    };
    assert_fails(&config("key.toml", "[[target]]\nname = \"api\"\nexe = \"/x\"\ncolour = \"red\"\n"), USAGE, "colour");
    assert_fails(&config("none.toml", "[[target]]\nname = \"api\"\n"), USAGE, "target 'api' has no selector");
    assert_fails(&config("empty.toml", "[rules]\ncpu = \"abs=90%\"\n"), USAGE, "nothing to watch");
}
