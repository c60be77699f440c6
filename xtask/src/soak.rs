//! `cargo xtask soak`: the agent at defaults for a long time against two services, watched as a
//! config file with two targets would have them:
//! - `churn`: threads come and go, libraries load and unload, thousands of stacks, periodic CPU
//!   spikes; killed (SIGKILL) and started again every few minutes;
//! - `worker`: 100 processes of one executable that come and go (a few end and new ones start
//!   every few seconds), as a pre-fork server's pool does.
//!
//! Passes when the agent's RSS is flat after warm-up (its slope, and a bound), no interval is
//! missed, every bundle is complete, every churn instance's end left an exit bundle, and its file
//! descriptors, threads and BPF map memory do not grow. Not part of `cargo xtask test`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    bench::process::{build_fixture, cpu_seconds, status_mib, Target, Tool, ToolKind},
    util::{root, step},
};

/// After warm-up, RSS may grow by at most this fraction (plus `RSS_SLACK_MIB`): the flight
/// recorder and caches are full by then, so lasting growth would be a leak.
const RSS_GROWTH: f64 = 0.25;
const RSS_SLACK_MIB: f64 = 16.0;
/// Past warm-up, RSS may trend up by at most this much an hour (least squares over the samples).
const RSS_SLOPE_MIB_PER_HOUR: f64 = 2.0;
/// The churn service is killed (SIGKILL, an abnormal end) and started again this often.
const RESTART_EVERY: Duration = Duration::from_secs(180);
/// Workers in the pool, and how many end (normally) and are replaced, how often.
const WORKERS: usize = 100;
const WORKERS_REPLACED: usize = 5;
const REPLACE_EVERY: Duration = Duration::from_secs(10);
/// How often the agent's vitals are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Files every bundle holds.
const BUNDLE_FILES: &[&str] = &[
    "summary.json",
    "cpu.folded",
    "offcpu.folded",
    "cpu.svg",
    "offcpu.svg",
    "cpu.pb.gz",
    "offcpu.pb.gz",
    "metrics.svg",
    "index.html",
];

/// What is wrong with `bundle`, if anything.
fn incomplete(bundle: &Path) -> Option<String> {
    let missing: Vec<&str> = BUNDLE_FILES.iter().copied().filter(|f| !bundle.join(f).is_file()).collect();
    if !missing.is_empty() {
        return Some(format!("{} lacks {missing:?}", bundle.display()));
    }
    let summary = std::fs::read(bundle.join("summary.json")).ok()?;
    serde_json::from_slice::<serde_json::Value>(&summary)
        .err()
        .map(|e| format!("{}: summary.json does not parse: {e}", bundle.display()))
}

/// The agent's vitals at one moment.
#[derive(Clone, Copy, Debug)]
struct Vitals {
    t: f64,
    rss_mib: f64,
    cpu_s: f64,
    fds: usize,
    threads: usize,
    /// Kernel memory of the BPF maps it holds (their fdinfo's `memlock`).
    bpf_map_kib: u64,
}

impl Vitals {
    fn read(pid: u32, t: f64) -> Result<Self> {
        let fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten().map(|e| e.path()).collect();
        let bpf_map_kib = fds
            .iter()
            .filter_map(|fd| {
                let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name()?.to_str()?)).ok()?;
                info.contains("map_type:").then_some(())?;
                info.lines().find_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok())
            })
            .sum::<u64>()
            / 1024;
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
        Ok(Self {
            t,
            rss_mib: status_mib(pid, "VmRSS:")?,
            cpu_s: cpu_seconds(pid)?,
            fds: fds.len(),
            threads,
            bpf_map_kib,
        })
    }
}

/// Least-squares slope of `(x, y)` points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), p| (a + (p.0 - mx) * (p.1 - my), b + (p.0 - mx).powi(2)));
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// A pool of idle workers that come and go: each ends normally (it is told "exit").
struct Pool {
    exe: PathBuf,
    workers: std::collections::VecDeque<Child>,
    replaced: usize,
}

