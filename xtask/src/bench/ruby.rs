//! Row 15: Ruby programs (Debian 12's ruby3.1, `tests/fixtures/ruby/bench.rb`). Against rbspy
//! sampling the same program without stopping it: a CPU-bound loop's and a switch-heavy
//! program's slowdown, from the target's own CPU time. What an on-CPU sample and a switch-out
//! cost the probes when the walk also emits Ruby frames (3.1, and unstable's 3.4 in its root;
//! native code's cost is in row 13), and what attaching to 100 processes of one interpreter
//! costs the agent.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context, Result};

use super::{
    attach::{self, Processes},
    bpf_stats::StatsSwitch,
    process::ToolKind,
    python::{cost_table, in_root},
    rows::slowdown,
    Bench,
};
use crate::util::{root, step};

const RUBY: &str = "/usr/bin/ruby3.1";
/// The interpreter, as the bench runs its fixture: `target/bench/ruby`.
const FIXTURE: &str = "ruby";
/// Debian unstable's 3.4 in the root setup made for it: `target/bench/ruby-sid`.
const FIXTURE_SID: &str = "ruby-sid";
const RUBY_SID: &str = "/usr/bin/ruby3.4";
/// What the switch-heavy row's slowdown is.
const SWITCH_COST: &str = "This program's CPU time is mostly the GVL changing hands between the two threads, and anything that delays a switch changes how much a waiting thread spins: alone it took 2.99 s in a run where another program kept one CPU busy, and 16.6 s on an idle machine, and both tools *lower* it. Its cost is read better from the probe's own accounting below: a blocked Ruby thread's stack holds about 25 C frames of Debian's libruby, each looked up in that file's rows by binary search, and the walk reads each control frame's fields one at a time. A program that switches less pays in proportion: at 1,000 switch-outs a second, under 1% of a core.\n\n";
/// Idle Ruby processes watched at once, for the attach cost.
const PROCESSES: [usize; 2] = [1, 100];

fn script() -> String {
    root().join("tests/fixtures/ruby/bench.rb").to_string_lossy().into_owned()
}

pub fn ruby_programs(bench: &Bench) -> Result<String> {
    step("15 Ruby: slowdown against rbspy, probe cost, 100 processes");
    let link: PathBuf = bench.fixture(FIXTURE);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(RUBY, &link)?;
    let args = |script: &str, work: &str, n: u64| vec![script.to_string(), work.to_string(), n.to_string()];
    let (rounds, trips) = (bench.opts.ruby_rounds, bench.opts.ruby_trips);
    let (cpu, switch) = (args(&script(), "cpu", rounds), args(&script(), "switch", trips));
    let mut md = String::from(
        "## 15. Ruby programs\n\nDebian 12's `ruby3.1` running `tests/fixtures/ruby/bench.rb`, which starts its work \
         on SIGUSR1 once the tool has attached and prints the CPU seconds the work took (its own utime+stime). rbspy \
         0.55 samples at the agent's 99 Hz without stopping the program (`--nonblocking`).\n\n",
    );
    let tools = [ToolKind::Alone, ToolKind::Autodump, ToolKind::Rbspy];
    {
        let _stats = StatsSwitch::set(false)?;
        for (title, args) in
            [("CPU-bound loop (`cpu`, one thread)", &cpu), ("Switch-heavy (`switch`, two threads over pipes)", &switch)]
        {
            let table = slowdown(bench, FIXTURE, args, &tools)?.replacen("wall seconds", "target CPU seconds", 1);
            let _ = write!(md, "### {title}: `bench.rb {} {}`\n\n{table}\n", args[1], args[2]);
        }
        md += SWITCH_COST;
    }
    let sid = root().join("target/python-roots/sid");
    if !sid.join(RUBY_SID.trim_start_matches('/')).exists() {
        anyhow::bail!("no {RUBY_SID} in {}: run `cargo xtask setup`", sid.display());
    }
    let sid_script = in_root(bench, &sid, RUBY_SID, &script(), FIXTURE_SID).context("Debian sid's root")?;
    let (sid_cpu, sid_switch) = (args(&sid_script, "cpu", rounds), args(&sid_script, "switch", trips));
    {
        let _stats = StatsSwitch::set(true)?;
        let cases: [(&str, &str, &[String], &str); 4] = [
            ("on-CPU sample, Ruby 3.1 loop (Debian 12's)", FIXTURE, &cpu, "on_cpu_unwind"),
            ("on-CPU sample, Ruby 3.4 loop (Debian unstable's)", FIXTURE_SID, &sid_cpu, "on_cpu_unwind"),
            ("switch-out, Ruby 3.1 threads (Debian 12's)", FIXTURE, &switch, "switch_unwind"),
            ("switch-out, Ruby 3.4 threads (Debian unstable's)", FIXTURE_SID, &sid_switch, "switch_unwind"),
        ];
        md += &cost_table(bench, "### Probe cost (kernel.bpf_stats_enabled; native code's is in row 13)", &cases)?;
    }
    let sleep = ["-e", "sleep"].map(String::from);
    let processes =
        Processes { exe: RUBY.as_ref(), args: &sleep, ports: false, found: "CRuby: its threads are dumped" };
    md += &attach::table(bench, &processes, &PROCESSES, "idle `ruby3.1` processes (`sleep`)")?;
    md += "The interpreter's file is read once for all of them (`agent_memory.ruby_files_read`).\n\n";
    Ok(md)
}
