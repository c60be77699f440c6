//! What attaching to many processes of one program costs the agent (rows 12 and 13): N copies
//! watched with `--exe` at the defaults, the agent's CPU and wall time from its start until it
//! has read the runtime of every one (its log says so, once per process), and its peak RSS then.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    process::{cpu_seconds, signal, status_mib},
    stats::Series,
    Bench,
};

/// The program run N times.
pub struct Processes<'a> {
    pub exe: &'a Path,
    pub args: &'a [String],
    /// Each copy takes `--web.listen-address=127.0.0.1:PORT` with a port of its own.
    pub ports: bool,
    /// The agent's log line once it has read a process's runtime.
    pub found: &'a str,
}

/// Children, killed on drop.
struct Copies(Vec<Child>);

impl Drop for Copies {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The table for `counts` copies of `processes` (`what` names them), median of `reps` agents.
pub fn table(bench: &Bench, processes: &Processes, counts: &[usize], what: &str) -> Result<String> {
    let reps = bench.opts.reps;
    let exe = processes.exe.display();
    let mut md = format!(
        "### Attaching to many processes\n\nN {what} watched with `--exe {exe}` at the defaults: the agent's CPU \
         (utime+stime) and wall time from its start until it has read the runtime of every one, and its peak RSS \
         then (median of {reps} agents, range in brackets). Per process is the difference to one process, divided \
         by the others.\n\n| processes | agent CPU to attach (ms) | per further process (ms) | wall time (s) | peak \
         RSS (MiB) | peak RSS per further process (MiB) |\n|---|---|---|---|---|---|\n"
    );
    let mut one = (f64::NAN, f64::NAN);
    for &n in counts {
        let copies = (0..n)
            .map(|_| {
                let mut command = Command::new(processes.exe);
                command.args(processes.args).stdout(Stdio::null()).stderr(Stdio::null());
                if processes.ports {
                    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                    command.arg(format!("--web.listen-address=127.0.0.1:{port}"));
                }
                command.spawn()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let _copies = Copies(copies);
        std::thread::sleep(Duration::from_secs(2));
        let (mut cpu, mut wall, mut peak) = (Series::default(), Series::default(), Series::default());
        for _ in 0..reps {
            let (c, w, p) = attach(bench, processes, n)?;
            cpu.0.push(c * 1000.0);
            wall.0.push(w);
            peak.0.push(p);
        }
        eprintln!(
            "    {n} processes: agent CPU {} ms, attached in {} s, peak {} MiB",
            cpu.show(0),
            wall.show(2),
            peak.show(1)
        );
        let further = |v: f64, at_one: f64, digits: usize| match n {
            1 => String::new(),
            _ => format!("{:.digits$}", (v - at_one) / (n - 1) as f64),
        };
        let (cpu_further, rss_further) = (further(cpu.median(), one.0, 2), further(peak.median(), one.1, 3));
        if n == 1 {
            one = (cpu.median(), peak.median());
        }
        let _ = writeln!(
            md,
            "| {n} | {} | {cpu_further} | {} | {} | {rss_further} |",
            cpu.show(0),
            wall.show(2),
            peak.show(1)
        );
    }
    Ok(md + "\n")
}

/// One agent watching the `n` copies running: (CPU seconds, wall seconds, peak RSS MiB) when it
/// has read the runtime of all of them.
fn attach(bench: &Bench, processes: &Processes, n: usize) -> Result<(f64, f64, f64)> {
    let scratch = bench.fresh_scratch()?;
    let started = Instant::now();
    let mut agent = Command::new(&bench.agent)
        .arg("--exe")
        .arg(processes.exe)
        .arg("--out")
        .arg(&scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the agent")?;
    let mut lines = BufReader::new(agent.stderr.take().expect("piped")).lines();
    let mut found = 0;
    while found < n {
        let line = lines.next().with_context(|| format!("the agent ended, having read {found} of {n}"))??;
        found += usize::from(line.contains(processes.found));
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds(agent.id())?);
    let peak = status_mib(agent.id(), "VmHWM:")?;
    signal(agent.id(), "INT")?;
    lines.for_each(drop);
    agent.wait()?;
    Ok((cpu, wall, peak))
}
