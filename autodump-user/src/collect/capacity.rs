//! How much CPU a process may use, in cores: the smallest of its cgroup's CPU quota (v2
//! `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, on its own cgroup and every ancestor),
//! its affinity mask (which the kernel narrows to its cpuset), and the online CPUs. The `cpu`
//! rule is in percent of this, as holmes's is; a busy multi-threaded service is not an anomaly.

use std::fs;

use serde::Serialize;

use super::cgroup::{parse_proc_cgroup, V2_ROOTS};

/// Where the v1 cpu controller may be mounted (it usually shares a hierarchy with cpuacct).
const V1_CPU_ROOTS: [&str; 3] = ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct,cpu"];

/// What bounds a process's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacitySource {
    /// A cgroup's CFS quota (`cpu.max`, or v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`).
    CgroupQuota,
    /// The CPUs it may run on: its cpuset or `sched_setaffinity`.
    Affinity,
    OnlineCpus,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CpuCapacity {
    /// Cores' worth of CPU time per second (1.6 for a quota of 160 ms per 100 ms).
    pub cores: f64,
    pub source: CapacitySource,
}

impl CpuCapacity {
    /// What a process may use when nothing can be read: one core, so percentages stay as they
    /// were before capacities.
    pub const ONE_CORE: CpuCapacity = CpuCapacity { cores: 1.0, source: CapacitySource::OnlineCpus };

    pub fn read(pid: u32) -> CpuCapacity {
        let quota =
            fs::read_to_string(format!("/proc/{pid}/cgroup")).ok().and_then(|t| quota_cores_of(&parse_proc_cgroup(&t)));
        Self::with_quota(pid, quota)
    }

    /// The capacity of `pid` under a cgroup quota of `quota` cores (read with `quota_cores_of`).
    pub fn with_quota(pid: u32, quota: Option<f64>) -> CpuCapacity {
        let mut best = CpuCapacity { cores: online_cpus() as f64, source: CapacitySource::OnlineCpus };
        let mut consider = |cores: Option<f64>, source| {
            if let Some(cores) = cores.filter(|&c| c > 0.0 && c < best.cores) {
                best = CpuCapacity { cores, source };
            }
        };
        consider(affinity_cpus(pid).map(|n| n as f64), CapacitySource::Affinity);
        consider(quota, CapacitySource::CgroupQuota);
        best
    }
}

/// The smallest quota on the cgroup paths, v2 or v1, in cores.
pub fn quota_cores_of(paths: &super::cgroup::CgroupPaths) -> Option<f64> {
    let mut quotas = Vec::new();
    if let Some(path) = &paths.v2 {
        for root in V2_ROOTS {
            for dir in ancestors(root, path) {
                quotas.extend(fs::read_to_string(format!("{dir}/cpu.max")).ok().and_then(|t| parse_cpu_max(&t)));
            }
        }
    }
    if let Some(path) = &paths.v1_cpu {
        for root in V1_CPU_ROOTS {
            for dir in ancestors(root, path) {
                let read = |f: &str| fs::read_to_string(format!("{dir}/{f}")).ok();
                if let (Some(q), Some(p)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
                    quotas.extend(parse_cfs(&q, &p));
                }
            }
        }
    }
    quotas.into_iter().min_by(f64::total_cmp)
}

/// `root/a/b`, `root/a`, `root` for the cgroup path `/a/b`.
fn ancestors(root: &str, path: &str) -> Vec<String> {
    let mut dirs = vec![root.to_string()];
    let mut at = root.to_string();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != "..") {
        at = format!("{at}/{part}");
        dirs.push(at.clone());
    }
    dirs.reverse();
    dirs
}

/// v2 `cpu.max`: "QUOTA PERIOD" in µs, or "max PERIOD" for none.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0 && quota.is_finite()).then(|| quota / period)
}

/// v1: `cpu.cfs_quota_us` (-1 for none) over `cpu.cfs_period_us`.
pub fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// How many CPUs the process's main thread may run on.
fn affinity_cpus(pid: u32) -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the kernel fills at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(pid as libc::pid_t, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(libc::CPU_COUNT(&set) as usize).filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotas() {
        assert_eq!(parse_cpu_max("160000 100000\n"), Some(1.6));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cpu_max("0 100000"), None);
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some(0.5));
        assert_eq!(parse_cfs("50000", "0"), None);
    }

    #[test]
    fn walks_up_to_the_root() {
        assert_eq!(ancestors("/r", "/a/b"), vec!["/r/a/b", "/r/a", "/r"]);
        assert_eq!(ancestors("/r", "/"), vec!["/r"]);
        assert_eq!(ancestors("/r", "/../x"), vec!["/r/x", "/r"], "no way out of the root");
    }

    #[test]
    fn this_process_may_use_at_most_the_online_cpus() {
        let c = CpuCapacity::read(std::process::id());
        assert!(c.cores > 0.0 && c.cores <= online_cpus() as f64, "{c:?}");
    }
}
