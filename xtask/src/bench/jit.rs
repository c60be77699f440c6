//! Row 14: a JIT runtime's perf map. The agent at its defaults watches `jit_spin` (threads that
//! run in anonymous executable memory) while the bench plays the runtime: it writes a
//! 100,000-line `/tmp/perf-PID.map` (then a 1,000,000-line one, past the agent's bound), then
//! appends 1,000 lines a second, each for new code. The same target without a map is the
//! baseline, measured in the same run.

use std::{fmt::Write as _, io::Write as _, os::unix::fs::PermissionsExt, time::Instant};

use anyhow::Result;

use super::{
    process::{cpu_seconds, status_mib, Target, Tool, ToolKind},
    Bench,
};
use crate::util::step;

const FIXTURE: &str = "jit_spin";
/// The map's lines when the agent starts: none (the baseline), the 100,000, and a
/// million, whose entries pass `--jit-map-max-mib`.
const INITIAL_LINES: [Option<u64>; 3] = [None, Some(100_000), Some(1_000_000)];
const LINES_PER_SECOND: u64 = 1_000;
/// Where the bench's made-up code lies: well away from anything the target maps.
const CODE_BASE: u64 = 0x3000_0000_0000;

/// One line of a made-up map, for the `i`-th piece of code, as HotSpot names a method.
fn line(i: u64) -> String {
    format!("{:x} 1c0 long com.example.service.Handler{}.process(java.lang.String, int)\n", CODE_BASE + i * 0x200, i)
}

pub fn perf_map_growth(bench: &Bench) -> Result<String> {
    step("14 JIT: the agent with a 100,000-line and a 1,000,000-line perf map growing by 1,000 lines a second");
    let window = bench.opts.many_window / 2;
    let mut md = format!(
        "## 14. JIT: a growing perf map\n\nThe agent at its defaults (recording until stopped) on `tests/fixtures/jit_spin.c` (two threads in \
         anonymous executable memory) for {}; with a map, the bench writes 100,000 or 1,000,000 lines to \
         `/tmp/perf-PID.map` before the agent starts, then appends {LINES_PER_SECOND} a second (about 90 bytes a \
         line). CPU is the agent's utime+stime over the second half, in percent of one core; peak is VmHWM, steady \
         VmRSS at the end; entries and left out from the bundle's `jit`.\n\n| map | agent CPU | peak RSS | steady \
         RSS | entries held | left out |\n|---|---|---|---|---|---|\n",
        humantime::format_duration(window)
    );
    for initial in INITIAL_LINES {
        let target = Target::start(&bench.fixture(FIXTURE), &[])?;
        let map_path = format!("/tmp/perf-{}.map", target.pid());
        let mut map = None;
        let mut written = 0;
        if let Some(lines) = initial {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&map_path)?);
            file.get_ref().set_permissions(std::fs::Permissions::from_mode(0o644))?;
            for i in 0..lines {
                file.write_all(line(i).as_bytes())?;
            }
            file.flush()?;
            written = lines;
            map = Some(file);
        }
        let scratch = bench.fresh_scratch()?;
        let mut argv = ToolKind::Autodump.command(&bench.agent, target.pid(), &scratch).expect("the agent");
        // Recording until stopped: SIGINT then writes the bundle whose summary has the map's facts.
        argv.extend(["--duration".to_string(), "1h".to_string()]);
        let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
        let started = Instant::now();
        let mut cpu_start = None;
        while started.elapsed() < window {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if let Some(file) = map.as_mut() {
                let text: String = (written..written + LINES_PER_SECOND).map(line).collect();
                file.write_all(text.as_bytes())?;
                file.flush()?;
                written += LINES_PER_SECOND;
            }
            if cpu_start.is_none() && started.elapsed() >= window / 2 {
                cpu_start = Some((cpu_seconds(agent.pid())?, Instant::now()));
            }
        }
        let (cpu0, at) = cpu_start.unwrap_or((0.0, started));
        let cpu = (cpu_seconds(agent.pid())? - cpu0) / at.elapsed().as_secs_f64() * 100.0;
        let (peak, steady) = (status_mib(agent.pid(), "VmHWM:")?, status_mib(agent.pid(), "VmRSS:")?);
        agent.stop()?;
        let jit = last_summary_jit(&scratch);
        let _ = std::fs::remove_file(&map_path);
        let label = match initial {
            Some(lines) => format!("{lines} lines, {written} at the end"),
            None => "none (baseline)".into(),
        };
        let (entries, left_out) =
            jit.map_or(("–".into(), "–".into()), |j| (j["entries"].to_string(), j["left_out"].to_string()));
        eprintln!(
            "    {label}: agent {cpu:.2}% of a core, peak {peak:.1} MiB, steady {steady:.1} MiB, entries {entries}"
        );
        let _ = writeln!(md, "| {label} | {cpu:.2}% | {peak:.1} MiB | {steady:.1} MiB | {entries} | {left_out} |");
    }
    md += "\n";
    Ok(md)
}

/// The `jit` facts of the newest bundle under `dir`, if any.
fn last_summary_jit(dir: &std::path::Path) -> Option<serde_json::Value> {
    let mut bundles: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    bundles.sort();
    let summary = std::fs::read_to_string(bundles.last()?.join("summary.json")).ok()?;
    let summary: serde_json::Value = serde_json::from_str(&summary).ok()?;
    summary.get("jit").cloned()
}
