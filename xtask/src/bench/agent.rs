//! Rows about the agent itself: its CPU and memory while watching a busy target, and how fast
//! it symbolizes and writes a bundle.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use super::{
    process::{cpu_seconds, signal, status_mib, Target, Tool, ToolKind},
    stats::Series,
    Bench,
};
use crate::util::step;

/// The agent's first seconds (loading, first symbolization) are not steady state.
const WARMUP: Duration = Duration::from_secs(30);
/// Bundles written for the dump row, each after a manual trigger.
const DUMPS: usize = 3;
/// Dump row: sampling frequency high enough that a 30 s lookback holds over 10,000 unique stacks.
const DUMP_FREQUENCY: &str = "999";
/// Dump row: room for every distinct stack of an interval at that frequency.
const DUMP_STACK_SLOTS: &str = "65536";
/// Dump row: recording after each trigger.
const DUMP_AFTER: &str = "2s";

/// The busy many-stack target: stacky with two threads per CPU, every thread walking 4,096
/// distinct stacks.
fn stacky(bench: &Bench) -> Result<Target> {
    Target::start(&bench.fixture("stacky"), &[(2 * bench.cpus).to_string()])
}

pub fn footprint(bench: &Bench) -> Result<String> {
    let total = bench.opts.footprint.max(WARMUP + Duration::from_secs(10));
    step(&format!("4/9 agent footprint: watching a busy many-stack target for {}", humantime::format_duration(total)));
    let target = stacky(bench)?;
    let scratch = bench.fresh_scratch()?;
    let mut argv = ToolKind::Autodump.command(&bench.agent, target.pid(), &scratch).expect("a tool");
    // The target pegs every CPU by design; with the cpu rule on, the agent would write an
    // incident bundle every cooldown, which is not steady state (row 5 measures bundles).
    argv.extend(["--rule", "cpu:off"].map(String::from));
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
    let started = Instant::now();
    std::thread::sleep(WARMUP);
    let (cpu0, t0) = (cpu_seconds(agent.pid())?, Instant::now());
    let mut rss = Series::default();
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1));
        rss.0.push(status_mib(agent.pid(), "VmRSS:")?);
    }
    let cpu_share = (cpu_seconds(agent.pid())? - cpu0) / t0.elapsed().as_secs_f64();
    let peak = status_mib(agent.pid(), "VmHWM:")?;
    let samples_per_second = 99 * bench.cpus;
    agent.stop()?;
    drop(target);
    let bundles = agent.stdout.try_iter().count();
    Ok(format!(
        "## 4. Agent footprint\n\nautodump at defaults but `--rule cpu:off` watching `stacky {}` (two threads per CPU, 4,096 distinct \
         stacks each, every CPU busy: about {samples_per_second} samples/s) for {}. Steady state is after the first \
         {}.\n\n| measure | value |\n|---|---|\n\
         | CPU, steady state (utime+stime per wall second) | {:.2}% of one core |\n\
         | RSS, steady state | {} MiB (median, min–max) |\n\
         | peak RSS (VmHWM, includes start-up) | {peak:.1} MiB |\n\
         | bundles the other rules wrote meanwhile (included above) | {bundles} |\n\n",
        2 * bench.cpus,
        humantime::format_duration(total),
        humantime::format_duration(WARMUP),
        cpu_share * 100.0,
        rss.show(1),
    ))
}

pub fn dump(bench: &Bench) -> Result<String> {
    step("5/9 dump latency and symbolization throughput");
    let target = stacky(bench)?;
    let scratch = bench.fresh_scratch()?;
    let mut argv = ToolKind::Autodump.command(&bench.agent, target.pid(), &scratch).expect("a tool");
    argv.extend(
        ["--frequency", DUMP_FREQUENCY, "--after", DUMP_AFTER, "--stack-slots", DUMP_STACK_SLOTS].map(String::from),
    );
    argv.extend(["--log", "info,autodump::session=debug"].map(String::from));
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
    std::thread::sleep(WARMUP);
    let mut latency = Series::default();
    let mut unique = Series::default();
    for _ in 0..DUMPS {
        // Bundles a rule wrote meanwhile (every CPU is busy) are not the ones timed here.
        let _ = agent.stdout.try_iter().count();
        signal(agent.pid(), "USR1")?;
        let bundle = loop {
            let line = agent.stdout.recv_timeout(Duration::from_secs(60)).context("no bundle within 60 s")?;
            if line.contains("-manual") {
                break PathBuf::from(line.trim());
            }
        };
        let seen = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("summary.json"))?)?;
        let end = summary["window"]["end"].as_f64().context("summary without window.end")?;
        latency.0.push((seen - end) * 1000.0);
        unique.0.push(summary["cpu"]["distinct_stacks"].as_f64().context("summary without cpu.distinct_stacks")?);
    }
    agent.stop()?;
    drop(target);
    let (mut stacks, mut micros, mut ticks) = (0u64, 0u64, 0u64);
    for line in agent.stderr.try_iter().filter(|l| l.contains(" tick")) {
        let field = |k: &str| {
            line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        stacks += field("stacks=");
        micros += field("symbolize_us=");
        ticks += 1;
    }
    if ticks == 0 || micros == 0 {
        bail!("the agent logged no tick timings");
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## 5. Dump latency and symbolization\n\nautodump watching `stacky {}` at `--frequency {DUMP_FREQUENCY} \
         --after {DUMP_AFTER} --stack-slots {DUMP_STACK_SLOTS}`, {DUMPS} manual bundles (SIGUSR1), 30 s lookback each. \
         Latency is measured from outside: the bundle's `window.end` to the moment its path is read.\n\n| measure | value |\n|---|---|",
        2 * bench.cpus
    );
    let _ = writeln!(
        md,
        "| dump latency: end of the after-window to the bundle's path on stdout | {} ms |",
        latency.show(0)
    );
    let _ = writeln!(md, "| distinct stacks in each bundle (summary's cpu.distinct_stacks) | {} |", unique.show(0));
    let _ = writeln!(
        md,
        "| symbolization, every drain ({ticks} ticks) | {stacks} stacks in {:.2} s: {:.0} stacks/s, {:.1} ms per 10,000 |\n",
        micros as f64 / 1e6,
        stacks as f64 / (micros as f64 / 1e6),
        micros as f64 / 1e3 / stacks as f64 * 10_000.0
    );
    Ok(md)
}
