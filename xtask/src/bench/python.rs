//! Row 13: Python programs (Debian's python3.11, `tests/fixtures/python/bench.py`). Against
//! py-spy sampling the same program without stopping it: a CPU-bound loop's and a switch-heavy
//! program's slowdown, from the target's own CPU time. Against native code: what an on-CPU
//! sample and a switch-out cost the probes when the walk also emits Python frames. The agent's
//! CPU and memory while it names 1,000 distinct Python functions, and what attaching to 100
//! processes of one interpreter costs it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use super::{
    attach::{self, Processes},
    bpf_stats::StatsSwitch,
    process::{cpu_seconds, signal, Target, Tool, ToolKind},
    rows::{program_cost, slowdown},
    stats::Series,
    Bench,
};
use crate::util::{root, step};

const PYTHON: &str = "/usr/bin/python3.11";
/// The interpreter, as the bench runs its fixtures: `target/bench/python3`.
const FIXTURE: &str = "python3";
/// Debian unstable's interpreter (3.14) in the root setup made for it, run by a script that
/// execs `chroot` (the same process all the way): `target/bench/python3-sid`.
const FIXTURE_SID: &str = "python3-sid";
/// Where bench scripts are copied in a root.
const SCRIPTS_IN_ROOT: &str = "/opt/autodump-fixtures";
/// Idle Python processes watched at once, for the attach cost.
const PROCESSES: [usize; 2] = [1, 100];
/// Rounds through the 1,000 functions: more than any footprint window lasts.
const FUNCTION_ROUNDS: &str = "1000000";

/// The `cpu` and `switch` arguments of one interpreter.
type Args<'a> = (&'a [String], &'a [String]);

fn script() -> String {
    root().join("tests/fixtures/python/bench.py").to_string_lossy().into_owned()
}

pub fn python_programs(bench: &Bench) -> Result<String> {
    step("13 Python: slowdown against py-spy, probe cost against native code, 1,000 functions, 100 processes");
    let link: PathBuf = bench.fixture(FIXTURE);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(PYTHON, &link)?;
    let cpu = vec![script(), "cpu".into(), bench.opts.python_rounds.to_string()];
    let switch = vec![script(), "switch".into(), bench.opts.python_trips.to_string()];
    let mut md = String::from(
        "## 13. Python programs\n\nDebian's `python3.11` running `tests/fixtures/python/bench.py`, which starts its \
         work on SIGUSR1 once the tool has attached and prints the CPU seconds the work took (its own utime+stime, \
         which other load does not stretch). py-spy 0.4.3 samples at the agent's 99 Hz without stopping the \
         program (`--nonblocking`).\n\n",
    );
    let tools = [ToolKind::Alone, ToolKind::Autodump, ToolKind::PySpy];
    {
        let _stats = StatsSwitch::set(false)?;
        for (title, args) in
            [("CPU-bound loop (`cpu`, one thread)", &cpu), ("Switch-heavy (`switch`, two threads over pipes)", &switch)]
        {
            let table = slowdown(bench, FIXTURE, args, &tools)?.replacen("wall seconds", "target CPU seconds", 1);
            let _ = write!(md, "### {title}: `bench.py {} {}`\n\n{table}\n", args[1], args[2]);
        }
    }
    let (sid_cpu, sid_switch) = sid_fixture(bench)?;
    md += &probe_costs(bench, (&cpu, &switch), (&sid_cpu, &sid_switch))?;
    md += &many_functions(bench)?;
    let sleep = ["-c", "import time; time.sleep(3600)"].map(String::from);
    let processes =
        Processes { exe: PYTHON.as_ref(), args: &sleep, ports: false, found: "CPython: its threads are dumped" };
    md += &attach::table(bench, &processes, &PROCESSES, "idle `python3.11` processes (`time.sleep`)")?;
    md += "The interpreter's file is read once for all of them (`agent_memory.python_files_read`).\n\n";
    Ok(md)
}

/// `target/bench/python3-sid` and the `cpu` and `switch` arguments it takes (the script copied
/// into the root).
fn sid_fixture(bench: &Bench) -> Result<(Vec<String>, Vec<String>)> {
    let dir = root().join("target/python-roots/sid");
    let exe = std::fs::read_to_string(dir.join("ready")).context("no Debian sid root: run `cargo xtask setup`")?;
    let script = in_root(bench, &dir, exe.trim(), &script(), FIXTURE_SID)?;
    let args = |work: &str, n: u64| vec![script.clone(), work.to_string(), n.to_string()];
    Ok((args("cpu", bench.opts.python_rounds), args("switch", bench.opts.python_trips)))
}

