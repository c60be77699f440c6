//! The rows of BENCHMARKS.md, each measured and rendered as a markdown section.

use std::{collections::HashMap, fmt::Write as _};

use anyhow::{bail, Context, Result};

use super::{
    bpf_stats::{self, StatsSwitch},
    process::{Target, Tool, ToolKind},
    shown,
    stats::Series,
    Bench,
};
use crate::util::step;

/// Times `target_args` alone and under each tool, interleaved; returns a markdown table.
pub(super) fn slowdown(bench: &Bench, fixture: &str, target_args: &[String], tools: &[ToolKind]) -> Result<String> {
    let mut series: HashMap<ToolKind, Series> = HashMap::new();
    for rep in 0..bench.opts.reps {
        for i in 0..tools.len() {
            let kind = tools[(i + rep) % tools.len()];
            let target = Target::start(&bench.fixture(fixture), target_args)?;
            let scratch = bench.fresh_scratch()?;
            let tool = match kind.command(&bench.agent, target.pid(), &scratch) {
                Some(argv) => Some(Tool::start(kind, &argv, &[])?),
                None => None,
            };
            let seconds = target.run()?;
            if let Some(mut tool) = tool {
                tool.stop()?;
            }
            eprintln!("    rep {}: {:<22} {seconds:.3} s", rep + 1, kind.label());
            series.entry(kind).or_default().0.push(seconds);
        }
    }
    let alone = series[&ToolKind::Alone].median();
    let mut md = String::from("| configuration | wall seconds | ratio to alone | command |\n|---|---|---|---|\n");
    for kind in tools {
        let s = &series[kind];
        let argv = kind
            .command(&bench.agent, 0, std::path::Path::new("OUT"))
            .map(|a| a.join(" ").replace("-p 0", "-p PID").replace("--pid 0", "--pid PID"));
        let argv = argv.map(|a| a.replace(&*bench.agent.to_string_lossy(), &shown(&bench.agent)));
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | `{}` |",
            kind.label(),
            s.show(3),
            s.median() / alone,
            argv.unwrap_or_else(|| format!("{} {}", shown(&bench.fixture(fixture)), target_args.join(" ")))
        );
    }
    Ok(md)
}

pub fn cpu_bound(bench: &Bench) -> Result<String> {
    step("1/9 CPU-bound target: alone, autodump, perf record");
    let _stats = StatsSwitch::set(false)?;
    let args = vec![bench.cpus.to_string(), bench.opts.cpu_rounds.to_string()];
    let tools = [ToolKind::Alone, ToolKind::Autodump, ToolKind::AutodumpFramePointers, ToolKind::Perf];
    let table = slowdown(bench, "bench_cpu", &args, &tools)?;
    Ok(format!(
        "## 1. CPU-bound target\n\n`bench_cpu {} {}`: one thread per CPU doing fixed work; it starts on SIGUSR1, \
         after the tool has attached. Wall time of the work.\n\n{table}\n",
        args[0], args[1]
    ))
}

pub fn switch_heavy(bench: &Bench) -> Result<String> {
    step("2/9 context-switch-heavy target: alone, autodump, offcputime");
    let _stats = StatsSwitch::set(false)?;
    let args = vec![bench.opts.round_trips.to_string()];
    let tools = [ToolKind::Alone, ToolKind::Autodump, ToolKind::AutodumpFramePointers, ToolKind::Offcputime];
    let table = slowdown(bench, "bench_pingpong", &args, &tools)?;
    Ok(format!(
        "## 2. Context-switch-heavy target\n\n`bench_pingpong {}`: two threads on one CPU bounce a byte over \
         pipes; every hop blocks one thread and wakes the other (two switches per round trip). Every block is \
         in glibc's `read`, so with CFI each switch-out walks glibc's frames from its unwind rows; with frame \
         pointers the kernel's walk stops in glibc and loses the caller.\n\n{table}\n",
        args[0]
    ))
}

/// The empty program's name (the kernel keeps 15 characters; bpftool shows the whole name when
/// the program's BTF has it).
const EMPTY_PROBE: &str = "sched_switch_em";

/// ns per run of each of the tool's programs while `target` does its work.
pub(super) fn program_cost(
    bench: &Bench,
    kind: ToolKind,
    fixture: &str,
    args: &[String],
    watch_other: bool,
) -> Result<HashMap<String, (u64, u64)>> {
    let target = Target::start(&bench.fixture(fixture), args)?;
    // Non-target cost: the tool watches an idle process while the target switches.
    let mut idle = std::process::Command::new("sleep").arg("600").spawn()?;
    let watched = if watch_other { idle.id() } else { target.pid() };
    let scratch = bench.fresh_scratch()?;
    let mut argv = kind.command(&bench.agent, watched, &scratch).context("a tool is needed")?;
    if kind == ToolKind::Autodump && watch_other {
        // An empty program on the same events: the kernel's accounting floor.
        argv.push("--bench-empty-probe".into());
    }
    let loaded_before = bpf_stats::snapshot()?;
    let mut tool = Tool::start(kind, &argv, &[])?;
    let start = bpf_stats::snapshot()?;
    target.run()?;
    let end = bpf_stats::snapshot()?;
    tool.stop()?;
    let _ = idle.kill();
    let _ = idle.wait();
    Ok(bpf_stats::delta(&loaded_before, &start, &end))
}

