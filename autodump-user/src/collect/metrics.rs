//! Process metrics sampled each interval from /proc: CPU, RSS, threads and open files. The set
//! is open: the runtimes a process runs add their own (goroutines, Python threads).

use std::{
    fs,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::{capacity::CpuCapacity, cgroup, process};

/// A metric that rules can watch: one every process has, or a runtime's own.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// CPU usage in percent of the process's CPU capacity (see `capacity`).
    Cpu,
    /// Resident memory in bytes.
    Rss,
    Threads,
    /// Open file descriptors.
    Fds,
    /// Seconds threads spent blocked on locks (futex waits until woken) per second of wall
    /// time, from the wake-up probe.
    LockWait,
    /// A count a runtime keeps (Go's goroutines, CPython's threads).
    Runtime(&'static RuntimeMetric),
}

/// A runtime's metric (see `runtimes`): a count it reads from the process each interval.
#[derive(Debug)]
pub struct RuntimeMetric {
    /// Its name in rules, summaries and `/metrics` (`autodump_target_NAME`): `goroutines`.
    pub name: &'static str,
    /// Its unit on the chart.
    pub unit: &'static str,
    /// What `/metrics` says of it.
    pub help: &'static str,
    /// Its default rule: `min`, `diff` (percent) and `abs`, as counts.
    pub default: (f64, f64, f64),
}

impl Metric {
    /// The metrics every process has.
    pub const ALL: [Metric; 5] = [Metric::Cpu, Metric::Rss, Metric::Threads, Metric::Fds, Metric::LockWait];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Rss => "rss",
            Metric::Threads => "threads",
            Metric::Fds => "fds",
            Metric::LockWait => "lock_wait",
            Metric::Runtime(m) => m.name,
        }
    }

    /// The metric named `name`: one every process has, or one of `runtime`'s.
    pub fn from_name(name: &str, runtime: &[&'static RuntimeMetric]) -> Option<Self> {
        let runtime = runtime.iter().map(|&m| Metric::Runtime(m));
        Self::ALL.into_iter().chain(runtime).find(|m| m.name() == name)
    }

    /// Its place among the metrics: every process's first, in their order, then the runtimes'.
    fn key(self) -> (usize, &'static str) {
        (Self::ALL.iter().position(|m| m.name() == self.name()).unwrap_or(Self::ALL.len()), self.name())
    }
}

impl PartialEq for Metric {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Metric {}

impl std::hash::Hash for Metric {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl PartialOrd for Metric {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Metric {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// One reading of every metric, as written to summary.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MetricSample {
    /// Unix seconds.
    pub t: f64,
    /// Percent of one core since the previous sample (absent on the first).
    pub cpu_percent: Option<f64>,
    /// The same in percent of what the process may use (`cpu_capacity_cores`): what the `cpu`
    /// rule watches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_capacity_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_capacity_cores: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Resident anonymous, file and shared memory (/proc/PID/status), for the chart's split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_split: Option<super::memory::RssSplit>,
    pub threads: Option<u64>,
    pub fds: Option<u64>,
    /// Seconds of lock wait per second over the last interval (see `Metric::LockWait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_wait: Option<f64>,
    /// The runtimes' metrics the process has (`goroutines`, `python_threads`), by name.
    #[serde(flatten)]
    pub runtime: RuntimeValues,
}

/// Runtime metrics of one sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeValues(pub Vec<(&'static RuntimeMetric, u64)>);

impl PartialEq for RuntimeMetric {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Serialize for RuntimeValues {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (metric, value) in &self.0 {
            map.serialize_entry(metric.name, value)?;
        }
        map.end()
    }
}

impl MetricSample {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Cpu => self.cpu_capacity_percent,
            Metric::Rss => self.rss_bytes.map(|v| v as f64),
            Metric::Threads => self.threads.map(|v| v as f64),
            Metric::Fds => self.fds.map(|v| v as f64),
            Metric::LockWait => self.lock_wait,
            Metric::Runtime(m) => self.runtime.0.iter().find(|(r, _)| r.name == m.name).map(|(_, v)| *v as f64),
        }
    }

    /// The runtime metrics this sample has.
    pub fn runtime_metrics(&self) -> impl Iterator<Item = Metric> + '_ {
        self.runtime.0.iter().map(|(m, _)| Metric::Runtime(m))
    }
}

impl MetricSample {
    /// Fills in the CPU share of `capacity`.
    pub fn set_capacity(&mut self, capacity: &CpuCapacity) {
        self.cpu_capacity_cores = Some(capacity.cores);
        self.cpu_capacity_percent = self.cpu_percent.map(|p| p / capacity.cores);
    }
}