impl Pool {
    fn start(exe: PathBuf, n: usize) -> Result<Self> {
        let mut pool = Self { exe, workers: Default::default(), replaced: 0 };
        for _ in 0..n {
            pool.spawn()?;
        }
        Ok(pool)
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new(&self.exe).stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
        self.workers.push_back(child);
        Ok(())
    }

    /// The oldest `n` end, `n` new ones start.
    fn replace(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            if let Some(mut old) = self.workers.pop_front() {
                let _ = old.stdin.as_mut().map(|s| s.write_all(b"exit\n"));
                let _ = old.wait();
            }
            self.spawn()?;
            self.replaced += 1;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for child in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run_soak(duration: Duration) -> Result<()> {
    crate::setup::all(true)?;
    let agent = crate::build()?;
    let dir = root().join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (churn, worker) = (build_fixture("churn", &dir)?, build_fixture("worker", &dir)?);
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[target]]\nname = \"churn\"\nexe = \"{}\"\n\n[[target]]\nname = \"workers\"\nexe = \"{}\"\n",
            churn.display(),
            worker.display()
        ),
    )?;
    let mut target = Target::start(&churn, &[])?;
    let mut pool = Pool::start(worker, WORKERS)?;
    let out = dir.join("bundles");
    let argv: Vec<String> =
        [&*agent.to_string_lossy(), "--config", &*config.to_string_lossy(), "--out", &*out.to_string_lossy()]
            .into_iter()
            .chain(["--max-bundles", "1000"])
            .map(String::from)
            .collect();
    // Ten minutes of warm-up in a long soak; a minute in a short one.
    let warm = if duration >= Duration::from_secs(1800) { Duration::from_secs(600) } else { Duration::from_secs(60) };
    step(&format!(
        "soaking: {} against a churning service restarted every {} and {WORKERS} workers, {WORKERS_REPLACED} \
         replaced every {}",
        humantime::format_duration(duration),
        humantime::format_duration(RESTART_EVERY),
        humantime::format_duration(REPLACE_EVERY)
    ));
    let mut tool = Tool::start(ToolKind::Autodump, &argv, &[])?;
    let started = Instant::now();
    let mut samples: Vec<Vitals> = Vec::new();
    let (mut restarts, mut last_restart, mut last_replace) = (0, Instant::now(), Instant::now());
    while started.elapsed() < duration {
        std::thread::sleep(SAMPLE_EVERY);
        if last_restart.elapsed() >= RESTART_EVERY && started.elapsed() + Duration::from_secs(30) < duration {
            drop(target); // SIGKILL
            target = Target::start(&churn, &[])?;
            (restarts, last_restart) = (restarts + 1, Instant::now());
            eprintln!("    {:>5} s: churn killed and restarted as {}", started.elapsed().as_secs(), target.pid());
        }
        if last_replace.elapsed() >= REPLACE_EVERY {
            pool.replace(WORKERS_REPLACED)?;
            last_replace = Instant::now();
        }
        let v = Vitals::read(tool.pid(), started.elapsed().as_secs_f64())?;
        if samples.len().is_multiple_of(12) {
            eprintln!(
                "    {:>5.0} s: agent RSS {:.1} MiB, CPU {:.1} s, {} fds, {} threads, BPF maps {} KiB",
                v.t, v.rss_mib, v.cpu_s, v.fds, v.threads, v.bpf_map_kib
            );
        }
        samples.push(v);
    }
    tool.stop()?;
    drop(target);
    drop(pool);
    finish(&dir, &out, &tool, &samples, warm, duration, restarts)
}

