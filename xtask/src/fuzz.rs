//! Fuzz targets for every parser of outside data (fuzz/, cargo-fuzz with libFuzzer): briefly in
//! `cargo xtask test`, for as long as asked with `cargo xtask fuzz`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::{output, root, run, step};

/// Every target in fuzz/fuzz_targets; seeds for each live in fuzz/seeds/TARGET.
pub const TARGETS: &[&str] = &[
    "proc_files",
    "cgroup_files",
    "rules_and_config",
    "kernel_btf",
    "go_memory",
    "go_pclntab",
    "unwind_rows",
    "offhost_inputs",
    "python_memory",
    "perf_map",
    "ruby_memory",
    "hotspot_tables",
];
/// Seconds each target runs within `cargo xtask test`.
pub const SECONDS_IN_TEST: u64 = 15;
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Installs cargo-fuzz if it is missing.
fn cargo_fuzz() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    step(&format!("installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)"));
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
}

/// How the fuzz targets are compiled.
#[derive(Clone, Copy)]
pub enum Build {
    /// Optimized: the most inputs a second, for long runs (`cargo xtask fuzz`).
    Optimized,
    /// Unoptimized: builds in half the time, for the short runs of `cargo xtask test`.
    Quick,
}

/// Fuzz targets built and ready to run.
pub struct Built {
    dir: PathBuf,
    bins: PathBuf,
    chosen: Vec<String>,
}

/// Runs `targets` (all when empty) for `seconds` each: [`build`], then [`run_built`].
pub fn run_targets(targets: &[String], seconds: u64, build: Build) -> Result<()> {
    run_built(&self::build(targets, build, false)?, seconds)
}

/// Builds `targets` (all when empty) with debug assertions (so overflow is a crash); `idle`:
/// at idle CPU priority (beside the integration tests, whose CPU it must not take).
pub fn build(targets: &[String], build: Build, idle: bool) -> Result<Built> {
    crate::setup::toolchain()?;
    cargo_fuzz()?;
    let chosen: Vec<String> =
        if targets.is_empty() { TARGETS.iter().map(|t| t.to_string()).collect() } else { targets.to_vec() };
    for target in &chosen {
        if !TARGETS.contains(&target.as_str()) {
            bail!("no fuzz target '{target}'; targets: {}", TARGETS.join(", "));
        }
    }
    let dir = root().join("fuzz");
    let (flag, profile) = match build {
        Build::Optimized => ("--release", "release"),
        Build::Quick => ("--dev", "debug"),
    };
    step(&format!("building {} fuzz target(s){}", chosen.len(), if idle { " at idle priority" } else { "" }));
    let mut cmd = if idle { crate::util::idle("cargo") } else { Command::new("cargo") };
    cmd.current_dir(&dir).args(["+nightly", "fuzz", "build", "--debug-assertions", flag]);
    if chosen.len() == 1 {
        cmd.arg(&chosen[0]);
    }
    run(&mut cmd)?;
    let host = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .and_then(|v| v.lines().find_map(|l| l.strip_prefix("host: ").map(str::to_string)))
        .context("rustc +nightly -vV names no host")?;
    let bins = dir.join("target").join(host).join(profile);
    Ok(Built { dir, bins, chosen })
}

/// Runs built targets for `seconds` each, as many at once as there are CPUs (libFuzzer runs
/// one thread). New inputs go to fuzz/corpus/TARGET; a crash fails the run and is saved in
/// fuzz/artifacts/TARGET; each run's output is in target/fuzz-logs/TARGET.log.
pub fn run_built(built: &Built, seconds: u64) -> Result<()> {
    let Built { dir, bins, chosen } = built;
    let logs = root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    let lanes = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chosen.len().max(1));
    step(&format!("fuzzing {} target(s) for {seconds} s each, {lanes} at a time", chosen.len()));
    let failed: Vec<String> = crate::util::in_lanes(chosen.clone(), lanes, |target| {
        fuzz_one(dir, bins, &logs, &target, seconds).err().map(|e| format!("{target}: {e:#}"))
    })
    .into_iter()
    .flatten()
    .collect();
    if !failed.is_empty() {
        bail!("fuzzing failed: {}", failed.join("; "));
    }
    Ok(())
}

/// One target's run over its corpus and seeds; its output goes to `logs/TARGET.log`.
fn fuzz_one(dir: &Path, bins: &Path, logs: &Path, target: &str, seconds: u64) -> Result<()> {
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)?;
    let status = Command::new(bins.join(target))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg(&corpus)
        .arg(dir.join("seeds").join(target))
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot start the {target} fuzz target"))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let last = text.lines().rev().find(|l| l.starts_with('#') || l.starts_with("Done")).unwrap_or("");
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        bail!("{status} (crash input in {}; log {})", artifacts.display(), log_path.display());
    }
    step(&format!("fuzzed {target}: {last}"));
    Ok(())
}
