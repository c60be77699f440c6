//! Project tasks: `cargo xtask setup | build | run -- ARGS | test | lint | fuzz | bench | soak`.
//! Each task installs what it needs first (idempotently) and says what it does.

mod bench;
mod debian;
mod fuzz;
mod layers;
mod newer_go;
mod roots;
mod setup;
mod soak;
mod util;
mod vmtest;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "autodump project tasks")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: nightly rust-src, bpf-linker, Debian packages.
    Setup {
        /// Leave the Rust toolchain and bpf-linker to a command running at the same time (CI runs
        /// the rest of the setup while lint compiles).
        #[arg(long)]
        without_toolchain: bool,
    },
    /// Build the self-contained agent: target/release/autodump-agent.
    Build,
    /// Build and run the agent as root; arguments after `--` go to the agent.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests, then integration tests with real probes on fixture processes.
    Test {
        /// Only integration tests whose name contains this.
        filter: Option<String>,
    },
    /// rustfmt check and clippy with warnings denied.
    Lint,
    /// Fuzz the parsers of outside data (all targets, or the ones named) for a while each.
    Fuzz {
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// The agent for minutes against a churning target: RSS bounded, no interval missed, every
    /// bundle complete. Not part of `test`.
    Soak {
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
    },
    /// Overhead and footprint against perf and offcputime, written to BENCHMARKS.md.
    Bench(bench::Options),
    /// A Debian package (the agent, its systemd unit and config) in target/debian/, with
    /// cargo-deb (installed with cargo if missing).
    Deb,
    /// The kernel matrix: boot Debian's kernels under QEMU and run the end-to-end checks in each.
    Vmtest {
        /// Only kernels whose Debian suite (bookworm) or release (6.1) contains this.
        kernel: Option<String>,
    },
}

