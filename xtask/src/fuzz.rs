//! Fuzz targets for every parser of outside data (fuzz/, cargo-fuzz with libFuzzer): briefly in
//! `cargo xtask test`, for as long as asked with `cargo xtask fuzz`.

use std::process::Command;

use anyhow::{bail, Result};

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

/// Runs `targets` (all when empty) for `seconds` each, with debug assertions (so overflow is a
/// crash). New inputs go to fuzz/corpus/TARGET; a crash fails the run and is saved in
/// fuzz/artifacts/TARGET.
pub fn run_targets(targets: &[String], seconds: u64, build: Build) -> Result<()> {
    crate::setup::toolchain()?;
    cargo_fuzz()?;
    let chosen: Vec<&str> =
        if targets.is_empty() { TARGETS.to_vec() } else { targets.iter().map(|s| s.as_str()).collect() };
    for target in &chosen {
        if !TARGETS.contains(target) {
            bail!("no fuzz target '{target}'; targets: {}", TARGETS.join(", "));
        }
    }
    let dir = root().join("fuzz");
    for target in chosen {
        step(&format!("fuzzing {target} for {seconds} s"));
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        run(Command::new("cargo")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "run", "--debug-assertions", target])
            .arg(match build {
                Build::Optimized => "--release",
                Build::Quick => "--dev",
            })
            .arg(&corpus)
            .arg(dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}")))?;
    }
    Ok(())
}