/// What percentages in rules are relative to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Effective memory limit (cgroup, else host), bytes.
    pub memory_bytes: u64,
    /// Soft RLIMIT_NOFILE of the process.
    pub open_files: Option<u64>,
    /// The CPU the process may use.
    pub cpu: CpuCapacity,
}

/// The limits of a cgroup are read again after this long; processes in one cgroup share them.
const CGROUP_LIMITS_TTL: Duration = Duration::from_secs(10);

/// A cgroup's memory limit and CPU quota, by the cgroup lines of /proc/PID/cgroup.
type CgroupLimits = (u64, Option<f64>);

thread_local! {
    static CGROUP_LIMITS: std::cell::RefCell<std::collections::HashMap<String, (std::time::Instant, CgroupLimits)>> =
        Default::default();
}

impl Limits {
    /// The process's limits. A cgroup's are read once per `CGROUP_LIMITS_TTL` for all the
    /// processes in it (a service of 300 processes reads its cgroup's files once, not 300 times).
    pub fn read(pid: u32) -> Self {
        let open_files =
            fs::read_to_string(format!("/proc/{pid}/limits")).ok().and_then(|t| parse_open_files_limit(&t));
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let (memory_bytes, quota) = CGROUP_LIMITS.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.retain(|_, (at, _)| at.elapsed() < CGROUP_LIMITS_TTL);
            cache
                .entry(cgroups.clone())
                .or_insert_with(|| {
                    let paths = cgroup::parse_proc_cgroup(&cgroups);
                    let limits = (cgroup::memory_limit_of(&paths), super::capacity::quota_cores_of(&paths));
                    (std::time::Instant::now(), limits)
                })
                .1
        });
        Self { memory_bytes, open_files, cpu: CpuCapacity::with_quota(pid, quota) }
    }
}

/// The soft "Max open files" limit from /proc/PID/limits.
pub fn parse_open_files_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Resident bytes from /proc/PID/statm (its second field counts pages).
/// How many files `pid` has open: the size Linux 6.2+ gives its /proc/PID/fd directory (one
/// stat, not a listing), else the listing's length.
fn open_files(pid: u32) -> Option<u64> {
    let dir = format!("/proc/{pid}/fd");
    match fs::metadata(&dir).ok()?.len() {
        0 => fs::read_dir(&dir).ok().map(|d| d.count() as u64),
        n => Some(n),
    }
}

pub fn parse_statm_rss(text: &str, page_size: u64) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse::<u64>().ok()?.checked_mul(page_size)
}

/// The shortest time a CPU rate is taken over: CPU time comes in clock ticks (10 ms), so a rate
/// over a few ticks is mostly rounding. A tick that comes right after a late one (the agent fell
/// behind) waits for the next.
const MIN_CPU_RATE_SPAN: Duration = Duration::from_millis(200);

/// Samples one process; remembers the previous CPU reading to compute a rate.
pub struct MetricSampler {
    pid: u32,
    previous_cpu: Option<(u64, SystemTime)>,
    ticks_per_second: f64,
    page_size: u64,
}

