//! Helpers for the Ruby tests: Debian's interpreters (12's 3.1 on the host, 13's 3.3 and
//! unstable's 3.4 in their roots), their references (rbspy; stackprof and the program's own CPU
//! clocks where rbspy cannot read the interpreter), and reading Ruby frames out of folded stacks
//! and thread dumps.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    host_tool_available, in_vm, require_bpf,
    roots::{self, Interpreter, ROOT_SUITES},
    skip, Fixture,
};

/// Debian 12's interpreter (3.1; the executable links `libruby-3.1.so`, whose `.symtab` is
/// stripped).
pub const RUBY: &str = "/usr/bin/ruby3.1";

/// A CRuby to run fixtures on.
pub type Ruby = Interpreter;

/// What the comparison of a version's shares is against. rbspy reads Debian 12's 3.1 only: from
/// 3.3 on, Debian's libruby hides the symbols it looks for ("Couldn't find Ruby VM address").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// rbspy, on the same process over the same seconds.
    Rbspy,
    /// Ruby's own sampler, stackprof, inside a second run of the same program (Debian 13 packages
    /// it for its 3.3).
    Stackprof,
    /// The program's own CPU clocks around its methods, over the same seconds (no Debian
    /// stackprof is built for 3.4).
    OwnClocks,
}

impl Reference {
    /// How far a share of ours may be from the reference's: 5 points from rbspy's, on the same
    /// process over the same seconds; 6 from stackprof's, taken in a second run of the program,
    /// and from the program's own clocks, which time whole method calls (5.4 points seen).
    pub fn tolerance(self) -> f64 {
        match self {
            Reference::Rbspy => 0.05,
            Reference::Stackprof | Reference::OwnClocks => 0.06,
        }
    }
}

