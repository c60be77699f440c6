//! Helpers for the Python tests: the interpreters to run, and reading thread dumps (ours and
//! `py-spy dump`'s) and folded stacks (ours and `py-spy record --format raw`'s) alike.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{host_tool_available, require_bpf, skip, Fixture};

/// Debian 12's interpreter (3.11, libpython linked in statically, `.symtab` stripped).
pub const PYTHON: &str = "/usr/bin/python3.11";
/// The reader's frame cap (`MAX_PY_FRAMES`): deeper stacks keep their innermost frames.
pub const FRAME_CAP: usize = 256;

/// A Python frame as both tools print it: (function, file name, line).
pub type PyFrame = (String, String, u32);

/// One thread of a dump: its state word and frames (function, file name, line), innermost first.
#[derive(Debug, Default)]
pub struct Thread {
    pub state: String,
    pub frames: Vec<PyFrame>,
    pub cut: bool,
}

/// Reads `python-threads.txt` or `py-spy dump`'s output (the same layout) by thread id.
pub fn parse_dump(text: &str) -> BTreeMap<u32, Thread> {
    let mut threads: BTreeMap<u32, Thread> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            let (tid, rest) = rest.split_once(' ').expect("Thread TID (state)");
            let tid = u32::from_str_radix(tid.trim_start_matches("0x"), if tid.starts_with("0x") { 16 } else { 10 });
            let state = rest.trim_start_matches('(').split(')').next().unwrap_or_default().to_string();
            current = tid.ok();
            threads.insert(current.expect("a thread id"), Thread { state, ..Thread::default() });
            continue;
        }
        let (Some(tid), Some(frame)) = (current, line.strip_prefix("    ")) else { continue };
        let thread = threads.get_mut(&tid).unwrap();
        if frame.starts_with("... (outer frames cut") {
            thread.cut = true;
            continue;
        }
        let Some((function, place)) = frame.rsplit_once(" (") else { continue };
        let Some((file, line)) = place.trim_end_matches(')').rsplit_once(':') else { continue };
        let file = file.rsplit('/').next().unwrap_or(file).to_string();
        thread.frames.push((function.trim().to_string(), file, line.parse().unwrap_or(0)));
    }
    threads
}

pub fn functions(t: &Thread) -> Vec<&str> {
    t.frames.iter().map(|f| f.0.as_str()).collect()
}

/// A CPython to run fixtures on (see `roots::Interpreter`).
pub type Python = crate::roots::Interpreter;

pub use crate::roots::ROOT_SUITES;

impl Python {
    /// `3.14.10`, as the interpreter says.
    pub fn version(&self) -> String {
        let out = self.command().args(["-c", "import platform; print(platform.python_version())"]).output();
        String::from_utf8(out.expect("the interpreter runs").stdout).unwrap().trim().to_string()
    }
}

/// The interpreter `cargo xtask setup` unpacked for `suite`, if it has (its root's `ready` file
/// names it, and is written last).
pub fn in_root(suite: &str) -> Option<Python> {
    let root = crate::roots::root(suite);
    let exe = std::fs::read_to_string(root.join("ready")).ok()?;
    Some(Python::in_root(root, exe.trim()))
}

