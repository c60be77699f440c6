//! The processes a benchmark run is made of: a fixture that starts its timed work on SIGUSR1,
//! and the tool watching it (autodump, perf, offcputime), each started and stopped the same way.

use std::{
    io::{BufRead, BufReader, Lines},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// How long a tool may take to attach before the run is abandoned.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// After a tool has attached, time for it to finish starting up (for autodump, its first drain
/// interval), so that timed work measures the steady state.
const ATTACH_SETTLE: Duration = Duration::from_millis(1500);

/// Sends `signal` (a name such as USR1) to `pid`.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    crate::util::run(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).stderr(Stdio::null()))
}

/// A process's CPU seconds (utime + stime) so far; /proc counts in USER_HZ, 100 on Linux.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat[stat.rfind(')').context("bad stat")? + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// A `Vm*` line of /proc/PID/status, in MiB.
pub fn status_mib(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key}"))?;
    let kib: f64 = line.split_whitespace().nth(1).context("bad status")?.parse()?;
    Ok(kib / 1024.0)
}

/// Builds fixture `name` (tests/fixtures/NAME.c, with frame pointers as the tests build theirs,
/// or NAME.go with Debian's Go) into `dir`. Returns the binary.
pub fn build_fixture(name: &str, dir: &Path) -> Result<PathBuf> {
    crate::util::step(&format!("building fixture {name}"));
    let bin = dir.join(name);
    let source = crate::util::root().join("tests/fixtures").join(name);
    if source.with_extension("go").exists() {
        crate::util::run(
            Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(source.with_extension("go"))
                .env("GO111MODULE", "off")
                .env("GOTOOLCHAIN", "local"),
        )?;
        return Ok(bin);
    }
    crate::util::run(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&bin)
            .arg(source.with_extension("c"))
            .arg("-ldl"),
    )?;
    Ok(bin)
}

