//! `cargo xtask soak`: the agent at defaults for minutes against a service that keeps changing
//! (threads come and go, libraries load and unload, thousands of stacks, periodic CPU spikes)
//! and is killed and restarted every few minutes, watched with `--exe` as a service would be.
//! Passes when the agent's RSS stays bounded after warm-up, no interval is missed, every bundle
//! is complete, and every instance's end left an exit bundle. Not part of `cargo xtask test`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    bench::process::{build_fixture, status_mib, Target, Tool, ToolKind},
    util::{root, step},
};

/// RSS is compared against its value at this point, after start-up and the first bundles' worth
/// of history.
const WARM: Duration = Duration::from_secs(60);
/// After warm-up, RSS may grow by at most this fraction (plus `RSS_SLACK_MIB`): the flight
/// recorder and caches are full by then, so lasting growth would be a leak.
const RSS_GROWTH: f64 = 0.25;
const RSS_SLACK_MIB: f64 = 16.0;
/// The service is killed (SIGKILL, an abnormal end) and started again this often.
const RESTART_EVERY: Duration = Duration::from_secs(180);
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

pub fn run_soak(duration: Duration) -> Result<()> {
    crate::setup::all()?;
    let agent = crate::build()?;
    let dir = root().join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let churn = build_fixture("churn", &dir)?;
    let mut target = Target::start(&churn, &[])?;
    let out = dir.join("bundles");
    let argv: Vec<String> = [
        &*agent.to_string_lossy(),
        "--exe",
        &*churn.to_string_lossy(),
        "--out",
        &*out.to_string_lossy(),
        "--max-bundles",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    step(&format!(
        "soaking: {} against a churning service restarted every {}",
        humantime::format_duration(duration),
        humantime::format_duration(RESTART_EVERY)
    ));
    let mut tool = Tool::start(ToolKind::Autodump, &argv, &[])?;
    let started = Instant::now();
    let (mut at_warm, mut peak_after_warm) = (None, 0.0f64);
    let (mut restarts, mut last_restart) = (0, Instant::now());
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(5));
        if last_restart.elapsed() >= RESTART_EVERY && started.elapsed() + Duration::from_secs(30) < duration {
            drop(target); // SIGKILL
            target = Target::start(&churn, &[])?;
            (restarts, last_restart) = (restarts + 1, Instant::now());
            eprintln!("    {:>4} s: service killed and restarted as {}", started.elapsed().as_secs(), target.pid());
        }
        let rss = status_mib(tool.pid(), "VmRSS:")?;
        if started.elapsed() >= WARM {
            at_warm.get_or_insert(rss);
            peak_after_warm = peak_after_warm.max(rss);
        }
        eprintln!("    {:>4} s: agent RSS {rss:.1} MiB", started.elapsed().as_secs());
    }
    let at_end = status_mib(tool.pid(), "VmRSS:")?;
    tool.stop()?;
    drop(target);

    let bundles: Vec<PathBuf> = tool.stdout.try_iter().map(|l| PathBuf::from(l.trim())).collect();
    let exits = bundles.iter().filter(|b| b.to_string_lossy().ends_with("-exit")).count();
    let logs: Vec<String> = tool.stderr.try_iter().collect();
    let missed: u64 = logs
        .iter()
        .find(|l| l.contains("stopping; probes detached"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("missed_intervals=")?.parse().ok()))
        .context("the agent did not report its intervals")?;
    let leftovers: Vec<String> = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    let at_warm = at_warm.context("the soak ended before warm-up")?;
    let bound = (at_warm * (1.0 + RSS_GROWTH)).max(at_warm + RSS_SLACK_MIB);
    let report = format!(
        "soak of {}: agent RSS {at_warm:.1} MiB at {} s, {at_end:.1} MiB at the end (peak after warm-up \
         {peak_after_warm:.1} MiB, bound {bound:.1} MiB); {} bundles written ({exits} exit bundles for \
         {restarts} restarts); {missed} intervals missed",
        humantime::format_duration(duration),
        WARM.as_secs(),
        bundles.len()
    );
    println!("{report}");
    std::fs::write(dir.join("report.txt"), format!("{report}\n"))?;
    let mut failures: Vec<String> = bundles.iter().filter_map(|b| incomplete(b)).collect();
    if peak_after_warm > bound {
        failures.push(format!("RSS grew past {bound:.1} MiB after warm-up"));
    }
    if missed > 0 {
        failures.push(format!("{missed} intervals missed"));
    }
    if !leftovers.is_empty() {
        failures.push(format!("partial bundles left behind: {leftovers:?}"));
    }
    if exits != restarts {
        failures.push(format!("{restarts} restarts but {exits} exit bundles"));
    }
    if bundles.is_empty() {
        failures.push("no bundle was written, though the target spiked".into());
    }
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}