fn finish(
    dir: &Path,
    out: &Path,
    tool: &Tool,
    samples: &[Vitals],
    warm: Duration,
    duration: Duration,
    restarts: usize,
) -> Result<()> {
    let bundles: Vec<PathBuf> = tool.stdout.try_iter().map(|l| PathBuf::from(l.trim())).collect();
    let name = |b: &PathBuf| b.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let churn_exits = bundles.iter().filter(|b| name(b).starts_with("churn-") && name(b).ends_with("-exit")).count();
    let logs: Vec<String> = tool.stderr.try_iter().collect();
    let missed: u64 = logs
        .iter()
        .find(|l| l.contains("stopping; probes detached"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("missed_intervals=")?.parse().ok()))
        .context("the agent did not report its intervals")?;
    let leftovers: Vec<String> = std::fs::read_dir(out)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    let after: Vec<&Vitals> = samples.iter().filter(|v| v.t >= warm.as_secs_f64()).collect();
    let (first, last) = (after.first().context("the soak ended before warm-up")?, samples.last().expect("after"));
    let rss_slope = slope(&after.iter().map(|v| (v.t / 3600.0, v.rss_mib)).collect::<Vec<_>>());
    // CPU per sample interval, in percent of a core, and its trend.
    let cpu: Vec<(f64, f64)> =
        after.windows(2).map(|w| (w[1].t / 3600.0, (w[1].cpu_s - w[0].cpu_s) / (w[1].t - w[0].t) * 100.0)).collect();
    let cpu_mean = cpu.iter().map(|c| c.1).sum::<f64>() / cpu.len().max(1) as f64;
    let cpu_slope = slope(&cpu);
    let peak = after.iter().map(|v| v.rss_mib).fold(0.0, f64::max);
    let bound = (first.rss_mib * (1.0 + RSS_GROWTH)).max(first.rss_mib + RSS_SLACK_MIB);
    let report = format!(
        "soak of {}: after {} s of warm-up, agent RSS {:.1} MiB -> {:.1} MiB (peak {peak:.1}, bound {bound:.1}), \
         slope {rss_slope:+.2} MiB/h; CPU {cpu_mean:.2}% of a core, slope {cpu_slope:+.3} points/h; fds {} -> {}, \
         threads {} -> {}, BPF maps {} -> {} KiB; {} bundles ({churn_exits} churn exit bundles for {restarts} \
         restarts); {missed} intervals missed",
        humantime::format_duration(duration),
        warm.as_secs(),
        first.rss_mib,
        last.rss_mib,
        first.fds,
        last.fds,
        first.threads,
        last.threads,
        first.bpf_map_kib,
        last.bpf_map_kib,
        bundles.len()
    );
    println!("{report}");
    let series: String = samples
        .iter()
        .map(|v| format!("{:.0} {:.2} {:.2} {} {}\n", v.t, v.rss_mib, v.cpu_s, v.fds, v.threads))
        .collect();
    std::fs::write(dir.join("report.txt"), format!("{report}\n\n# t rss_mib cpu_s fds threads\n{series}"))?;
    let mut failures: Vec<String> = bundles.iter().filter_map(|b| incomplete(b)).collect();
    if peak > bound {
        failures.push(format!("RSS grew past {bound:.1} MiB after warm-up"));
    }
    if duration >= Duration::from_secs(1800) && rss_slope > RSS_SLOPE_MIB_PER_HOUR {
        failures.push(format!("RSS trends up by {rss_slope:.2} MiB an hour after warm-up"));
    }
    if last.fds > first.fds + 8 || last.threads > first.threads + 2 || last.bpf_map_kib > first.bpf_map_kib {
        failures.push("file descriptors, threads or BPF map memory grew".into());
    }
    if missed > 0 {
        failures.push(format!("{missed} intervals missed"));
    }
    if !leftovers.is_empty() {
        failures.push(format!("partial bundles left behind: {leftovers:?}"));
    }
    if churn_exits != restarts {
        failures.push(format!("{restarts} restarts but {churn_exits} exit bundles"));
    }
    if bundles.is_empty() {
        failures.push("no bundle was written, though the target spiked".into());
    }
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}
