//! Row 8: memory incidents. The page-fault probe's cost per run (kernel accounting) and the
//! slowdown of a target that does nothing but touch fresh memory; reading a Go heap profile of
//! 16,384 buckets, and the agent's peak RSS while it does.

use std::{fmt::Write as _, process::Command, time::Duration};

use anyhow::{bail, Context, Result};

use super::{
    bpf_stats::StatsSwitch,
    process::{Tool, ToolKind},
    rows::{program_cost, slowdown},
    stats::Series,
    Bench,
};
use crate::util::step;

/// Pages each thread of `bench_faults` touches per round (4 MiB).
const PAGES_PER_ROUND: u64 = 1024;
/// Depth of `bench_goheap`'s call tree: 2^14 allocating stacks, one heap-profile bucket each.
const HEAP_DEPTH: u32 = 14;

pub fn faults_and_heap(bench: &Bench) -> Result<String> {
    step("8/9 memory: page-fault probe cost and slowdown, Go heap profile read");
    let args = vec![bench.cpus.to_string(), bench.opts.fault_rounds.to_string()];
    let faults = bench.cpus as u64 * bench.opts.fault_rounds * PAGES_PER_ROUND;
    let table = {
        let _stats = StatsSwitch::set(false)?;
        let tools = [ToolKind::Alone, ToolKind::AutodumpNoFaults, ToolKind::Autodump, ToolKind::PerfFaults];
        slowdown(bench, "bench_faults", &args, &tools)?
    };
    let mut md = format!(
        "## 8. Memory: page faults and the Go heap\n\n`bench_faults {} {}`: one thread per CPU maps 4 MiB of \
         fresh memory, touches every page and unmaps it, {} faults in all: the worst case for the page-fault \
         probe (a real service faults far less often). The probe runs every 211th fault on each CPU (the \
         default `--fault-period`, a prime); the agent without it (`--fault-period 0`) separates its cost from \
         the other probes'.\n\n{table}\n",
        args[0], args[1], faults
    );
    let _stats = StatsSwitch::set(true)?;
    md += "| page-fault probe | runs | ns per run (median of runs) |\n|---|---|---|\n";
    for (label, other) in [("the target's faults", false), ("other processes' faults", true)] {
        let mut per_run = Series::default();
        let mut runs = 0;
        for _ in 0..bench.opts.reps.min(3) {
            let costs = program_cost(bench, ToolKind::Autodump, "bench_faults", &args, other)?;
            let Some(&(ns, cnt)) = costs.get("fault_unwind").filter(|c| c.1 > 0) else {
                bail!("no fault_unwind run during the work: {costs:?}");
            };
            per_run.0.push(ns as f64 / cnt as f64);
            runs = cnt;
        }
        eprintln!("    fault probe, {label}: {} ns", per_run.show(0));
        let _ = writeln!(md, "| {label} | {runs} | {} |", per_run.show(0));
    }
    md += &heap_read(bench)?;
    Ok(md)
}

/// Reads `bench_goheap`'s heap profile in record mode, a few times: read time and peak RSS.
fn heap_read(bench: &Bench) -> Result<String> {
    let mut target = Command::new(bench.fixture("bench_goheap"))
        .arg(HEAP_DEPTH.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start bench_goheap")?;
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(target.stdout.as_mut().unwrap()), &mut first)?;
    let (mut read_ms, mut peak, mut after_read, mut buckets) =
        (Series::default(), Series::default(), Series::default(), 0);
    for _ in 0..bench.opts.reps.min(3) {
        let scratch = bench.fresh_scratch()?;
        let mut argv = ToolKind::Autodump.command(&bench.agent, target.id(), &scratch).expect("a tool");
        argv.extend(["--duration", "60s", "--heap-every", "1s"].map(String::from));
        let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
        std::thread::sleep(Duration::from_secs(2));
        agent.stop()?;
        let log: Vec<String> = agent.stderr.try_iter().collect();
        let field = |key: &str| {
            log.iter().rev().find_map(|l| l.split(key).nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        };
        peak.0.push(field("peak_rss_mib=").context("no peak RSS in the agent's log")?);
        after_read.0.push(field(" rss_mib=").context("no heap read in the agent's log")?);
        let bundle = agent.stdout.try_iter().last().context("the agent wrote no bundle")?;
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(std::path::Path::new(&bundle).join("summary.json"))?)?;
        let heap = &summary["go"]["heap"];
        read_ms.0.push(heap["read_ms"].as_f64().context("no heap read time")?);
        buckets = heap["buckets"].as_u64().unwrap_or(0);
    }
    let _ = target.kill();
    let _ = target.wait();
    eprintln!(
        "    Go heap: {buckets} buckets in {} ms, agent {} MiB after the read, peak {} MiB",
        read_ms.show(1),
        after_read.show(1),
        peak.show(1)
    );
    Ok(format!(
        "\n`bench_goheap {HEAP_DEPTH}` (Go 1.19, `MemProfileRate = 1`, {buckets} buckets: one per allocating \
         stack): the agent reads the runtime's bucket list with `process_vm_readv` when the bundle is written \
         (`summary.json`: `go.heap.read_ms`), and keeps a snapshot every `--heap-every`. The agent's RSS \
         right after the read (VmRSS, logged with it), and its peak over the run (VmHWM, logged at exit), \
         which writing the bundle sets: with every stack distinct the heap's folded stacks alone are 5.6 MB.\n\n\
         | buckets | read time | agent RSS after the read | agent peak RSS |\n|---|---|---|---|\n\
         | {buckets} | {} ms | {} MiB | {} MiB |\n\n",
        read_ms.show(1),
        after_read.show(1),
        peak.show(1)
    ))
}