impl MetricSampler {
    pub fn new(pid: u32) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        Self { pid, previous_cpu: None, ticks_per_second: ticks.max(1) as f64, page_size: page.max(1) as u64 }
    }

    /// The process's CPU use since the previous reading, in percent of one core: CPU time and
    /// the time of its read, both from /proc/PID/stat reads (a sample may come long after its
    /// read, when the interval's work was slow, and the next one soon after its own).
    fn cpu_percent(&mut self, ticks: u64, read_at: SystemTime) -> Option<f64> {
        let Some((previous, previous_at)) = self.previous_cpu else {
            self.previous_cpu = Some((ticks, read_at));
            return None;
        };
        let Ok(span) = read_at.duration_since(previous_at) else {
            // The clock went back: start again from here.
            self.previous_cpu = Some((ticks, read_at));
            return None;
        };
        if span < MIN_CPU_RATE_SPAN {
            return None;
        }
        self.previous_cpu = Some((ticks, read_at));
        Some(ticks.saturating_sub(previous) as f64 / self.ticks_per_second / span.as_secs_f64() * 100.0)
    }

    /// A sample now; `stat` is this interval's read of /proc/PID/stat and when it was read, when
    /// there is one, and `split` its resident memory by kind (which adds up to its RSS).
    pub fn sample(
        &mut self,
        stat: Option<&(process::Stat, SystemTime)>,
        split: Option<super::memory::RssSplit>,
    ) -> Result<MetricSample, process::ProcessError> {
        let now = SystemTime::now();
        let (stat, read_at) = match stat {
            Some((stat, at)) => (stat.clone(), *at),
            None => (process::read_stat(self.pid)?, now),
        };
        let cpu_percent = self.cpu_percent(stat.cpu_ticks, read_at);
        let rss_bytes = match split {
            Some(s) => Some(s.anon_bytes + s.file_bytes + s.shmem_bytes),
            None => fs::read_to_string(format!("/proc/{}/statm", self.pid))
                .ok()
                .and_then(|t| parse_statm_rss(&t, self.page_size)),
        };
        let fds = open_files(self.pid);
        Ok(MetricSample {
            t: crate::collect::unix_now(now),
            cpu_percent,
            cpu_capacity_percent: None,
            cpu_capacity_cores: None,
            rss_bytes,
            rss_split: split,
            threads: Some(stat.threads),
            fds,
            lock_wait: None,
            runtime: RuntimeValues::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        static COUNT: RuntimeMetric =
            RuntimeMetric { name: "widgets", unit: "widgets", help: "", default: (1.0, 1.0, 1.0) };
        let runtime = [&COUNT];
        for m in Metric::ALL.into_iter().chain([Metric::Runtime(&COUNT)]) {
            assert_eq!(Metric::from_name(m.name(), &runtime), Some(m));
        }
        assert_eq!(Metric::from_name("disk", &runtime), None);
        assert_eq!(Metric::from_name("widgets", &[]), None, "only the runtimes given");
        assert!(Metric::Fds < Metric::Runtime(&COUNT));
    }

    #[test]
    fn counts_open_files_as_a_listing_would() {
        let listed = fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        // The listing opened one more (its own directory handle) while it ran.
        let counted = open_files(std::process::id()).unwrap();
        assert!(counted == listed || counted + 1 == listed, "{counted} against {listed}");
    }

    #[test]
    fn reads_resident_pages_without_overflow() {
        assert_eq!(parse_statm_rss("1000 250 10 1 0 100 0\n", 4096), Some(250 * 4096));
        assert_eq!(parse_statm_rss("1 18446744073709551615", 4096), None);
        assert_eq!(parse_statm_rss("1", 4096), None);
    }

    #[test]
    fn reads_open_files_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files_limit(text), Some(1024));
        assert_eq!(parse_open_files_limit("Max open files unlimited unlimited files\n"), None);
    }

    #[test]
    fn cpu_rate_is_over_the_reads_not_the_samples() {
        let mut sampler = MetricSampler::new(1);
        sampler.ticks_per_second = 100.0;
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(sampler.cpu_percent(0, at(0)), None, "no rate from one reading");
        // 10 ms of CPU a second, read a second apart, however late each sample came after its read.
        assert_eq!(sampler.cpu_percent(1, at(1000)), Some(1.0));
        // Read 50 ms after the last (a tick right after a late one): too short, kept for the next.
        assert_eq!(sampler.cpu_percent(2, at(1050)), None);
        assert_eq!(sampler.cpu_percent(3, at(2000)), Some(2.0));
        // The clock went back: no rate, and the next is taken from there.
        assert_eq!(sampler.cpu_percent(3, at(500)), None);
        assert_eq!(sampler.cpu_percent(13, at(1500)), Some(10.0));
    }

    #[test]
    fn samples_this_process() {
        let mut sampler = MetricSampler::new(std::process::id());
        let first = sampler.sample(None, None).unwrap();
        assert_eq!(first.cpu_percent, None, "no rate before a second reading");
        // A quarter second of this thread's CPU (and of wall time: a rate needs 200 ms),
        // however long it takes beside other tests. The process's rate holds at least this
        // thread's CPU over the wall time it took, to /proc's 10 ms ticks (tests in other
        // threads add theirs).
        let cpu = || {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `t` is a valid timespec to write.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
        };
        let (cpu0, wall0) = (cpu(), std::time::Instant::now());
        while cpu() - cpu0 < 0.25 || wall0.elapsed() < Duration::from_millis(250) {
            std::hint::black_box(cpu0);
        }
        let second = sampler.sample(None, None).unwrap();
        let (spent, wall) = (cpu() - cpu0, wall0.elapsed().as_secs_f64());
        let least = spent / wall * 100.0 - 3.0 * 0.01 / wall * 100.0;
        assert!(second.cpu_percent.unwrap() >= least, "{second:?}, expected at least {least:.1}%");
        assert!(second.rss_bytes.unwrap() > 1 << 20);
        assert!(second.threads.unwrap() >= 1);
        assert!(second.fds.unwrap() >= 3);
        assert_eq!(second.get(Metric::Threads), second.threads.map(|t| t as f64));
    }
}
