//! Helpers for the integration tests: build and own fixture processes, run the real agent
//! against them, and read the bundle it writes.
//!
//! Tests that need BPF call [`require_bpf`]: without root they are reported as skipped, except
//! under `AUTODUMP_REQUIRE_BPF=1` (set by CI), where they fail instead.

pub mod bundle;
pub mod cgroup;
pub mod fixture;
pub mod gopprof;
pub mod java;
pub mod jfr;
pub mod jit;
pub mod perf;
pub mod python;
pub mod roots;
pub mod ruby;
pub mod servers;
pub mod wakeuptime;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub use bundle::{Bundle, Folded};
pub use fixture::{fixture_bin, own_copy, Fixture};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests live in the workspace").to_path_buf()
}

/// The agent binary: `AUTODUMP_AGENT` (set by `cargo xtask test`) or the release build.
pub fn agent() -> PathBuf {
    let path = std::env::var_os("AUTODUMP_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/autodump-agent"));
    assert!(path.exists(), "agent binary {} not found: run `cargo xtask test`", path.display());
    path
}

/// Waits until process `pid` has run `seconds` of CPU (all its threads) from now: a warm-up
/// measured in the work done, which a test beside this one cannot shorten (as it would a sleep).
pub fn warm_up(pid: u32, seconds: f64) {
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a comm") + 2..].split_whitespace().collect();
        (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / ticks_per_second()
    };
    let (start, since) = (cpu(), Instant::now());
    while cpu() - start < seconds {
        assert!(since.elapsed() < Duration::from_secs(120), "{pid} ran under {seconds} s of CPU in two minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The nextest test group of the tests that call [`favour_cpu`] (.config/nextest.toml).
pub const FAVOURED_GROUP: &str = "favoured";
/// The nice value of what a favoured test starts (see [`favour_cpu`]).
pub const FAVOURED_NICE: i32 = -10;

/// For a test whose checks depend on the CPU its processes get (CPU rules, a spinning thread's
/// share of a CPU): this test's thread, and so every process it starts from now on (fixtures,
/// the agent, a reference sampler), runs at nice -10, so a test beside it at nice 0 cannot take
/// that CPU: the scheduler gives a nice -10 task 90% of a CPU both want (weights 9548 and 1024),
/// and leaves the other the 10% it needs to make progress (at nice -20, 1%: a test beside it
/// got 1 sample in 4 s). Two such tests would take it from each other: under nextest they are
/// one group, one at a time; a test that calls this outside the group fails, saying so.
///
/// Only under nextest: elsewhere (`cargo test` one at a time, a kernel-matrix guest) no test
/// runs beside it, and its priority stays as it was.
pub fn favour_cpu() {
    if std::env::var_os("NEXTEST_RUN_ID").is_none() {
        return;
    }
    let group = std::env::var("NEXTEST_TEST_GROUP").unwrap_or_default();
    assert_eq!(group, FAVOURED_GROUP, "a test that favours its CPU belongs in .config/nextest.toml's favoured group");
    // SAFETY: setpriority has no memory preconditions; `0` is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, FAVOURED_NICE) };
    assert_eq!(rc, 0, "setpriority({FAVOURED_NICE}): {} (the tests run as root)", std::io::Error::last_os_error());
}

/// True if this test can load BPF. Otherwise prints why it is skipped, or panics when
/// `AUTODUMP_REQUIRE_BPF=1` says skipping is not allowed.
pub fn require_bpf(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    if root && btf {
        return true;
    }
    skip(test, if root { "the kernel has no BTF" } else { "BPF needs root" })
}

/// Skips `test` for `why` (returns false), or panics when `AUTODUMP_REQUIRE_BPF=1` says
/// skipping is not allowed (CI).
pub fn skip(test: &str, why: &str) -> bool {
    if std::env::var("AUTODUMP_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("{test}: {why}, and AUTODUMP_REQUIRE_BPF=1 forbids skipping");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// True inside a kernel-matrix guest (`AUTODUMP_IN_VM=1`), an emulated machine several times
/// slower than the host.
pub fn in_vm() -> bool {
    std::env::var("AUTODUMP_IN_VM").as_deref() == Ok("1")
}

/// False inside a kernel-matrix guest (`AUTODUMP_IN_VM=1`, set by `cargo xtask vmtest`), whose
/// initramfs holds the agent and fixtures but no Go toolchain or browser: the checks that only
/// read our files with such a tool are left to the host run, which does not depend on the
/// kernel. Says so on stderr.
pub fn host_tool_available(tool: &str) -> bool {
    let in_vm = std::env::var("AUTODUMP_IN_VM").as_deref() == Ok("1");
    if in_vm {
        eprintln!("not checked in the kernel-matrix guest (no {tool} there; the host run checks it)");
    }
    !in_vm
}

/// Records `pid` for `duration` (`4s`) once the agent records (within a minute: a JVM in an
/// emulated guest is slow to attach); the run, and the Unix seconds it recorded between.
pub fn record_between(pid: u32, duration: &str) -> (AgentRun, f64, f64) {
    let pid = pid.to_string();
    let mut agent = RunningAgent::start(&["--pid", &pid, "--duration", duration]);
    agent.wait_recording(Duration::from_secs(60));
    let from = unix_now();
    let run = agent.finish();
    (run, from, unix_now())
}

/// A fresh, empty directory for one test's bundles.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = workspace().join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// How an agent run ended.
#[derive(Debug)]
pub struct AgentRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for AgentRun {
    fn from(out: std::process::Output) -> Self {
        AgentRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl AgentRun {
    /// The bundle whose path the agent printed as its last line of stdout.
    pub fn bundle(&self) -> Bundle {
        assert_eq!(self.code, 0, "agent failed: {}", self.stderr);
        let last =
            self.stdout.lines().last().unwrap_or_else(|| panic!("agent printed nothing; stderr: {}", self.stderr));
        Bundle::open(Path::new(last))
    }
}

/// Runs the agent to completion.
pub fn run_agent(args: &[&str]) -> AgentRun {
    AgentRun::from(Command::new(agent()).args(args).output().expect("run the agent"))
}

/// An agent started in the background, for tests that act while it records.
pub struct RunningAgent {
    child: Child,
    stdout_lines: mpsc::Receiver<String>,
    stdout_seen: Vec<String>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl RunningAgent {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts the agent with `env` added to its environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(agent());
        command.args(args).envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Starts `command`, which runs the agent (through `setpriv`, say).
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("AUTODUMP_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let stderr_lines = line_channel(child.stderr.take().expect("piped"));
        let stdout_lines = line_channel(child.stdout.take().expect("piped"));
        Self { child, stdout_lines, stdout_seen: Vec::new(), stderr_lines, stderr_seen: Vec::new() }
    }

    /// Waits until the agent logs that its probes are attached.
    pub fn wait_recording(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let started = line.contains("recording");
                    self.stderr_seen.push(line);
                    if started {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("agent did not start recording within {timeout:?}; stderr: {:?}", self.stderr_seen);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    pub fn wait_log(&mut self, needles: &[&str], timeout: Duration) -> String {
        if let Some(line) = self.stderr_seen.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.stderr_lines.recv_timeout(left) else { break };
            self.stderr_seen.push(line.clone());
            if needles.iter().all(|n| line.contains(n)) {
                return line;
            }
        }
        panic!("the agent did not log {needles:?} within {timeout:?}; stderr:\n{}", self.stderr_seen.join("\n"));
    }

    /// Log lines so far containing `needle`.
    pub fn logged(&mut self, needle: &str) -> Vec<String> {
        self.stderr_seen.extend(self.stderr_lines.try_iter());
        self.stderr_seen.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Waits for the next bundle path the agent prints (watch mode prints one per bundle).
    pub fn next_bundle(&mut self, timeout: Duration) -> Option<Bundle> {
        let line = self.stdout_lines.recv_timeout(timeout).ok()?;
        self.stdout_seen.push(line.clone());
        Some(Bundle::open(Path::new(&line)))
    }

    /// The next bundle, or a panic naming `what` was expected, whether the agent is still
    /// running, and everything it logged, so a missing bundle can be told apart from a crash.
    pub fn expect_bundle(&mut self, timeout: Duration, what: &str) -> Bundle {
        if let Some(bundle) = self.next_bundle(timeout) {
            return bundle;
        }
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("the agent exited ({status})"),
            _ => "the agent is still running".to_string(),
        };
        self.stderr_seen.extend(self.stderr_lines.try_iter());
        panic!("no bundle within {timeout:?}: expected {what}; {state}; stderr:\n{}", self.stderr_seen.join("\n"));
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits up to `timeout` for the agent to exit on its own; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits for the agent to exit.
    pub fn finish(mut self) -> AgentRun {
        let status = self.child.wait().expect("wait for the agent");
        // The reader threads end at EOF, after the agent exits.
        let mut stdout = self.stdout_seen.join("\n");
        for line in self.stdout_lines.iter() {
            if !stdout.is_empty() {
                stdout.push('\n');
            }
            stdout.push_str(&line);
        }
        let mut stderr = self.stderr_seen.join("\n");
        for line in self.stderr_lines.iter() {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        AgentRun { code: status.code().unwrap_or(-1), stdout, stderr }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lines read from `reader` on a thread of their own, so a test can wait with a timeout.
pub fn line_channel(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// CPU time of each thread of `pid`, by thread name, in clock ticks (utime + stime).
pub fn thread_cpu_ticks(pid: u32) -> std::collections::HashMap<String, u64> {
    let mut ticks = std::collections::HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read tasks").flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let t: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        *ticks.entry(name).or_default() += t;
    }
    ticks
}

/// The machine's stolen time so far (the `steal` column of /proc/stat, in clock ticks): time a
/// hypervisor ran something else on our virtual CPUs.
pub fn steal_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let cpu = stat.lines().next().expect("/proc/stat's first line");
    cpu.split_whitespace().nth(8).expect("steal column").parse().expect("steal ticks")
}

/// The fraction of the machine's CPU time stolen between two `steal_ticks` readings `elapsed`
/// seconds apart.
pub fn steal_fraction(before: u64, after: u64, elapsed: f64) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    ((after - before) as f64 / ticks_per_second() / (cpus * elapsed)).min(0.9)
}

/// Clock ticks per second (USER_HZ).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Asserts `actual` is within `tolerance` (a fraction) of `expected`.
#[track_caller]
pub fn assert_close(what: &str, actual: f64, expected: f64, tolerance: f64) {
    let error = (actual - expected).abs() / expected.abs().max(f64::EPSILON);
    assert!(
        error <= tolerance,
        "{what}: got {actual:.3}, expected {expected:.3} ± {:.0}% (off by {:.1}%)",
        tolerance * 100.0,
        error * 100.0
    );
    eprintln!("{what}: got {actual:.3}, expected {expected:.3} (off by {:.1}%)", error * 100.0);
}

/// Now, in Unix seconds (as bundles write times).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// Whether the running kernel has `bpf_loop` (5.17+), which the CFI walk needs: older kernels
/// (the kernel matrix's 5.10) walk user stacks by frame pointer.
pub fn kernel_has_bpf_loop() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (5, 17)
}