/// One row of the probe-cost table.
struct Case<'a> {
    event: &'static str,
    tool: ToolKind,
    fixture: &'static str,
    args: &'a [String],
    /// The tool watches an idle process while the fixture's threads switch.
    other_threads: bool,
    /// The program whose cost the row reports.
    program: &'static str,
}

pub fn probe_costs(bench: &Bench) -> Result<String> {
    step("3/9 probe cost from the kernel's accounting (kernel.bpf_stats_enabled)");
    let _stats = StatsSwitch::set(true)?;
    let cpu_args = vec![bench.cpus.to_string(), bench.opts.cpu_rounds.to_string()];
    let pp_args = vec![bench.opts.round_trips.to_string()];
    let case = |event, tool, fixture, args, other_threads, program| Case {
        event,
        tool,
        fixture,
        args,
        other_threads,
        program,
    };
    let cases = [
        case("on-CPU sample, target", ToolKind::Autodump, "bench_cpu", &cpu_args, false, "on_cpu_unwind"),
        case("on-CPU sample, target", ToolKind::AutodumpFramePointers, "bench_cpu", &cpu_args, false, "on_cpu_sample"),
        case("sched_switch, target switching", ToolKind::Autodump, "bench_pingpong", &pp_args, false, "switch_unwind"),
        case(
            "sched_switch, target switching",
            ToolKind::AutodumpFramePointers,
            "bench_pingpong",
            &pp_args,
            false,
            "sched_switch",
        ),
        case("sched_switch, target switching", ToolKind::Offcputime, "bench_pingpong", &pp_args, false, "sched_switch"),
        case(
            "sched_switch, other threads switching",
            ToolKind::Autodump,
            "bench_pingpong",
            &pp_args,
            true,
            "switch_unwind",
        ),
        case(
            "sched_switch, other threads switching",
            ToolKind::Offcputime,
            "bench_pingpong",
            &pp_args,
            true,
            "sched_switch",
        ),
        // Each hop wakes the other thread: the waker's stacks are taken, and the blocked time added.
        case("sched_waking, target woken", ToolKind::Autodump, "bench_pingpong", &pp_args, false, "waking_unwind"),
        case(
            "sched_waking, target woken",
            ToolKind::AutodumpFramePointers,
            "bench_pingpong",
            &pp_args,
            false,
            "sched_waking",
        ),
        case(
            "sched_waking, other threads woken",
            ToolKind::Autodump,
            "bench_pingpong",
            &pp_args,
            true,
            "waking_unwind",
        ),
    ];
    let mut md = String::from(
        "## 3. Probe cost (kernel.bpf_stats_enabled)\n\nRun time per program run as the kernel accounts it \
         (`bpftool prog show`: run_time_ns / run_cnt), over the timed work of one run. The accounting itself \
         (two clock reads per run) is included in every number.\n\n\
         | event | tool | runs | ns per run (median of runs) |\n|---|---|---|---|\n",
    );
    for Case { event, tool: kind, fixture, args, other_threads: other, program } in cases {
        let (mut per_run, mut floor) = (Series::default(), Series::default());
        let mut runs = 0;
        for _ in 0..bench.opts.reps.min(3) {
            let costs = program_cost(bench, kind, fixture, args, other)?;
            let Some(&(ns, cnt)) = costs.get(program).filter(|c| c.1 > 0) else {
                bail!("{} ran no {program} program during the work (programs: {costs:?})", kind.label());
            };
            per_run.0.push(ns as f64 / cnt as f64);
            runs = cnt;
            // The empty program runs at sched_switch: the floor of the switch rows only.
            let empty = costs.iter().find(|(name, _)| name.starts_with(EMPTY_PROBE)).map(|(_, c)| *c);
            let empty = empty.filter(|_| program.contains("switch"));
            if let Some((ns, cnt)) = empty.filter(|c| c.1 > 0) {
                floor.0.push(ns as f64 / cnt as f64);
            }
        }
        eprintln!("    {event:<40} {:<22} {} ns", kind.label(), per_run.show(0));
        let _ = writeln!(md, "| {event} | {} | {runs} | {} |", kind.label(), per_run.show(0));
        if !floor.0.is_empty() {
            eprintln!("    {event:<40} {:<22} {} ns", "empty program", floor.show(0));
            let _ = writeln!(
                md,
                "| {event}: an empty program on the same events (the accounting floor) | autodump \
                 `--bench-empty-probe` | {runs} | {} |",
                floor.show(0)
            );
        }
    }
    Ok(md + "\n")
}
