//! The command line: every flag documented, every tunable number with a named default.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::{
    probes::KernelStacks,
    units::{parse_duration, parse_size},
};

/// Every default a user may want to change, in one place.
pub mod defaults {
    /// On-CPU sampling frequency (Hz). 99, not 100, to avoid sampling in lockstep with timers.
    pub const FREQUENCY_HZ: u64 = 99;
    /// Highest accepted sampling frequency (Hz).
    pub const MAX_FREQUENCY_HZ: u64 = 10_000;
    /// Where bundles go. /var/tmp survives reboots, unlike /tmp on many hosts.
    pub const OUT_DIR: &str = "/var/tmp/autodump";
    /// How often the agent drains the kernel maps.
    pub const INTERVAL: &str = "1s";
    pub const CODE_CHECK: &str = "100ms";
    /// Stack-map slots per generation; more slots mean fewer hash collisions (counted when they happen).
    pub const STACK_SLOTS: u32 = 8192;
    /// Entries per generation of the sample-count and off-CPU totals maps.
    pub const COUNT_SLOTS: u32 = 16384;
    /// Threads of the target that can be blocked at once and still be accounted.
    pub const THREAD_SLOTS: u32 = 16384;
    /// Walks remembered: one per thread, probe (switch, wake-up) and place it entered the
    /// kernel from (about 590 bytes each).
    pub const WALK_MEMO_SLOTS: u32 = 4096;
    /// How far back before a trigger a bundle reaches.
    pub const LOOKBACK: &str = "30s";
    /// How long recording goes on after a trigger before the bundle is written.
    pub const AFTER: &str = "10s";
    /// No rule fires until the agent has watched this long.
    pub const WARMUP: &str = "10s";
    /// The rolling mean a rule compares against covers this much of the recent past.
    pub const BASELINE: &str = "30s";
    /// A metric that fired does not fire again for this long.
    pub const COOLDOWN: &str = "60s";
    /// At most this many bundles per rolling hour.
    pub const MAX_BUNDLES_PER_HOUR: u32 = 10;
    /// A rule that fired re-arms once its metric is under this percent of the threshold it crossed.
    pub const REARM_BELOW_PERCENT: u32 = 90;
    /// Bundles kept in --out; the oldest go first.
    pub const MAX_BUNDLES: usize = 50;
    /// Disk the bundles in --out may use.
    pub const MAX_DISK: &str = "1GiB";
    /// Uploads send at most this many bytes a second: about 1% of a core and a gentle share of
    /// the network (a 16 MB Go heap bundle takes 4 s).
    pub const UPLOAD_RATE: &str = "4MiB";
    /// How often Alertmanager's firing alerts are polled for `--alert-trigger`.
    pub const ALERT_POLL: &str = "15s";
    /// An alert posted for a bundle resolves on its own after this.
    pub const ALERT_RESOLVE_AFTER: &str = "30m";
    /// The `severity` label of alerts posted for bundles.
    pub const ALERT_SEVERITY: &str = "warning";
    /// Processes whose stacks are walked with CFI at once, when a target follows more than one
    /// (others by frame pointer): each takes 16 KiB of kernel memory.
    pub const UNWIND_PROCESSES: u32 = 512;
    /// The agent's own heap; over it, caches go first, then idle processes' flight recorders.
    pub const MEMORY_BUDGET: &str = "64MiB";
    /// How often /proc/PID/smaps is read, to tell which mappings grew over a bundle's window.
    pub const SMAPS_EVERY: &str = "10s";
    /// The page-fault probe runs every this many faults (rounded up to a prime; see BENCHMARKS.md
    /// for the cost): a leak touching 10 MiB a second gives about 12 stacks a second.
    pub const FAULT_PERIOD: u64 = 211;
    /// Record who woke each blocked thread (wakeups.*, locks.txt).
    pub const WAKEUPS: bool = true;
}

/// When the target ends, whether to write an `exit` bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExit {
    Always,
    /// Killed by a signal, or a non-zero exit code.
    Abnormal,
    Never,
}

const EXAMPLES: &str = "\
Examples:
  sudo autodump-agent --pid 1234
      Watch process 1234; when a rule fires, write a bundle covering the 30 s before and 10 s
      after, under /var/tmp/autodump. `kill -USR1` the agent for a bundle now.
  sudo autodump-agent --pid 1234 --rule cpu:abs=50%,for=3m --rule rss:abs=2GiB --lookback 60s
      The same, firing when CPU stays over half of what the process may use for 3 minutes, or
      when it holds 2 GiB.
  sudo autodump-agent --exe /usr/bin/myservice
      Watch every process of that executable, and each new one after a restart or crash.
  sudo autodump-agent --pid 1234 --duration 10s
      Record 10 seconds, write one bundle, print its path and exit.

