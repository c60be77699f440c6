//! Row 10: many processes of one executable within one memory budget. N idle workers (`worker`:
//! a pre-fork worker waiting for work, waking once a second) watched with `--exe` at the
//! defaults, glibc's debug file installed: the agent's peak and steady RSS and its CPU, for
//! 1, 10, 100 and 500 processes, and the whole host (`--all`) with the 500 running.

use std::{
    fmt::Write as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    process::{cpu_seconds, status_mib, Tool, ToolKind},
    Bench,
};
use crate::util::step;

/// Processes watched at once, row by row.
const COUNTS: [usize; 4] = [1, 10, 100, 500];

/// N workers, killed on drop.
struct Workers(Vec<Child>);

impl Workers {
    fn start(bench: &Bench, n: usize) -> Result<Self> {
        let exe = bench.fixture("worker");
        let children = (0..n)
            .map(|_| {
                Command::new(&exe)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .with_context(|| format!("cannot start {}", exe.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self(children))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// (peak RSS MiB, steady RSS MiB, CPU % of a core over the second half, processes watched).
fn measure(bench: &Bench, selector: &[&str], window: Duration) -> Result<(f64, f64, f64, usize)> {
    let scratch = bench.fresh_scratch()?;
    let mut argv: Vec<String> = vec![bench.agent.to_string_lossy().into_owned()];
    argv.extend(selector.iter().map(|s| s.to_string()));
    argv.extend(["--out".to_string(), scratch.to_string_lossy().into_owned()]);
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
    let pid = agent.pid();
    std::thread::sleep(window / 2);
    let (cpu_start, at) = (cpu_seconds(pid)?, Instant::now());
    std::thread::sleep(window / 2);
    let cpu = (cpu_seconds(pid)? - cpu_start) / at.elapsed().as_secs_f64() * 100.0;
    let (peak, steady) = (status_mib(pid, "VmHWM:")?, status_mib(pid, "VmRSS:")?);
    agent.stop()?;
    let watched = agent.stderr.try_iter().filter(|l| l.contains("watching a new process")).count();
    Ok((peak, steady, cpu, watched))
}

pub fn many_processes_budget(bench: &Bench) -> Result<String> {
    let window = bench.opts.many_window;
    step(&format!("10 many processes: 1 to 500 idle workers, {} each", humantime::format_duration(window)));
    let exe = bench.fixture("worker").to_string_lossy().into_owned();
    let mut md = format!(
        "## 10. Many processes, one budget\n\n`worker` (a pre-fork worker waiting for work, waking once a second), \
         N copies watched with `--exe` at the defaults (`--memory-budget 64MiB`) for {}, libc6-dbg installed. \
         Peak is VmHWM (start-up included); steady is VmRSS at the end; CPU is the agent's utime+stime over the \
         second half, in percent of one core. The whole host is `--all` with the 500 workers running.\n\n\
         | processes | watched | agent peak RSS | agent steady RSS | agent CPU |\n|---|---|---|---|---|\n",
        humantime::format_duration(window)
    );
    let mut rows = Vec::new();
    for n in COUNTS {
        let _workers = Workers::start(bench, n)?;
        std::thread::sleep(Duration::from_millis(500));
        rows.push((format!("{n}"), measure(bench, &["--exe", &exe], window)?));
        if n == *COUNTS.last().expect("counts") {
            rows.push(("whole host (`--all`)".into(), measure(bench, &["--all"], window)?));
        }
    }
    for (label, (peak, steady, cpu, watched)) in rows {
        eprintln!("    {label}: {watched} watched, peak {peak:.1} MiB, steady {steady:.1} MiB, CPU {cpu:.2}%");
        let _ = writeln!(md, "| {label} | {watched} | {peak:.1} MiB | {steady:.1} MiB | {cpu:.2}% |");
    }
    md += "\nTargets (issue 20): peak RSS at most 64 MiB at 100 processes and 96 MiB at 500; the agent at most \
           1% of a core at 100 idle processes. Issue 32 adds: at most 1% of a core for the whole host at 500 \
           processes. Past `--processes-per-interval` (50) processes, each has its interval work in turn (500: \
           every 10 s).\n\n";
    Ok(md)
}