/// A fixture `target/bench/NAME` that runs `exe` in the root `dir` (a script that execs `chroot`:
/// the same process all the way), and `script` copied into the root: where the root sees it.
pub(super) fn in_root(bench: &Bench, dir: &Path, exe: &str, script: &str, name: &str) -> Result<String> {
    let file = Path::new(script).file_name().context("a script without a name")?;
    let script_in_root = Path::new(SCRIPTS_IN_ROOT).join(file);
    let copy = dir.join(script_in_root.strip_prefix("/")?);
    std::fs::create_dir_all(copy.parent().unwrap())?;
    std::fs::copy(script, &copy)?;
    let wrapper = bench.fixture(name);
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec chroot {} {exe} \"$@\"\n", dir.display()))?;
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(script_in_root.to_string_lossy().into_owned())
}

/// ns per run of the on-CPU and switch programs, Python (Debian 12's 3.11 and unstable's 3.14)
/// against the native fixtures.
fn probe_costs(bench: &Bench, (cpu, switch): Args, (sid_cpu, sid_switch): Args) -> Result<String> {
    let _stats = StatsSwitch::set(true)?;
    let native_cpu = vec!["1".to_string(), (bench.opts.cpu_rounds / 4).to_string()];
    let native_switch = vec![(bench.opts.round_trips / 2).to_string()];
    let cases: [(&str, &str, &[String], &str); 6] = [
        ("on-CPU sample, Python 3.11 loop (Debian 12's)", FIXTURE, cpu, "on_cpu_unwind"),
        ("on-CPU sample, Python 3.14 loop (Debian unstable's)", FIXTURE_SID, sid_cpu, "on_cpu_unwind"),
        ("on-CPU sample, native loop (`bench_cpu 1`)", "bench_cpu", &native_cpu, "on_cpu_unwind"),
        ("switch-out, Python 3.11 threads (Debian 12's)", FIXTURE, switch, "switch_unwind"),
        ("switch-out, Python 3.14 threads (Debian unstable's)", FIXTURE_SID, sid_switch, "switch_unwind"),
        ("switch-out, native threads (`bench_pingpong`)", "bench_pingpong", &native_switch, "switch_unwind"),
    ];
    let title = "### Probe cost, Python against native (kernel.bpf_stats_enabled)";
    cost_table(bench, title, &cases)
}

/// A table of what each case's probe program costs per run: (event, fixture, its arguments,
/// program).
pub(super) fn cost_table(bench: &Bench, title: &str, cases: &[(&str, &str, &[String], &str)]) -> Result<String> {
    let mut md = format!("{title}\n\n| event | runs | ns per run (median of runs) |\n|---|---|---|\n");
    for &(event, fixture, args, program) in cases {
        let (mut per_run, mut runs) = (Series::default(), 0);
        for _ in 0..bench.opts.reps.min(3) {
            let costs = program_cost(bench, ToolKind::Autodump, fixture, args, false)?;
            let Some(&(ns, cnt)) = costs.get(program).filter(|c| c.1 > 0) else {
                bail!("no {program} run during the work (programs: {costs:?})");
            };
            per_run.0.push(ns as f64 / cnt as f64);
            runs = cnt;
        }
        eprintln!("    {event:<48} {} ns", per_run.show(0));
        let _ = writeln!(md, "| {event} | {runs} | {} |", per_run.show(0));
    }
    Ok(md + "\n")
}

/// The agent's CPU (second half of the window) and memory while the target runs 1,000
/// distinct Python functions in turn.
fn many_functions(bench: &Bench) -> Result<String> {
    let window = bench.opts.many_window / 2;
    let target = Target::start(&bench.fixture(FIXTURE), &[script(), "functions".into(), FUNCTION_ROUNDS.into()])?;
    let scratch = bench.fresh_scratch()?;
    let argv = ToolKind::Autodump.command(&bench.agent, target.pid(), &scratch).expect("the agent");
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
    signal(target.pid(), "USR1")?;
    let (cpu, peak, steady) = agent.footprint(window)?;
    let target_cpu = cpu_seconds(target.pid())?;
    agent.stop()?;
    eprintln!("    1,000 functions: agent {cpu:.2}% of a core, peak {peak:.1} MiB, steady {steady:.1} MiB");
    Ok(format!(
        "### The agent with 1,000 distinct Python functions\n\n`bench.py functions`: one thread calls 1,000 \
         generated functions in turn, for {}; the agent at its defaults. CPU is the agent's utime+stime over the \
         second half, in percent of one core; peak is VmHWM, steady VmRSS at the end. The target used {target_cpu:.1} \
         s of CPU.\n\n| agent CPU | peak RSS | steady RSS |\n|---|---|---|\n| {cpu:.2}% | {peak:.1} MiB | {steady:.1} \
         MiB |\n\n",
        humantime::format_duration(window)
    ))
}
