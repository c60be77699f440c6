//! The command line: every flag documented, every tunable number with a named default.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

/// How often the off-CPU probe walks the kernel stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelStacks {
    /// Once per (user stack, runnable or blocked) per drain interval; later switches there reuse it.
    PerUserStack,
    /// At every switch-out: exact, at about three times the probe's cost.
    EverySwitch,
}

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
    /// Stack-map slots per generation; more slots mean fewer hash collisions (counted when they happen).
    pub const STACK_SLOTS: u32 = 8192;
    /// Entries per generation of the sample-count and off-CPU totals maps.
    pub const COUNT_SLOTS: u32 = 16384;
    /// Threads of the target that can be blocked at once and still be accounted.
    pub const THREAD_SLOTS: u32 = 16384;
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
    /// How often a Go program's heap profile is read, so that a bundle can compare the heap with
    /// what it was before its window.
    pub const HEAP_EVERY: &str = "30s";
    /// How often /proc/PID/smaps is read, to tell which mappings grew over a bundle's window.
    pub const SMAPS_EVERY: &str = "10s";
    /// The page-fault probe runs every this many faults (rounded up to a prime; see BENCHMARKS.md
    /// for the cost): a leak touching 10 MiB a second gives about 12 stacks a second.
    pub const FAULT_PERIOD: u64 = 211;
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

    /// Off-CPU kernel stacks: walked once per user stack per interval and reused
    /// (per-user-stack, about 3x cheaper per context switch), or walked at every switch.
    #[arg(long, value_enum, default_value_t = KernelStacks::PerUserStack)]
    pub offcpu_kernel_stacks: KernelStacks,

    /// How user stacks are walked: `cfi` uses each file's `.eh_frame` (code built without frame
    /// pointers, such as glibc and most distribution binaries), falling back to frame pointers
    /// where a file has none and on kernels before 5.17; `frame-pointers` only follows them.
    #[arg(long, value_enum, default_value_t = crate::unwind::UnwindMode::Cfi)]
    pub unwind: crate::unwind::UnwindMode,

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

    /// Go programs: how often the runtime's heap profile is read (cheap: one read per bucket),
    /// so that a bundle holds the heap from before its window (`heap-base.pb.gz`) too.
    #[arg(long, default_value = defaults::HEAP_EVERY, value_parser = parse_duration)]
    pub heap_every: Duration,

    /// How often the resident size of each mapping is read (/proc/PID/smaps), so that a bundle
    /// can say which mappings grew over its window.
    #[arg(long, default_value = defaults::SMAPS_EVERY, value_parser = parse_duration)]
    pub smaps_every: Duration,

    /// Benchmarks only: also attach an empty sched_switch program, whose kernel-accounted cost
    /// is the floor that the real probe's cost is measured against.
    #[arg(long, hide = true)]
    pub bench_empty_probe: bool,

    /// Tests only: do not attach this probe (`on_cpu_sample`, `sched_switch`, `process_exit`,
    /// `fault_sample`),
    /// as if the kernel had rejected it, to exercise the degraded paths (repeatable).
    #[arg(long, hide = true)]
    pub skip_probe: Vec<String>,

    /// Where separate debug files of stripped executables are looked for, by build-id
    /// (`DIR/.build-id/xx/rest.debug`) and by debug link (repeatable). Installing a
    /// distribution's debug-symbol package (`-dbgsym`) puts them in the default.
    #[arg(long, default_value = crate::symbolize::DEFAULT_DEBUG_DIR)]
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
        exe.or_else(comm).or_else(cgroup).or_else(|| self.unit.clone().map(Selector::Unit))
    }
}

/// `--rule` as given: the metric, and its rule or None for `METRIC:off`.
pub type RuleSpec = (crate::collect::metrics::Metric, Option<crate::trigger::rule::Rule>);

fn parse_rule_spec(text: &str) -> Result<RuleSpec, String> {
    crate::trigger::rule::Rule::parse_spec(text).map_err(|e| e.to_string())
}

/// A byte size: a number with an optional KiB/MiB/GiB/TiB suffix.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("'{text}' is not a size; write it like 500MiB or 2GiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        "TiB" | "T" => 40,
        other => return Err(format!("unknown size unit '{other}' in '{text}'; use KiB, MiB, GiB or TiB")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("'{text}' must be above zero and fit in 64 bits"))
}

/// A positive duration in humantime syntax ("10s", "250ms", "1m30s"); a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("'{text}' is not a duration ({e}); write it like 10s, 500ms or 2m"))?,
    };
    if parsed.is_zero() {
        return Err(format!("'{text}' is zero; give a positive duration like 10s"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("autodump-agent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_apply() {
        let cli = parse(&["--pid", "42"]).unwrap();
        assert_eq!(cli.pid, Some(42));
        assert_eq!(cli.frequency, defaults::FREQUENCY_HZ);
        assert_eq!(cli.duration, None);
        assert_eq!(cli.out, PathBuf::from(defaults::OUT_DIR));
        assert_eq!(cli.interval, Duration::from_secs(1));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("abc").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn watch_flags_parse() {
        let cli = parse(&["--pid", "1", "--rule", "cpu:abs=50%", "--rule", "fds:off", "--on-exit", "always"]).unwrap();
        assert_eq!(cli.rules.len(), 2);
        assert_eq!(cli.rules[1], (crate::collect::metrics::Metric::Fds, None));
        assert_eq!(cli.on_exit, OnExit::Always);
        assert_eq!(cli.lookback, Duration::from_secs(30));
        let err = parse(&["--pid", "1", "--rule", "disk:min=1"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("unknown metric"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--pid", "1", "--duration", "abc"][..],
            &["--pid", "1", "--frequency", "0"],
            &["--pid", "1", "--frequency", "100000"],
            &["--pid", "0"],
            &["--pid", "-5"],
            &["--pid", "x"],
            &["--pid", "1", "--exe", "/bin/x"],
            &["--comm", "a", "--unit", "b"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?} should be a usage error");
        }
    }
}
