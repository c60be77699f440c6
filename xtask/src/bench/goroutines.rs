//! Row 12: goroutine snapshots. `gowaits` (150 goroutines waiting on a mutex and a channel)
//! with more goroutines parked beside them, 1,000 to 100,000 in all, watched at the defaults
//! (a snapshot every second, at most 10,000 goroutines read each) against the same agent with
//! snapshots off (`--goroutine-every 1h`), in the same run: what a snapshot costs, and the
//! agent's CPU and memory with and without them. And what attaching to 20 idle Alertmanagers
//! costs (`attach.rs`).

use std::fmt::Write as _;

use anyhow::Result;

use super::{
    attach::{self, Processes},
    process::{Tool, ToolKind},
    stats::Series,
    Bench,
};
use crate::util::step;

/// Debian's Alertmanager, and how many copies the attach table runs.
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const ALERTMANAGERS: [usize; 2] = [1, 20];
/// Goroutines in all, row by row.
const COUNTS: [usize; 3] = [1_000, 10_000, 100_000];
/// The fixture's own goroutines besides those it parks (see tests/fixtures/gowaits.go).
const FIXTURE_GOROUTINES: usize = 153;

/// (agent CPU % of a core over the second half, peak RSS MiB, steady RSS MiB, snapshot ms each).
fn measure(bench: &Bench, pid: u32, snapshots: bool) -> Result<(f64, f64, f64, Series)> {
    let scratch = bench.fresh_scratch()?;
    let mut argv: Vec<String> = [bench.agent.to_string_lossy().as_ref(), "--pid", &pid.to_string(), "--out"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(scratch.to_string_lossy().into_owned());
    if !snapshots {
        argv.extend(["--goroutine-every".into(), "1h".into()]);
    }
    let env = [("AUTODUMP_LOG", "info,autodump::runtimes::go::goroutine_watch=debug")];
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &env)?;
    let window = bench.opts.many_window / 2;
    let (cpu, peak, steady) = agent.footprint(window)?;
    agent.stop()?;
    let read_ms = agent
        .stderr
        .try_iter()
        .filter(|l| l.contains("goroutine snapshot"))
        .filter_map(|l| l.split("read_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    Ok((cpu, peak, steady, Series(read_ms)))
}

pub fn goroutine_snapshots(bench: &Bench) -> Result<String> {
    let window = bench.opts.many_window / 2;
    step(&format!("12 goroutine snapshots: 1,000 to 100,000 goroutines, {} each", humantime::format_duration(window)));
    let mut md = format!(
        "## 12. Goroutine snapshots\n\n`gowaits` (100 goroutines contending on a mutex, 50 on a channel) with more \
         goroutines parked beside it, N in all, watched for {} at the defaults (`--goroutine-every 1s`, \
         `--goroutine-max 10000`) and with snapshots off (`--goroutine-every 1h`), one after the other on the same \
         process. A snapshot's cost is its read, as the agent logs it (median, min–max); CPU is the agent's \
         utime+stime over the second half, in percent of one core; peak is VmHWM, steady VmRSS at the end.\n\n\
         | goroutines | read per snapshot | agent CPU, snapshots on / off | agent peak RSS on / off | steady RSS on / off |\n\
         |---|---|---|---|---|\n",
        humantime::format_duration(window)
    );
    for n in COUNTS {
        let parked = n.saturating_sub(FIXTURE_GOROUTINES).to_string();
        let fixture = std::process::Command::new(bench.fixture("gowaits"))
            .arg(&parked)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let guard = Kill(fixture);
        std::thread::sleep(std::time::Duration::from_secs(2));
        let pid = guard.0.id();
        let (on, off) = (measure(bench, pid, true)?, measure(bench, pid, false)?);
        let ms = format!("{} ms", on.3.show(2));
        eprintln!("    {n}: read {ms}, CPU {:.2}% / {:.2}%, peak {:.1} / {:.1} MiB", on.0, off.0, on.1, off.1);
        let _ = writeln!(
            md,
            "| {n} | {ms} | {:.2}% / {:.2}% | {:.1} / {:.1} MiB | {:.1} / {:.1} MiB |",
            on.0, off.0, on.1, off.1, on.2, off.2
        );
    }
    md += "\nTarget (issue 24): the agent at most 1% of a core, and within its memory budget (64 MiB), at 10,000 \
           goroutines. Above `--goroutine-max` a snapshot still reads every goroutine's header, but walks only an \
           even sample of stacks.\n\n";
    md += &many_alertmanagers(bench)?;
    Ok(md)
}

/// Debian's Alertmanager (a stripped Go binary of 24 MB), 1 and 20 copies: what reading their
/// runtime costs the agent, the binary read once for all.
fn many_alertmanagers(bench: &Bench) -> Result<String> {
    let dir = bench.scratch.join("alertmanager");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: none\nreceivers:\n  - name: none\n")?;
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.display()),
        "--cluster.listen-address=".to_string(),
    ];
    let exe = std::path::Path::new(ALERTMANAGER);
    let processes = Processes { exe, args: &args, ports: true, found: "Go program: goroutines are counted" };
    let md = attach::table(bench, &processes, &ALERTMANAGERS, "idle Debian `prometheus-alertmanager` servers")?;
    Ok(md
        + "The executable is read once for all of them (`agent_memory.go_files_read`), its function table shared.\n\n")
}

/// The fixture, killed on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