fn main() -> Result<()> {
    match Xtask::parse().task {
        Task::Setup { without_toolchain } => setup::all(!without_toolchain),
        Task::Build => build().map(|_| ()),
        Task::Run { args } => {
            let agent = build()?;
            let mut cmd = util::as_root(&agent);
            cmd.args(&args);
            util::exec(cmd)
        }
        Task::Test { filter } => test(filter),
        Task::Bench(opts) => bench::run_all(opts),
        Task::Vmtest { kernel } => {
            setup::all(true)?;
            vmtest::run_matrix(kernel.as_deref())
        }
        Task::Soak { duration } => soak::run_soak(duration),
        Task::Deb => {
            build()?;
            if util::cargo().args(["deb", "--version"]).output().map_or(true, |o| !o.status.success()) {
                util::step("installing cargo-deb (cargo install cargo-deb --locked)");
                util::run(util::cargo().args(["install", "cargo-deb", "--locked"]))?;
            }
            util::run(util::cargo().args(["deb", "-p", "autodump-user", "--no-build"]))
        }
        Task::Fuzz { targets, seconds } => fuzz::run_targets(&targets, seconds, fuzz::Build::Optimized),
        Task::Lint => {
            setup::toolchain()?;
            util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
            layers::check(&util::root())?;
            // The default members are every crate but the probes, which only build for BPF.
            util::run(util::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
            let mut probes = std::process::Command::new("cargo");
            probes.current_dir(util::root().join("autodump-ebpf"));
            probes.args(["+nightly", "clippy", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"]);
            util::run(probes.args(["--", "-D", "warnings"]))
        }
    }
}

pub(crate) fn build() -> Result<std::path::PathBuf> {
    setup::toolchain()?;
    util::run(util::cargo().args(["build", "--release", "-p", "autodump-user"]))?;
    Ok(util::root().join("target/release/autodump-agent"))
}

/// Every test: a failing stage does not stop the later ones (each says what it found), and the
/// run fails at the end naming every stage that failed.
///
/// With cargo-nextest, the integration tests run two at a time (.config/nextest.toml), and
/// beside them the unit tests are built at idle priority and then run, and the fuzz targets
/// built at idle priority; the fuzz targets run after them, the kernel matrix last.
fn test(filter: Option<String>) -> Result<()> {
    setup::all(true)?;
    let agent = build()?;
    let mut failed = Vec::new();
    let mut stage = |name: &str, result: Result<()>| {
        if let Err(e) = result {
            eprintln!("{name} failed: {e:#}");
            failed.push(name.to_string());
        }
    };
    let nextest = util::output(std::process::Command::new("cargo").args(["nextest", "--version"])).is_some();
    if let Some(filter) = &filter {
        stage("integration tests", integration(&agent, nextest, Some(filter)));
    } else if nextest {
        util::step("building the integration tests");
        let built = integration_build()?;
        let background = std::thread::spawn(unit_and_fuzz_build);
        stage("integration tests", integration_run(&agent, &built, None));
        util::step("waiting for the unit tests and the fuzz targets' build (beside the integration tests)");
        let (unit, fuzz_built) = background.join().map_err(|_| anyhow::anyhow!("the unit tests' thread panicked"))?;
        stage("unit tests", unit);
        stage("fuzzing", fuzz_built.and_then(|b| fuzz::run_built(&b, fuzz::SECONDS_IN_TEST)));
    } else {
        util::step("unit tests");
        stage("unit tests", util::run(&mut unit_tests(util::cargo())));
        util::step(&format!("fuzz targets, {} s each", fuzz::SECONDS_IN_TEST));
        stage("fuzzing", fuzz::run_targets(&[], fuzz::SECONDS_IN_TEST, fuzz::Build::Quick));
        stage("integration tests", integration(&agent, false, None));
    }
    if filter.is_none() {
        util::step("kernel matrix (the end-to-end checks on Debian's kernels under QEMU)");
        stage("kernel matrix", vmtest::run_matrix(None));
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo test` of the unit tests (every crate but the integration tests).
fn unit_tests(mut cargo: std::process::Command) -> std::process::Command {
    cargo.current_dir(util::root()).args(["test", "-p", "autodump-common", "-p", "autodump-user", "-p", "xtask"]);
    cargo
}

/// Beside the integration tests: the unit tests built at idle priority, then run (two more
/// tests beside them), and the fuzz targets built at idle priority. Their output goes to
/// target/unit-tests.log, and is printed when they are done.
fn unit_and_fuzz_build() -> (Result<()>, Result<fuzz::Built>) {
    let log_path = util::root().join("target/unit-tests.log");
    let unit = (|| -> Result<()> {
        let log = std::fs::File::create(&log_path)?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = unit_tests(util::idle(&cargo));
        build.arg("--no-run").stdout(log.try_clone()?).stderr(log.try_clone()?);
        util::run(&mut build)?;
        util::run(unit_tests(util::cargo()).stdout(log.try_clone()?).stderr(log))
    })();
    let fuzz = fuzz::build(&[], fuzz::Build::Quick, true);
    util::step("unit tests (run beside the integration tests; target/unit-tests.log)");
    eprintln!("{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    (unit, fuzz)
}

/// Runs the integration tests matching `filter`: with nextest, two at a time; else one at a time.
fn integration(agent: &std::path::Path, nextest: bool, filter: Option<&str>) -> Result<()> {
    if nextest {
        return integration_run(agent, &integration_build()?, filter);
    }
    util::step("integration tests (real probes on fixture processes, one at a time; no cargo-nextest)");
    let mut cmd = util::as_root(std::path::Path::new("cargo"));
    cmd.args(["test", "-p", "autodump-tests", "--", "--test-threads=1"]).args(filter);
    util::run(cmd.env("AUTODUMP_AGENT", agent))
}

/// The integration tests' binaries, built: nextest's list of them and cargo's metadata, from
/// which nextest runs them without building (so that cargo's lock is free for the unit tests).
fn integration_build() -> Result<[std::path::PathBuf; 2]> {
    let dir = util::root().join("target/nextest");
    std::fs::create_dir_all(&dir)?;
    let (binaries, metadata) = (dir.join("binaries.json"), dir.join("cargo-metadata.json"));
    let list = util::as_root(std::path::Path::new("cargo"))
        .args(["nextest", "list", "-p", "autodump-tests", "--list-type", "binaries-only", "--message-format", "json"])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !list.status.success() {
        bail!("building the integration tests failed: {}", list.status);
    }
    std::fs::write(&binaries, list.stdout)?;
    let meta = util::cargo().args(["metadata", "--format-version", "1", "--no-deps"]).output()?;
    if !meta.status.success() {
        bail!("cargo metadata failed: {}", meta.status);
    }
    std::fs::write(&metadata, meta.stdout)?;
    Ok([binaries, metadata])
}

/// Runs the built integration tests matching `filter` under nextest (.config/nextest.toml).
fn integration_run(
    agent: &std::path::Path,
    [binaries, metadata]: &[std::path::PathBuf; 2],
    filter: Option<&str>,
) -> Result<()> {
    util::step("integration tests (real probes on fixture processes; cargo nextest, .config/nextest.toml)");
    let mut cmd = util::as_root(std::path::Path::new("cargo"));
    cmd.args(["nextest", "run", "--binaries-metadata"]).arg(binaries).arg("--cargo-metadata").arg(metadata);
    cmd.args(filter);
    util::run(cmd.env("AUTODUMP_AGENT", agent))
}