/// A fixture that prints "ready", waits for SIGUSR1, does fixed work and prints its seconds.
pub struct Target {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Target {
    pub fn start(program: &Path, args: &[String]) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        match lines.next() {
            Some(Ok(line)) if line == "ready" => Ok(Self { child, lines }),
            other => bail!("{} did not get ready: {other:?}", program.display()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the timed work and waits for it: its wall seconds.
    pub fn run(mut self) -> Result<f64> {
        signal(self.pid(), "USR1")?;
        let line = self.lines.next().context("the target printed no time")??;
        self.child.wait()?;
        line.trim().parse().with_context(|| format!("bad time from the target: {line:?}"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What watches the target during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToolKind {
    Alone,
    Autodump,
    /// The agent walking user stacks by frame pointer only (`--unwind frame-pointers`).
    AutodumpFramePointers,
    /// The agent without its page-fault probe (`--fault-period 0`).
    AutodumpNoFaults,
    Perf,
    /// `perf record` of page faults with call graphs, at the agent's default period.
    PerfFaults,
    Offcputime,
    /// py-spy sampling a Python program without stopping it, at the agent's frequency.
    PySpy,
    /// rbspy sampling a Ruby program without stopping it, at the agent's frequency.
    Rbspy,
}

impl ToolKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Alone => "alone",
            Self::Autodump => "autodump (defaults: CFI unwinding)",
            Self::AutodumpFramePointers => "autodump --unwind frame-pointers",
            Self::AutodumpNoFaults => "autodump --fault-period 0",
            Self::Perf => "perf record -F 99 -g",
            Self::PerfFaults => "perf record -e page-faults -c 211 -g",
            Self::Offcputime => "offcputime",
            Self::PySpy => "py-spy record --nonblocking -r 99",
            Self::Rbspy => "rbspy record --nonblocking -r 99",
        }
    }

    /// The tool's command line for `pid`, writing into `scratch`.
    pub fn command(self, agent: &Path, pid: u32, scratch: &Path) -> Option<Vec<String>> {
        let pid = pid.to_string();
        let s = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
        match self {
            Self::Alone => None,
            Self::Autodump | Self::AutodumpFramePointers | Self::AutodumpNoFaults => {
                let extra: &[&str] = match self {
                    Self::AutodumpFramePointers => &["--unwind", "frame-pointers"],
                    Self::AutodumpNoFaults => &["--fault-period", "0"],
                    _ => &[],
                };
                let base = [&*agent.to_string_lossy(), "--pid", &pid, "--out", &scratch.to_string_lossy()];
                s(&[&base[..], extra].concat())
            }
            Self::Perf => {
                let data = scratch.join("perf.data");
                s(&["perf", "record", "-q", "-F", "99", "-g", "-p", &pid, "-o", &data.to_string_lossy()])
            }
            Self::PerfFaults => {
                let data = scratch.join("perf.data");
                let data = data.to_string_lossy();
                s(&["perf", "record", "-q", "-e", "page-faults", "-c", "211", "-g", "-p", &pid, "-o", &data])
            }
            Self::Offcputime => s(&["offcputime", "-p", &pid]),
            Self::PySpy => {
                let out = scratch.join("py-spy.raw");
                let out = out.to_string_lossy();
                s(&["py-spy", "record", "--pid", &pid, "--nonblocking", "-r", "99", "-f", "raw", "-o", &out])
            }
            Self::Rbspy => {
                let out = scratch.join("rbspy.collapsed");
                let out = out.to_string_lossy();
                s(&[
                    "rbspy",
                    "record",
                    "--pid",
                    &pid,
                    "--nonblocking",
                    "-r",
                    "99",
                    "--format",
                    "collapsed",
                    "--file",
                    &out,
                ])
            }
        }
    }
}

/// A running tool, attached to its target.
pub struct Tool {
    child: Child,
    pub stdout: Receiver<String>,
    pub stderr: Receiver<String>,
}

/// Lines of `stream`, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tool {
    /// Watches the tool for `window`: its CPU over the second half, in percent of one core, and
    /// its peak (VmHWM) and steady (VmRSS at the end) memory in MiB.
    pub fn footprint(&self, window: std::time::Duration) -> Result<(f64, f64, f64)> {
        std::thread::sleep(window / 2);
        let (cpu_start, at) = (cpu_seconds(self.pid())?, std::time::Instant::now());
        std::thread::sleep(window / 2);
        let cpu = (cpu_seconds(self.pid())? - cpu_start) / at.elapsed().as_secs_f64() * 100.0;
        Ok((cpu, status_mib(self.pid(), "VmHWM:")?, status_mib(self.pid(), "VmRSS:")?))
    }

    /// Starts `argv` and waits until it has attached: autodump says "recording"; perf and
    /// offcputime hold a perf event or BPF link open.
    pub fn start(kind: ToolKind, argv: &[String], extra_env: &[(&str, &str)]) -> Result<Self> {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", argv[0]))?;
        let stdout = lines_of(child.stdout.take().expect("piped"));
        let stderr = lines_of(child.stderr.take().expect("piped"));
        let tool = Self { child, stdout, stderr };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            let attached = match kind {
                ToolKind::Autodump | ToolKind::AutodumpFramePointers | ToolKind::AutodumpNoFaults => {
                    tool.stderr.try_iter().any(|l| l.contains("recording"))
                }
                // "py-spy> Sampling process 99 times a second."
                ToolKind::PySpy => tool.stdout.try_iter().chain(tool.stderr.try_iter()).any(|l| l.contains("Sampling")),
                // "rbspy is recording traces. Press Ctrl+C to stop."
                ToolKind::Rbspy => {
                    tool.stdout.try_iter().chain(tool.stderr.try_iter()).any(|l| l.contains("recording traces"))
                }
                _ => holds_kernel_object(tool.child.id()),
            };
            if attached {
                std::thread::sleep(ATTACH_SETTLE);
                return Ok(tool);
            }
            if Instant::now() > deadline {
                bail!("{} did not attach within {ATTACH_TIMEOUT:?}", argv[0]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, as a user would stop it, then waits.
    pub fn stop(&mut self) -> Result<()> {
        signal(self.child.id(), "INT")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `pid` holds a perf event or a BPF link: the tool has attached.
fn holds_kernel_object(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|link: PathBuf| {
        let link = link.to_string_lossy();
        link.contains("[perf_event]") || link.contains("bpf_link")
    })
}
