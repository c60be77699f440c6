//! Row 9: many processes under one set of probes. N copies of a calm service (`cpuload 1 2`:
//! one thread busy 0.4 ms of every 20 ms, 50 switches a second; 50 copies use one core of the
//! two) watched with `--exe`: the probes' kernel time (bpf_stats) and the agent's CPU, in all
//! and per watched process.

use std::{fmt::Write as _, time::Duration};

use anyhow::{Context, Result};

use super::{
    bpf_stats::{delta, snapshot, StatsSwitch},
    process::{cpu_seconds, Tool, ToolKind},
    Bench,
};
use crate::util::step;

/// Processes watched at once, row by row.
const COUNTS: [usize; 3] = [1, 10, 50];
/// How long each measurement lasts.
const WINDOW: Duration = Duration::from_secs(20);

pub fn many_processes(bench: &Bench) -> Result<String> {
    step("9/9 services: one probe set over 1, 10 and 50 processes");
    let exe = bench.fixture("cpuload");
    let _stats = StatsSwitch::set(true)?;
    let mut md = String::from(
        "## 9. Services: one probe set over many processes\n\n`cpuload 1 2` (one thread busy 0.4 ms of every \
         20 ms: 2% of a core and 50 context switches a second), N copies (50 use one of the two CPUs), watched with `--exe` at the \
         defaults for 20 s. Probe time is the kernel's accounting of every program the agent loaded \
         (`kernel.bpf_stats_enabled`), in CPU time per second of wall time; agent CPU is its utime+stime.\n\n\
         | processes | agent start to all watched | probe runs/s | probe CPU | probe CPU per process | agent CPU | agent CPU per process |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for n in COUNTS {
        let mut targets = Vec::new();
        for _ in 0..n {
            let child = std::process::Command::new(&exe)
                .args(["1", "2"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("cannot start cpuload")?;
            targets.push(child);
        }
        std::thread::sleep(Duration::from_millis(300));
        let scratch = bench.fresh_scratch()?;
        let before_load = snapshot()?;
        let argv: Vec<String> =
            [&*bench.agent.to_string_lossy(), "--exe", &*exe.to_string_lossy(), "--out", &*scratch.to_string_lossy()]
                .map(String::from)
                .to_vec();
        let launched = std::time::Instant::now();
        let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
        // Every copy attached: one "watching a new process" line each, after its "recording".
        let mut watched = 0;
        while watched < n && launched.elapsed() < Duration::from_secs(30) {
            match agent.stderr.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => watched += usize::from(line.contains("watching a new process")),
                Err(_) => continue,
            }
        }
        let attach_s = launched.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        let (start, cpu_start) = (snapshot()?, cpu_seconds(agent.pid())?);
        std::thread::sleep(WINDOW);
        let (end, cpu_end) = (snapshot()?, cpu_seconds(agent.pid())?);
        agent.stop()?;
        for mut t in targets {
            let _ = t.kill();
            let _ = t.wait();
        }
        let costs = delta(&before_load, &start, &end);
        let (ns, runs) = costs.values().fold((0u64, 0u64), |acc, c| (acc.0 + c.0, acc.1 + c.1));
        let seconds = WINDOW.as_secs_f64();
        let probe_pct = ns as f64 / 1e9 / seconds * 100.0;
        let agent_pct = (cpu_end - cpu_start) / seconds * 100.0;
        eprintln!(
            "    {n} processes ({watched} attached in {attach_s:.1} s): probes {probe_pct:.3}% of a CPU ({:.0} runs/s), agent {agent_pct:.2}%",
            runs as f64 / seconds
        );
        let _ = writeln!(
            md,
            "| {n} | {attach_s:.1} s | {:.0} | {probe_pct:.3}% | {:.4}% | {agent_pct:.2}% | {:.3}% |",
            runs as f64 / seconds,
            probe_pct / n as f64,
            agent_pct / n as f64
        );
    }
    md += "\nCPU percentages are of one CPU. Per process, the probes cost what the process's own events \
           cost (its switches and samples); the agent's share is its per-process work each interval \
           (/proc reads, drains, symbolization) plus one /proc scan for new matches.\n\n";
    Ok(md)
}