Exit codes: 0 ok, 1 internal error, 2 invalid arguments, 3 no such process,
4 missing privileges, 5 kernel unsupported, 6 output directory unusable.";

/// Out-of-process eBPF profiler: records where a process spends time on and off the CPU and,
/// when it misbehaves, saves the scene (from before the anomaly until after it) as flamegraphs,
/// pprof profiles and folded stacks in a bundle directory.
#[derive(Clone, Debug, Parser)]
#[command(name = "autodump-agent", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Process id of the service to profile (all its threads, including ones started later).
    /// Watching ends when it ends.
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..), group = "target")]
    pub pid: Option<u32>,

    /// Watch mode: every process running this executable, now and later (restarts included).
    #[arg(long, value_name = "PATH", group = "target")]
    pub exe: Option<PathBuf>,

    /// Watch mode: every process with this name (as in /proc/PID/comm), now and later.
    #[arg(long, value_name = "NAME", group = "target")]
    pub comm: Option<String>,

    /// Watch mode: every process in this cgroup or below it, now and later: a cgroup path as
    /// /proc/PID/cgroup shows it (`/system.slice/app.service`) or a directory under /sys/fs/cgroup.
    #[arg(long, value_name = "PATH", group = "target")]
    pub cgroup: Option<String>,

    /// Watch mode: the processes of this systemd unit (its cgroup), now and after restarts.
    /// Needs systemd to be running.
    #[arg(long, value_name = "UNIT", group = "target")]
    pub unit: Option<String>,

    /// Watch mode: every process of the host (kernel threads and the agent left out), now and
    /// later, each judged by the rules on its own, within --memory-budget.
    #[arg(long, group = "target")]
    pub all: bool,

    /// Record mode: record for this long, then write one bundle and exit (e.g. 10s, 1m30s).
    /// Without it, watch the process until SIGINT/SIGTERM or until it ends.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Directory that receives bundles; created if missing.
    #[arg(short, long, default_value = defaults::OUT_DIR)]
    pub out: PathBuf,

    /// On-CPU sampling frequency in Hz, per CPU.
    #[arg(short = 'F', long, default_value_t = defaults::FREQUENCY_HZ,
          value_parser = clap::value_parser!(u64).range(1..=defaults::MAX_FREQUENCY_HZ))]
    pub frequency: u64,

    /// How often kernel maps are drained into the agent (e.g. 500ms, 2s).
    #[arg(long, default_value = defaults::INTERVAL, value_parser = parse_duration)]
    pub interval: Duration,

    /// How often the agent checks whether walks stopped in code a JIT compiled since it last
    /// read the JIT's code (one counter read), and then reads it at once rather than at the
    /// next interval.
    #[arg(long, default_value = defaults::CODE_CHECK, value_parser = parse_duration)]
    pub code_check: Duration,

    /// Stack-map slots per generation (kernel memory: about 1 KiB each, two generations), plus
    /// one overflow slot per eight for stacks whose slot holds another stack.
    #[arg(long, default_value_t = defaults::STACK_SLOTS, value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub stack_slots: u32,

    /// Entries per generation of the sample-count and off-CPU totals maps.
    #[arg(long, default_value_t = defaults::COUNT_SLOTS, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub count_slots: u32,

    /// How many of the target's threads can be blocked at once and still be accounted.
    #[arg(long, default_value_t = defaults::THREAD_SLOTS, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub thread_slots: u32,

    /// User-stack walks at switches and wake-ups are remembered, per thread and place it entered
    /// the kernel from (kernel memory: about 590 bytes each), and reused while the stack words
    /// they read are unchanged; the least recently used are forgotten first. 0: walk every time.
    #[arg(long, default_value_t = defaults::WALK_MEMO_SLOTS, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub walk_memo_slots: u32,

    /// Off-CPU kernel stacks: walked once per user stack per interval and reused
    /// (per-user-stack, about 3x cheaper per context switch), or walked at every switch.
    #[arg(long, value_enum, default_value_t = KernelStacks::PerUserStack)]
    pub offcpu_kernel_stacks: KernelStacks,

    /// How user stacks are walked: `cfi` uses each file's `.eh_frame` (code built without frame
    /// pointers, such as glibc and most distribution binaries), falling back to frame pointers
    /// where a file has none and on kernels before 5.17; `frame-pointers` only follows them.
    #[arg(long, value_enum, default_value_t = crate::probes::UnwindMode::Cfi)]
    pub unwind: crate::probes::UnwindMode,

    /// Cap on the kernel's unwind table, in rows of 16 bytes, shared by every mapped file; a
    /// file that no longer fits is walked by frame pointer, and the summary says so.
    #[arg(long, default_value_t = crate::unwind::DEFAULT_TABLE_ROWS, value_parser = clap::value_parser!(u32).range(1024..=67_108_864))]
    pub unwind_table_rows: u32,

    /// Record every Nth page fault (N rounded up to a prime, so that loops touching a power of
    /// two of pages cannot lock the samples onto one of their faults), with its stacks and the
    /// class of the memory it touched (faults.*); 0 turns the page-fault probe off. Each recorded
    /// fault stands for N.
    #[arg(long, default_value_t = defaults::FAULT_PERIOD)]
    pub fault_period: u64,

    /// Record who woke each blocked thread and what it waited on (wakeups.*, locks.txt): a
    /// probe on every wake-up of the host, answered at once for threads not watched.
    #[arg(long, default_value_t = defaults::WAKEUPS, action = clap::ArgAction::Set)]
    pub wakeups: bool,

    /// The runtimes' own flags (Go, Python, JIT perf maps).
    #[command(flatten)]
    pub runtimes: crate::runtimes::args::RuntimeArgs,

    /// How often the resident size of each mapping is read (/proc/PID/smaps), so that a bundle
    /// can say which mappings grew over its window.
    #[arg(long, default_value = defaults::SMAPS_EVERY, value_parser = parse_duration)]
    pub smaps_every: Duration,

    /// Benchmarks only: also attach an empty sched_switch program, whose kernel-accounted cost
    /// is the floor that the real probe's cost is measured against.
    #[arg(long, hide = true)]
    pub bench_empty_probe: bool,

    /// Tests only: do not attach this probe (`on_cpu_sample`, `sched_switch`, `process_exit`,
    /// `fault_sample`, `sched_waking`),
    /// as if the kernel had rejected it, to exercise the degraded paths (repeatable).
    #[arg(long, hide = true)]
    pub skip_probe: Vec<String>,

    /// Where separate debug files of stripped executables are looked for, by build-id
    /// (`DIR/.build-id/xx/rest.debug`) and by debug link (repeatable). Installing a
    /// distribution's debug-symbol package (`-dbgsym`) puts them in the default.
    #[arg(long, default_value = crate::files::debug_info::DEFAULT_DEBUG_DIR)]
    pub debug_dir: Vec<PathBuf>,

    /// The kernel's BTF, which describes its types (needed for the sched_switch probe).
    #[arg(long, default_value = crate::probes::btf::VMLINUX_BTF)]
    pub btf: PathBuf,

    /// Watch mode: a rule `METRIC:min=X,diff=Y%,abs=Z[,for=D]` (repeatable); with `for=3m` it
    /// fires only once it has matched for 3 minutes. Metrics: cpu (% of the CPU the process may
    /// use: its cgroup quota, cpuset or affinity, else the online CPUs),
    /// rss (bytes like 512MiB, or % of the memory limit), threads, fds (count, or % of the
    /// open-files limit). Keys left out keep the default; `METRIC:off` turns a metric off.
    #[arg(long = "rule", value_name = "RULE", value_parser = parse_rule_spec)]
    pub rules: Vec<RuleSpec>,

    /// Watch mode: a TOML file with a [rules] table (`cpu = "min=10%,diff=25%,abs=80%"`);
    /// --rule flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Watch mode: how far back before a trigger a bundle reaches.
    #[arg(long, default_value = defaults::LOOKBACK, value_parser = parse_duration)]
    pub lookback: Duration,

    /// Watch mode: how long to keep recording after a trigger before writing the bundle.
    #[arg(long, default_value = defaults::AFTER, value_parser = parse_duration)]
    pub after: Duration,

    /// Watch mode: no rule fires until the agent has watched this long.
    #[arg(long, default_value = defaults::WARMUP, value_parser = parse_duration)]
    pub warmup: Duration,

    /// Watch mode: the rolling mean rules compare against covers this much of the recent past.
    #[arg(long, default_value = defaults::BASELINE, value_parser = parse_duration)]
    pub baseline: Duration,

    /// Watch mode: a metric that fired does not fire again for this long.
    #[arg(long, default_value = defaults::COOLDOWN, value_parser = parse_duration)]
    pub cooldown: Duration,

    /// Watch mode: at most this many rule bundles per rolling hour.
    #[arg(long, default_value_t = defaults::MAX_BUNDLES_PER_HOUR, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_bundles_per_hour: u32,

    /// Watch mode: a rule that fired re-arms only once its metric is back under this percent of
    /// the threshold it crossed, so that a value staying high, or hovering at the threshold, is
    /// one incident and one bundle.
    #[arg(long, default_value_t = defaults::REARM_BELOW_PERCENT, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rearm_below: u32,

    /// Watch mode: write an `exit` bundle when the target ends.
    #[arg(long, value_enum, default_value_t = OnExit::Abnormal)]
    pub on_exit: OnExit,

    /// Keep at most this many bundles in --out (oldest removed first).
    #[arg(long, default_value_t = defaults::MAX_BUNDLES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_bundles: usize,

    /// Keep the bundles in --out under this size (e.g. 500MiB, 2GiB).
    #[arg(long, default_value = defaults::MAX_DISK, value_parser = parse_size)]
    pub max_disk: u64,

    /// The agent's own heap (e.g. 64MiB). Over it, the agent frees in this order: shared file
    /// caches (least recently used first, re-read when needed), processes' address caches, then
    /// the flight-recorder depth of idle processes. A bundle being written is never cut.
    #[arg(long, default_value = defaults::MEMORY_BUDGET, value_parser = parse_size)]
    pub memory_budget: u64,

    /// Watched processes given their interval work (their /proc reads, symbolizing their part of
    /// the drain, their metrics and rules) each interval; past this many, each has its turn
    /// every few intervals and its slices and metrics cover those intervals (the probes still
    /// record every event, and an exit bundle comes at the process's turn). 0: every process
    /// every interval.
    #[arg(long, default_value_t = crate::cadence::PROCESSES_PER_INTERVAL)]
    pub processes_per_interval: usize,

    /// Watched processes whose user stacks are walked with CFI at once (`--unwind cfi`); the
    /// rest by frame pointer, as the summary says. Each takes 16 KiB of kernel memory. With only
    /// `--pid` targets, their number.
    #[arg(long, default_value_t = defaults::UNWIND_PROCESSES, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub unwind_processes: u32,

    /// Upload every bundle to this S3-compatible bucket and prefix (s3://BUCKET/PREFIX), in the
    /// background, from a queue on disk. Endpoint, region and keys come as for AWS tools
    /// (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ..., or the shared
    /// credentials file); SIGHUP reads them again.
    #[arg(long, value_name = "S3_URL", value_parser = crate::ship::s3::S3Url::parse)]
    pub upload: Option<crate::ship::s3::S3Url>,

    /// Uploads send at most this many bytes a second (4MiB, 512KiB, ...).
    #[arg(long, default_value = defaults::UPLOAD_RATE, value_parser = parse_size)]
    pub upload_rate: u64,

    /// Prometheus Alertmanager (http://host:9093): each bundle posts an alert to it, and it is
    /// polled for `--alert-trigger`.
    #[arg(long, value_name = "URL")]
    pub alertmanager: Option<String>,

    /// The `severity` label of the alerts posted for bundles.
    #[arg(long, default_value = defaults::ALERT_SEVERITY)]
    pub alert_severity: String,

    /// An alert posted for a bundle ends (resolves) on its own after this.
    #[arg(long, default_value = defaults::ALERT_RESOLVE_AFTER, value_parser = parse_duration)]
    pub alert_resolve_after: Duration,

    /// An HTTP address for a bundle, put in its alert: `{bucket}`, `{key}` (the bundle's key
    /// prefix) and `{path}` (on this host) are filled in.
    #[arg(long, value_name = "TEMPLATE")]
    pub bundle_url: Option<String>,

    /// Watch mode: an Alertmanager alert matching these matchers (`alertname="HighLatency",
    /// service="api"`) writes a bundle of the command line's target, reaching back before it;
    /// repeatable. Needs --alertmanager.
    #[arg(long, value_name = "MATCHERS", value_parser = crate::ship::matchers::Matchers::parse)]
    pub alert_trigger: Vec<crate::ship::matchers::Matchers>,

    /// How often Alertmanager is polled for --alert-trigger.
    #[arg(long, default_value = defaults::ALERT_POLL, value_parser = parse_duration)]
    pub alert_poll: Duration,

    /// Serve Prometheus metrics on this address (127.0.0.1:9101); off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// Log filter, as in RUST_LOG (e.g. info, debug, autodump=trace).
    #[arg(long, default_value = "info", env = "AUTODUMP_LOG")]
    pub log: String,
}

impl Cli {
    /// What to watch, from the target flags; None when none was given.
    pub fn selector(&self) -> Option<crate::select::Selector> {
        use crate::select::Selector;
        if let Some(pid) = self.pid {
            return Some(Selector::Pid(pid));
        }
        let exe = self.exe.clone().map(Selector::Exe);
        let comm = || self.comm.clone().map(Selector::Comm);
        let cgroup = || self.cgroup.clone().map(Selector::Cgroup);
        let all = || self.all.then_some(Selector::All);
        exe.or_else(comm).or_else(cgroup).or_else(|| self.unit.clone().map(Selector::Unit)).or_else(all)
    }
}

/// `--rule` as given: the metric, and its rule or None for `METRIC:off`.
pub type RuleSpec = (crate::collect::metrics::Metric, Option<crate::trigger::rule::Rule>);

fn parse_rule_spec(text: &str) -> Result<RuleSpec, String> {
    let runtime: Vec<_> = crate::runtimes::metrics().collect();
    crate::trigger::rule::Rule::parse_spec(text, &runtime).map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
