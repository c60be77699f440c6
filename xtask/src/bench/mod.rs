//! `cargo xtask bench`: autodump's overhead and footprint against the tools a user would
//! otherwise run (perf, offcputime), measured in the same run on the same machine, written to
//! BENCHMARKS.md.

mod agent;
mod attach;
mod bpf_stats;
mod budget;
mod fleet;
mod goroutines;
mod java;
mod jit;
mod memory;
pub mod process;
mod python;
mod report;
mod rows;
mod ruby;
mod services;
mod stats;
mod symbols;
mod unwind;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{
    setup,
    util::{output, root, step},
};

/// Packages the bench runs as peers: `perf` (linux-perf) and `offcputime` (libbpf-tools).
const BENCH_PACKAGES: &[(&str, &str)] =
    &[("linux-perf", "perf"), ("libbpf-tools", "offcputime"), ("bpftool", "bpftool")];
/// Fixtures the bench runs, from tests/fixtures.
const FIXTURES: &[&str] = &[
    "bench_cpu",
    "bench_pingpong",
    "stacky",
    "bench_faults",
    "bench_goheap",
    "cpuload",
    "worker",
    "gowaits",
    "jit_spin",
];

/// Bench settings; each has a flag.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Repetitions of each timed configuration (interleaved A B C A B C …).
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Rounds of fixed work per thread in the CPU-bound target (about 2 s alone here).
    #[arg(long, default_value_t = 1_500_000)]
    pub cpu_rounds: u64,
    /// Round trips in the context-switch-heavy target (about 1.3 s alone here).
    #[arg(long, default_value_t = 200_000)]
    pub round_trips: u64,
    /// Rounds of 4 MiB touched per thread in the page-fault-heavy target (about 2 s alone here).
    #[arg(long, default_value_t = 1000)]
    pub fault_rounds: u64,
    /// How long the agent watches the busy many-stack target for its footprint.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub footprint: Duration,
    /// How long the agent watches each set of idle workers in row 10 (steady state is its end).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub many_window: Duration,
    /// Rounds of the Python CPU-bound loop (about 9 s of CPU alone here: shorter runs spread by
    /// more than the 1% the row is read against).
    #[arg(long, default_value_t = 100_000)]
    pub python_rounds: u64,
    /// Round trips in the Python context-switch-heavy target (about 2 s of CPU alone here).
    #[arg(long, default_value_t = 300_000)]
    pub python_trips: u64,
    /// Rounds of the Ruby CPU-bound loop (about 9 s of CPU alone here).
    #[arg(long, default_value_t = 80_000)]
    pub ruby_rounds: u64,
    /// Round trips in the Ruby context-switch-heavy target (about 3 s of CPU alone here).
    #[arg(long, default_value_t = 300_000)]
    pub ruby_trips: u64,
    /// Rounds of the Java CPU-bound loop (about 5 s of CPU alone here).
    #[arg(long, default_value_t = 2_000_000)]
    pub java_rounds: u64,
    /// Only these rows (1 to 16, comma-separated); all by default. Their sections replace the same
    /// rows' in `--out`, whose other rows stay.
    #[arg(long, value_delimiter = ',')]
    pub rows: Vec<u8>,
    /// Where the markdown report goes.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

/// What every row needs: the agent, the fixtures, a scratch directory.
pub struct Bench {
    pub opts: Options,
    pub agent: PathBuf,
    pub bin: PathBuf,
    pub scratch: PathBuf,
    pub cpus: usize,
}

impl Bench {
    pub fn fixture(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// A fresh, empty scratch directory for one tool run.
    pub fn fresh_scratch(&self) -> Result<PathBuf> {
        let dir = self.scratch.join("run");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

pub fn run_all(opts: Options) -> Result<()> {
    setup::all(true)?;
    setup::apt_packages(BENCH_PACKAGES)?;
    let agent = crate::build()?;
    let bin = root().join("target/bench");
    std::fs::create_dir_all(&bin)?;
    for name in FIXTURES {
        process::build_fixture(name, &bin)?;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bench = Bench { scratch: bin.join("scratch"), opts, agent, bin, cpus };

    let wanted = |row: u8| bench.opts.rows.is_empty() || bench.opts.rows.contains(&row);
    type Row = fn(&Bench) -> Result<String>;
    let rows: [(u8, Row); 16] = [
        (1, rows::cpu_bound),
        (2, rows::switch_heavy),
        (3, rows::probe_costs),
        (4, agent::footprint),
        (5, agent::dump),
        (6, symbols::symbolization),
        (7, unwind::tables),
        (8, memory::faults_and_heap),
        (9, services::many_processes),
        (10, budget::many_processes_budget),
        (11, fleet::off_the_host),
        (12, goroutines::goroutine_snapshots),
        (13, python::python_programs),
        (14, jit::perf_map_growth),
        (15, ruby::ruby_programs),
        (16, java::java_programs),
    ];
    let mut measured = Vec::new();
    for (row, measure) in rows {
        if wanted(row) {
            measured.push((row, measure(&bench)?));
        }
    }
    let out = root().join(&bench.opts.out);
    // Some rows: in place of theirs in the file, the others kept.
    let md = match std::fs::read_to_string(&out) {
        Ok(existing) if !bench.opts.rows.is_empty() => report::splice(&existing, &measured),
        _ => header(&bench) + &measured.into_iter().map(|(_, section)| section).collect::<String>(),
    };
    std::fs::write(&out, md).with_context(|| format!("cannot write {}", out.display()))?;
    step(&format!("wrote {}", out.display()));
    Ok(())
}

fn header(bench: &Bench) -> String {
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench` (reproduce the whole file with `sudo cargo xtask bench --reps {} --footprint {}`).",
        bench.opts.reps,
        humantime::format_duration(bench.opts.footprint)
    );
    let _ = writeln!(
        md,
        "Machine: {} CPUs ({cpu}), kernel {}. Timed runs are interleaved (alone, autodump, peer, then the next \
         repetition in rotated order); each cell is the median (min–max) of {} runs. Ratios compare medians.\n\n\
         Targets (issue 5): CPU-bound slowdown at most 1%; switch-heavy slowdown at most half of offcputime's; \
         sched_switch for other threads at most 60 ns; agent at most 1% of a core and 64 MiB; dump within 1 s.\n",
        bench.cpus,
        kernel.trim(),
        bench.opts.reps
    );
    md
}

/// `path` relative to the workspace, for commands a reader can paste.
pub fn shown(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}