/// pyenv's builds of 3.12 and 3.13, where this machine has them (a fresh machine of this kind
/// has none).
fn pyenv_pythons() -> Vec<Python> {
    let Ok(versions) = std::fs::read_dir("/root/.pyenv/versions") else { return Vec::new() };
    let mut found: Vec<PathBuf> = versions
        .flatten()
        .filter(|v| ["3.12.", "3.13."].iter().any(|p| v.file_name().to_string_lossy().starts_with(p)))
        .map(|v| v.path().join("bin/python3"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.into_iter().map(Python::host).collect()
}

/// The Python frames of a folded line, root first: (function, file name, line). Python frames
/// read `qualname (path/file.py:line)` in ours and py-spy's alike.
pub fn python_frames(line: &str) -> Vec<PyFrame> {
    let stack = line.rsplit_once(' ').map_or(line, |(s, _)| s);
    stack
        .split(';')
        .filter_map(|frame| {
            let (function, place) = frame.rsplit_once(" (")?;
            let (file, line) = place.strip_suffix(')')?.rsplit_once(':')?;
            let file = file.rsplit('/').next()?;
            let line: u32 = line.parse().ok()?;
            file.ends_with(".py").then(|| (function.to_string(), file.to_string(), line))
        })
        .collect()
}

pub fn weight(line: &str) -> u64 {
    line.rsplit_once(' ').and_then(|(_, w)| w.parse().ok()).unwrap_or(0)
}

/// Share of the weight of `folded` whose Python frames include each function.
pub fn inclusive_shares(folded: &str) -> BTreeMap<String, f64> {
    let total: u64 = folded.lines().map(weight).sum();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for line in folded.lines() {
        let mut names: Vec<String> = python_frames(line).into_iter().map(|f| f.0).collect();
        names.sort();
        names.dedup();
        for name in names {
            *by.entry(name).or_default() += weight(line);
        }
    }
    by.into_iter().map(|(k, v)| (k, v as f64 / total.max(1) as f64)).collect()
}

/// Compares the user-space stacks of `cpu_folded` (ours) with py-spy's raw output: every
/// function py-spy puts at 10% or more is within `tolerance` of its share there. Our shares, and
/// how many functions were compared.
pub fn assert_shares_like_py_spy(cpu_folded: &str, spy: &str, tolerance: f64) -> (BTreeMap<String, f64>, usize) {
    let user: String = cpu_folded.lines().filter(|l| !l.contains("_[k]")).map(|l| format!("{l}\n")).collect();
    let (ours, theirs) = (inclusive_shares(&user), inclusive_shares(spy));
    let mut compared = 0;
    for (function, spy) in theirs.iter().filter(|(_, s)| **s >= 0.10) {
        let mine = ours.get(function).copied().unwrap_or(0.0);
        eprintln!("{function:<45} ours {:>5.1}%  py-spy {:>5.1}%", mine * 100.0, spy * 100.0);
        assert!((mine - spy).abs() <= tolerance, "{function}: {mine:.3} against py-spy's {spy:.3}");
        compared += 1;
    }
    (ours, compared)
}

/// Debian 12's python3.11, then Debian 13's and unstable's interpreters in their roots (not in a
/// kernel-matrix guest, which carries 3.11 only); a missing root is a skip, which fails under
/// AUTODUMP_REQUIRE_BPF.
pub fn debian_pythons(test: &str) -> Vec<Python> {
    let mut pythons = vec![Python::host(PYTHON)];
    if crate::in_vm() {
        return pythons;
    }
    for suite in ROOT_SUITES {
        match in_root(suite) {
            Some(python) => pythons.push(python),
            None => {
                skip(test, &format!("no Debian {suite} root (cargo xtask setup makes it)"));
            }
        }
    }
    pythons
}

/// Runs `check` on every Debian interpreter (`debian_pythons`) and on pyenv's where the machine
/// has them, when BPF and py-spy are there (a test that needs them fails under
/// AUTODUMP_REQUIRE_BPF).
pub fn with_each_python(test: &str, check: fn(&Python)) {
    if !require_bpf(test) {
        return;
    }
    if !host_tool_available("py-spy") && !skip(test, "no py-spy (setup installs it)") {
        return;
    }
    for python in debian_pythons(test).iter().chain(&pyenv_pythons()) {
        eprintln!("== {python}");
        check(python);
    }
}

/// Starts `python` on the fixture script `tests/fixtures/python/NAME`, until it prints "ready".
pub fn start(python: &Python, name: &str, args: &[&str]) -> Fixture {
    let mut command = python.command();
    command.arg(python.fixture(name)).args(args);
    Fixture::spawn(command, name)
}

/// py-spy and the agent sampling `pid` at about 500 Hz for the same 5 s (2,500 samples each, so
/// that two honest estimates of a 70% share differ by more than 5 points about once in a
/// thousand runs); `extra` adds to py-spy's flags. The agent's bundle, and py-spy's raw folded
/// stacks.
pub fn record_with_py_spy(pid: u32, scratch: &Path, extra: &[&str]) -> (crate::Bundle, String) {
    let raw = scratch.join("py-spy.raw");
    let _ = std::fs::remove_file(&raw);
    let pid = pid.to_string();
    let mut spy = Command::new("py-spy")
        .args(["record", "--pid", &pid, "--duration", "5", "--rate", "500", "--format", "raw", "--nonblocking"])
        .args(extra)
        .arg("-o")
        .arg(&raw)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("py-spy");
    let run = crate::run_agent(&["--pid", &pid, "--duration", "5s", "--frequency", "499"]);
    assert!(spy.wait().is_ok_and(|s| s.success()), "py-spy record failed");
    (run.bundle(), std::fs::read_to_string(&raw).expect("py-spy's output"))
}
