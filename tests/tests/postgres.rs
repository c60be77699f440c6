//! A real multi-process server nobody here wrote: Debian's PostgreSQL 15 under `pgbench -c 100`,
//! watched with `--exe` on the postgres binary. Every backend is watched within the memory
//! budget; the SIGUSR1 bundles name the executor on the CPU and the wait for the client off it,
//! and agree with `perf record --call-graph dwarf` on the same backends over the same seconds.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use autodump_tests::{perf::PerfRecording, require_bpf, scratch_dir, Bundle, RunningAgent};

/// What the agent's RSS holds beyond the heap its `--memory-budget` bounds: its code, thread
/// stacks, and the BPF map pages it reads.
const RSS_BEYOND_HEAP: u64 = 16 << 20;
/// How long perf records, and how far back the agent's bundles reach: the same seconds.
const PERF_SECONDS: u64 = 10;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const CLIENTS: usize = 100;
const PORT: &str = "54329";

/// A PostgreSQL server of its own, in a fresh data directory, on a Unix socket only.
struct Server {
    dir: PathBuf,
    postmaster: Child,
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", program]);
    cmd
}

impl Server {
    fn start() -> Self {
        // Outside the workspace: the postgres user must reach it, and a home directory may not
        // be traversable.
        let dir = std::env::temp_dir().join(format!("autodump-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Command::new("chown").args(["postgres:postgres"]).arg(&dir).status().unwrap().success());
        let data = dir.join("data");
        let out = as_postgres(&format!("{PG_BIN}/initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .expect("initdb (cargo xtask setup installs postgresql)");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let postmaster = as_postgres(&format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-k"])
            .arg(&dir)
            .args(["-p", PORT, "-c", "listen_addresses=", "-c", "max_connections=150", "-c", "shared_buffers=64MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { dir, postmaster };
        let ready = Instant::now();
        while !server.pgbench(&["-i", "-s", "5", "-q"]).success() {
            assert!(ready.elapsed() < Duration::from_secs(60), "postgres did not come up");
            std::thread::sleep(Duration::from_millis(500));
        }
        server
    }

    fn pgbench_command(&self, args: &[&str]) -> Command {
        let mut cmd = as_postgres("/usr/bin/pgbench");
        cmd.arg("-h").arg(&self.dir).args(["-p", PORT, "-U", "postgres"]).args(args).arg("postgres");
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    fn pgbench(&self, args: &[&str]) -> std::process::ExitStatus {
        self.pgbench_command(args).status().unwrap()
    }

    /// The backends: processes titled as a local client's (`postgres: USER DB [local] ...`).
    fn backends(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"postgres: postgres postgres [local]"))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ =
            as_postgres(&format!("{PG_BIN}/pg_ctl")).arg("-D").arg(&data).args(["stop", "-m", "immediate"]).output();
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Share of `stacks` (root first) whose frames include `name`, by weight.
fn share<'a>(stacks: impl Iterator<Item = (&'a [String], u64)>, name: &str) -> f64 {
    let (mut with, mut all) = (0, 0);
    for (frames, weight) in stacks {
        all += weight;
        if frames.iter().any(|f| f == name) {
            with += weight;
        }
    }
    with as f64 / all.max(1) as f64
}

#[test]
fn postgres_backends_are_watched_within_the_budget_and_named_like_perf() {
    if !require_bpf("postgres_backends_are_watched_within_the_budget_and_named_like_perf") {
        return;
    }
    let server = Server::start();
    let mut load = server.pgbench_command(&["-c", &CLIENTS.to_string(), "-j", "2", "-S", "-T", "90"]).spawn().unwrap();
    let started = Instant::now();
    while server.backends().len() < CLIENTS {
        assert!(started.elapsed() < Duration::from_secs(30), "pgbench connects {CLIENTS} clients");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = scratch_dir("postgres");
    let exe = format!("{PG_BIN}/postgres");
    let lookback = format!("{PERF_SECONDS}s");
    let mut agent = RunningAgent::start(&[
        "--exe",
        &exe,
        "--out",
        out.to_str().unwrap(),
        "--max-bundles",
        "500",
        "--lookback",
        &lookback,
    ]);
    let backends = server.backends();
    while agent.logged("watching a new process").len() < backends.len() {
        assert!(started.elapsed() < Duration::from_secs(60), "every backend watched");
        std::thread::sleep(Duration::from_millis(200));
    }
    // perf on ten backends over ten seconds, the seconds the bundles will cover.
    std::thread::sleep(Duration::from_secs(5));
    let perf_pids: Vec<u32> = backends.iter().copied().take(10).collect();
    let mut perf = PerfRecording::start_on_each_cpu(&perf_pids, PERF_SECONDS, 99, &out);
    // The bundles reach back `--lookback`, to about when perf started: the same seconds.
    perf.wait();
    agent.signal(libc::SIGUSR1);
    let perf_stacks = perf.finish();
    let watched = agent.logged("watching a new process").len();
    let mut bundles: Vec<Bundle> = Vec::new();
    while bundles.len() < watched {
        match agent.next_bundle(Duration::from_secs(60)) {
            Some(b) => bundles.push(b),
            None => break,
        }
    }
    let hwm = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let _ = load.kill();
    let _ = load.wait();
    assert!(bundles.len() >= CLIENTS, "one manual bundle per watched process: {} of {watched}", bundles.len());
    let hwm_kib: u64 =
        hwm.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().split_whitespace().next().unwrap().parse().unwrap();

    let mine: Vec<&Bundle> =
        bundles.iter().filter(|b| perf_pids.contains(&(b.summary()["pid"].as_u64().unwrap() as u32))).collect();
    let ours: Vec<(Vec<String>, u64)> =
        mine.iter().flat_map(|b| b.folded("cpu.folded")).map(|f| (f.frames[1..].to_vec(), f.weight)).collect();
    let offcpu: Vec<(Vec<String>, u64)> = bundles
        .iter()
        .filter(|b| backends.contains(&(b.summary()["pid"].as_u64().unwrap() as u32)))
        .flat_map(|b| b.folded("offcpu.folded"))
        .map(|f| (f.frames[1..].to_vec(), f.weight))
        .collect();
    // Samples at the switch-in (`finish_task_switch`, where a timer that fired while interrupts
    // were off is taken) are left out of both: they weigh the functions that were switched in
    // (pq_getbyte, back from its read). perf samples each CPU as the agent does, so both take
    // about as many (10-12% here); a per-process perf took 7% against the agent's 11-19%.
    let switch_in = |frames: &[String]| frames.iter().any(|f| f.starts_with("finish_task_switch"));
    let ours_iter = || ours.iter().filter(|(f, _)| !switch_in(f)).map(|(f, w)| (f.as_slice(), *w));
    let perf_iter = || perf_stacks.iter().filter(|f| !switch_in(f)).map(|f| (f.as_slice(), 1));
    eprintln!(
        "samples at the switch-in: autodump {:.0}%, perf {:.0}%",
        100.0 * ours.iter().filter(|(f, _)| switch_in(f)).map(|(_, w)| *w).sum::<u64>() as f64
            / ours.iter().map(|(_, w)| *w).sum::<u64>().max(1) as f64,
        100.0 * perf_stacks.iter().filter(|f| switch_in(f)).count() as f64 / perf_stacks.len().max(1) as f64
    );
    eprintln!("{} bundles, {} of the perf'd backends; agent peak RSS {} MiB", bundles.len(), mine.len(), hwm_kib >> 10);
    eprintln!("| function (on-CPU, share of samples through it) | autodump | perf -a --call-graph dwarf |");
    let mut worst: f64 = 0.0;
    for name in
        ["PostgresMain", "PortalRun", "standard_ExecutorRun", "index_getnext_slot", "secure_write", "pq_getbyte"]
    {
        let (a, p) = (share(ours_iter(), name), share(perf_iter(), name));
        eprintln!("| {name} | {:.1}% | {:.1}% |", a * 100.0, p * 100.0);
        worst = worst.max((a - p).abs());
    }
    let waiting = share(offcpu.iter().map(|(f, w)| (f.as_slice(), *w)), "WaitEventSetWait");
    let reading = share(offcpu.iter().map(|(f, w)| (f.as_slice(), *w)), "secure_read");
    eprintln!(
        "off-CPU of the backends: {:.1}% in secure_read, {:.1}% in WaitEventSetWait",
        reading * 100.0,
        waiting * 100.0
    );
    let summary = bundles[0].summary();
    eprintln!("agent memory: {}", summary["agent_memory"]);

    assert!(share(ours_iter(), "PostgresMain") > 0.9, "on-CPU stacks whole to PostgresMain");
    assert!(share(ours_iter(), "standard_ExecutorRun") > 0.05, "the executor shows on the CPU");
    assert!(worst < 0.10, "every listed function within 10 points of perf");
    assert!(reading > 0.5 && waiting > 0.5, "backends wait for their client in secure_read -> WaitEventSetWait");
    // The budget is the agent's own heap (checked every interval: over_budget_checks); its RSS
    // also holds its code (about 15 MB of binary), thread stacks and the BPF maps it reads.
    let budget = summary["agent_memory"]["budget_bytes"].as_u64().unwrap();
    assert!(summary["agent_memory"]["heap_bytes"].as_u64().unwrap() <= budget, "the agent's heap within its budget");
    assert!(
        hwm_kib << 10 <= budget + RSS_BEYOND_HEAP,
        "the agent's peak RSS within its budget and {} MiB: {} MiB",
        RSS_BEYOND_HEAP >> 20,
        hwm_kib >> 10
    );
    assert_eq!(summary["agent_memory"]["over_budget_checks"], 0);
    drop(server);
}
