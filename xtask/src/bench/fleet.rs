//! Row 11: off the host. The agent uploading a Go heap bundle of about 16 MB to a local SeaweedFS
//! (a real S3 store, signatures and checksums checked): its CPU and RSS while it uploads, and the
//! upload's throughput; and `/metrics` scraped with 50 targets.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use autodump_tests::servers::{free_port, SeaweedFs};

use super::{
    process::{cpu_seconds, status_mib, Target, Tool, ToolKind},
    stats::Series,
    Bench,
};
use crate::util::step;

/// Targets `/metrics` lists in the scrape measurement, and scrapes timed.
const METRIC_TARGETS: usize = 50;
const SCRAPES: usize = 50;

pub fn off_the_host(bench: &Bench) -> Result<String> {
    step("11 off the host: uploading a Go heap bundle to SeaweedFS, /metrics with 50 targets");
    let mut md = String::from(
        "## 11. Off the host: uploads and /metrics\n\n`bench_goheap 14` (16,413 heap stacks) watched with \
         `--upload s3://bundles/bench` at the default `--upload-rate 4MiB` against SeaweedFS 4.48 on loopback (`weed server -s3`, SigV4 and \
         `x-amz-checksum-sha256` checked); each SIGUSR1 bundle is uploaded file by file, streamed from disk. From the \
         bundle's path on stdout to the uploader's \"bundle uploaded\": the agent's CPU (utime+stime over that \
         time), its RSS sampled every 20 ms, and the throughput.\n\n",
    );
    let store = SeaweedFs::start(&bench.scratch.join("seaweedfs"), "bundles");
    let target = Target::start(&bench.fixture("bench_goheap"), &["14".to_string()])?;
    let scratch = bench.fresh_scratch()?;
    let argv: Vec<String> = [
        &*bench.agent.to_string_lossy(),
        "--pid",
        &target.pid().to_string(),
        "--out",
        &*scratch.to_string_lossy(),
        "--upload",
        "s3://bundles/bench",
    ]
    .map(String::from)
    .to_vec();
    let endpoint = store.endpoint();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", store.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", store.secret_key.as_str()),
    ];
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &env)?;
    std::thread::sleep(Duration::from_secs(5));
    let (mut cpu, mut rss, mut throughput, mut size) = (Series::default(), Series::default(), Series::default(), 0.0);
    for _ in 0..bench.opts.reps.min(3) {
        super::process::signal(agent.pid(), "USR1")?;
        let bundle = agent.stdout.recv_timeout(Duration::from_secs(60)).context("the agent wrote no bundle")?;
        let (started, cpu_start) = (Instant::now(), cpu_seconds(agent.pid())?);
        size = dir_bytes(std::path::Path::new(bundle.trim()))? as f64 / 1e6;
        let mut peak = 0.0f64;
        loop {
            peak = peak.max(status_mib(agent.pid(), "VmRSS:")?);
            if agent.stderr.try_iter().any(|l| l.contains("bundle uploaded")) {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the bundle was not uploaded within 2 minutes");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let seconds = started.elapsed().as_secs_f64();
        cpu.0.push((cpu_seconds(agent.pid())? - cpu_start) / seconds * 100.0);
        rss.0.push(peak);
        throughput.0.push(size / seconds);
        std::thread::sleep(Duration::from_secs(2));
    }
    agent.stop()?;
    drop(target);
    eprintln!(
        "    upload of {size:.1} MB: {} MB/s, agent CPU {}%, RSS {} MiB",
        throughput.show(1),
        cpu.show(1),
        rss.show(1)
    );
    let _ = writeln!(
        md,
        "| bundle | throughput | agent CPU while uploading | agent RSS while uploading (peak) |\n|---|---|---|---|\n\
         | {size:.1} MB | {} MB/s | {}% of a core | {} MiB |\n",
        throughput.show(1),
        cpu.show(1),
        rss.show(1)
    );
    md += &scrapes(bench)?;
    Ok(md)
}

fn dir_bytes(dir: &std::path::Path) -> Result<u64> {
    Ok(std::fs::read_dir(dir)?.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// `/metrics` of an agent with 50 targets (a worker each): scrape latency and size.
fn scrapes(bench: &Bench) -> Result<String> {
    let workers: Vec<std::process::Child> = (0..METRIC_TARGETS)
        .map(|_| {
            std::process::Command::new(bench.fixture("worker"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("cannot start a worker")
        })
        .collect::<Result<_>>()?;
    let scratch = bench.fresh_scratch()?;
    let config: String =
        workers.iter().enumerate().map(|(i, w)| format!("[[target]]\nname = \"w{i}\"\npid = {}\n", w.id())).collect();
    let path = scratch.join("config.toml");
    std::fs::write(&path, config)?;
    let addr = format!("127.0.0.1:{}", free_port());
    let argv: Vec<String> = [
        &*bench.agent.to_string_lossy(),
        "--config",
        &*path.to_string_lossy(),
        "--out",
        &*scratch.to_string_lossy(),
        "--metrics-addr",
        &addr,
    ]
    .map(String::from)
    .to_vec();
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
    std::thread::sleep(Duration::from_secs(8));
    let (mut latency, mut bytes) = (Series::default(), 0);
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let body = ureq::get(&format!("http://{addr}/metrics")).call()?.body_mut().read_to_string()?;
        latency.0.push(started.elapsed().as_secs_f64() * 1e3);
        bytes = body.len();
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.stop()?;
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    eprintln!("    /metrics with {METRIC_TARGETS} targets: {} ms, {bytes} bytes", latency.show(2));
    Ok(format!(
        "`/metrics` of an agent watching {METRIC_TARGETS} targets (a `worker` each, from a config file), scraped \
         {SCRAPES} times over loopback:\n\n| targets | scrape latency | response |\n|---|---|---|\n\
         | {METRIC_TARGETS} | {} ms | {:.1} KB |\n\nTargets (issue 21): the agent within 1% of a core and 64 MiB while it \
         uploads, streaming files from disk.\n\n",
        latency.show(2),
        bytes as f64 / 1e3
    ))
}