/// The newest `/usr/bin/ruby3.N` in `suite`'s root, when setup put one there.
pub fn in_root(suite: &str) -> Option<Ruby> {
    let root = roots::root(suite);
    let newest = std::fs::read_dir(root.join("usr/bin"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("ruby3.")?.parse::<u32>().ok())
        .max()?;
    Some(Ruby::in_root(root, format!("/usr/bin/ruby3.{newest}")))
}

/// Debian 12's ruby3.1, then Debian 13's and unstable's in their roots, each with the reference
/// it is checked against (a kernel-matrix guest carries 3.1 only, and no rbspy: its own clocks).
pub fn debian_rubies(test: &str) -> Vec<(Ruby, Reference)> {
    if in_vm() {
        return vec![(Ruby::host(RUBY), Reference::OwnClocks)];
    }
    let mut rubies = vec![(Ruby::host(RUBY), Reference::Rbspy)];
    for (suite, reference) in ROOT_SUITES.iter().zip([Reference::Stackprof, Reference::OwnClocks]) {
        match in_root(suite) {
            Some(ruby) => rubies.push((ruby, reference)),
            None => {
                skip(test, &format!("no Ruby in Debian {suite}'s root (cargo xtask setup installs it)"));
            }
        }
    }
    rubies
}

/// Runs `check` on every Debian interpreter, when BPF and the references are there (a test that
/// needs them fails under AUTODUMP_REQUIRE_BPF).
pub fn with_each_ruby(test: &str, check: fn(&Ruby, Reference)) {
    if !require_bpf(test) || (!in_vm() && !rbspy_ready(test)) {
        return;
    }
    for (ruby, reference) in debian_rubies(test) {
        eprintln!("== {ruby} (against {reference:?})");
        check(&ruby, reference);
    }
}

/// Whether BPF and rbspy are there (a test that needs them fails under AUTODUMP_REQUIRE_BPF); not
/// in a kernel-matrix guest.
pub fn rbspy_ready(test: &str) -> bool {
    require_bpf(test)
        && host_tool_available("rbspy")
        && (rbspy_installed() || skip(test, "no rbspy (setup installs it)"))
}

fn rbspy_installed() -> bool {
    Command::new("rbspy").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Starts `ruby` on the fixture script `tests/fixtures/ruby/NAME`, until it prints "ready".
pub fn start(ruby: &Ruby, name: &str, args: &[&str]) -> Fixture {
    let mut command = ruby.command();
    command.arg(ruby.fixture(name)).args(args);
    Fixture::spawn(command, name)
}

/// rbspy and the agent sampling `pid` at about 500 Hz for the same 5 s (rbspy starts once the
/// agent records; it stops the process for each sample, so that the stack it reads holds still);
/// `extra` adds to rbspy's flags. The agent's bundle, and rbspy's collapsed stacks.
pub fn record_with_rbspy(pid: u32, scratch: &Path, extra: &[&str]) -> (crate::Bundle, String) {
    let out = scratch.join("rbspy.collapsed");
    let _ = std::fs::remove_file(&out);
    let pid = pid.to_string();
    let mut agent = crate::RunningAgent::start(&["--pid", &pid, "--duration", "5s", "--frequency", "499"]);
    agent.wait_recording(std::time::Duration::from_secs(30));
    let spy = Command::new("rbspy")
        .args(["record", "--pid", &pid, "--duration", "5", "--rate", "500", "--format", "collapsed"])
        .args(["--silent", "--file"])
        .arg(&out)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("rbspy");
    assert!(spy.status.success(), "rbspy record failed: {}", String::from_utf8_lossy(&spy.stderr));
    let run = agent.finish();
    assert_eq!(run.code, 0, "the agent: {}", run.stderr);
    (run.bundle(), std::fs::read_to_string(&out).expect("rbspy's output"))
}

/// The shares of `heavy` and `light` in the CPU time of busy.rb's process (`fixture`) while
/// `during` runs, by its own clocks.
pub fn own_clock_shares<T>(fixture: &mut Fixture, during: impl FnOnce() -> T) -> (T, BTreeMap<String, f64>) {
    let mut clocks = || {
        fixture.send("clock");
        let line = fixture.next_line(std::time::Duration::from_secs(5)).expect("busy.rb's clocks");
        let clocks: Vec<f64> = line.split(' ').skip(1).filter_map(|c| c.parse().ok()).collect();
        assert_eq!(clocks.len(), 3, "clock HEAVY LIGHT PROCESS: {line}");
        clocks
    };
    let before = clocks();
    let result = during();
    let after = clocks();
    let process = after[2] - before[2];
    let shares = [("heavy", 0), ("light", 1)].map(|(label, i)| (label.to_string(), (after[i] - before[i]) / process));
    (result, shares.into_iter().collect())
}

/// Stackprof's shares of each method, from a second run of fixture `name` for `seconds` under
/// it (`tests/fixtures/ruby/stackprof_shares.rb`): label -> share of samples that include it.
pub fn stackprof_shares(ruby: &Ruby, name: &str, seconds: &str) -> BTreeMap<String, f64> {
    let out = PathBuf::from(format!("/tmp/autodump-stackprof-{}", std::process::id()));
    let fixture = ruby.fixture(name);
    let status = ruby
        .command()
        .arg(ruby.fixture("stackprof_shares.rb"))
        .arg(&out)
        .arg(&fixture)
        .arg(seconds)
        .status()
        .expect("ruby runs stackprof");
    assert!(status.success(), "stackprof run failed");
    let text = std::fs::read_to_string(ruby.on_host(&out)).expect("stackprof's shares");
    let _ = std::fs::remove_file(ruby.on_host(&out));
    text.lines()
        .filter_map(|l| {
            let (label, share) = l.split_once('\t')?;
            Some((label.to_string(), share.parse().ok()?))
        })
        .collect()
}

/// The Ruby frames of a folded line, root first: (label, file name, line). Ours read
/// `label (path/file.rb:line)`, rbspy's `label - path/file.rb:line`; C functions read
/// `name [c function]` in ours and `name [c function] - (unknown)` in rbspy's (which names few).
pub fn ruby_frames(line: &str) -> Vec<(String, String, u32)> {
    let stack = line.rsplit_once(' ').map_or(line, |(s, _)| s);
    stack
        .split(';')
        .filter_map(|frame| {
            if let Some(name) =
                frame.strip_suffix(" - (unknown)").or(Some(frame)).filter(|f| f.ends_with(" [c function]"))
            {
                // rbspy cannot name most C functions: those are no frame to compare.
                return (!name.starts_with("(unknown)")).then(|| (name.to_string(), String::new(), 0));
            }
            let (label, place) = match frame.rsplit_once(" (") {
                Some((label, place)) => (label, place.strip_suffix(')')?),
                None => frame.rsplit_once(" - ")?,
            };
            let (file, line) = place.rsplit_once(':')?;
            let file = file.rsplit('/').next()?;
            (file.ends_with(".rb") || file.starts_with("<internal:"))
                .then(|| (label.to_string(), file.to_string(), line.parse().unwrap_or(0)))
        })
        .collect()
}

/// Share of the weight of `folded` whose Ruby frames include each label.
pub fn inclusive_shares(folded: &str) -> BTreeMap<String, f64> {
    let weight = |l: &str| l.rsplit_once(' ').and_then(|(_, w)| w.parse::<u64>().ok()).unwrap_or(0);
    let total: u64 = folded.lines().map(weight).sum();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for line in folded.lines() {
        let mut labels: Vec<String> = ruby_frames(line).into_iter().map(|f| f.0).collect();
        labels.sort();
        labels.dedup();
        for label in labels {
            *by.entry(label).or_default() += weight(line);
        }
    }
    by.into_iter().map(|(k, v)| (k, v as f64 / total.max(1) as f64)).collect()
}

/// Every label the reference puts at 10% or more is within `tolerance` of its share in ours (our
/// `cpu.folded`, in the kernel too: the references count a thread in a system call as running
/// its Ruby method). How many were compared.
pub fn assert_shares_like(ours: &str, theirs: &BTreeMap<String, f64>, reference: Reference, tolerance: f64) -> usize {
    let ours = inclusive_shares(ours);
    let mut compared = 0;
    for (label, theirs) in theirs.iter().filter(|(_, s)| **s >= 0.10) {
        let mine = ours.get(label).copied().unwrap_or(0.0);
        eprintln!("{label:<40} ours {:>5.1}%  {reference:?} {:>5.1}%", mine * 100.0, theirs * 100.0);
        assert!((mine - theirs).abs() <= tolerance, "{label}: {mine:.3} against {reference:?}'s {theirs:.3}");
        compared += 1;
    }
    compared
}
