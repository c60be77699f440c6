//! The memory limit that applies to a process: its cgroup's (v2 `memory.max` or v1
//! `memory.limit_in_bytes`; hosts may mount both) capped by the host's memory.

use std::fs;

/// Where the cgroup hierarchies are mounted: pure v2, the v2 part of a hybrid host, v1 memory.
pub const V2_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
pub const V1_MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
/// v1 reports "no limit" as a huge page-aligned number near i64::MAX.
const V1_UNLIMITED_ABOVE: u64 = 1 << 60;

/// The cgroup paths of a process, from /proc/PID/cgroup.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    /// The unified (v2) hierarchy: the `0::/path` line.
    pub v2: Option<String>,
    /// The v1 memory controller: the `N:memory:/path` line (or one listing memory among others).
    pub v1_memory: Option<String>,
    /// The v1 cpu controller (`N:cpu,cpuacct:/path`), whose CFS quota caps the CPU time.
    pub v1_cpu: Option<String>,
}

pub fn parse_proc_cgroup(text: &str) -> CgroupPaths {
    let mut paths = CgroupPaths::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if id == "0" && controllers.is_empty() {
            paths.v2 = Some(path.to_string());
        } else {
            if controllers.split(',').any(|c| c == "memory") {
                paths.v1_memory = Some(path.to_string());
            }
            if controllers.split(',').any(|c| c == "cpu") {
                paths.v1_cpu = Some(path.to_string());
            }
        }
    }
    paths
}

/// A limit file's value; None for "max" or v1's "unlimited".
pub fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < V1_UNLIMITED_ABOVE).then_some(value)
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory a process may use before it is limited: the smallest of its cgroup limits and
/// the host's memory.
pub fn memory_limit(pid: u32) -> u64 {
    let paths = fs::read_to_string(format!("/proc/{pid}/cgroup")).map(|t| parse_proc_cgroup(&t)).unwrap_or_default();
    memory_limit_of(&paths)
}

/// The memory limit of the cgroups `paths` names, capped by the host's memory.
pub fn memory_limit_of(paths: &CgroupPaths) -> u64 {
    let host = fs::read_to_string("/proc/meminfo").ok().and_then(|m| parse_mem_total(&m)).unwrap_or(u64::MAX);
    let read = |file: String| fs::read_to_string(file).ok().and_then(|t| parse_limit(&t));
    let mut limits = vec![host];
    if let Some(path) = &paths.v2 {
        limits.extend(V2_ROOTS.iter().filter_map(|root| read(format!("{root}{path}/memory.max"))));
    }
    if let Some(path) = &paths.v1_memory {
        limits.extend(read(format!("{V1_MEMORY_ROOT}{path}/memory.limit_in_bytes")));
    }
    limits.into_iter().min().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_hierarchies() {
        let hybrid = "12:memory:/system.slice/app.service\n11:cpu,cpuacct:/x\n0::/system.slice/app.service\n";
        assert_eq!(
            parse_proc_cgroup(hybrid),
            CgroupPaths {
                v2: Some("/system.slice/app.service".into()),
                v1_memory: Some("/system.slice/app.service".into()),
                v1_cpu: Some("/x".into()),
            }
        );
        assert_eq!(
            parse_proc_cgroup("0::/user.slice\n"),
            CgroupPaths { v2: Some("/user.slice".into()), ..Default::default() }
        );
        assert_eq!(parse_proc_cgroup("garbage\n::\n"), CgroupPaths::default());
    }

    #[test]
    fn parses_limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_limit(""), None);
        assert_eq!(parse_mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24_576_000 * 1024));
        // Found by the cgroup_files fuzz target: a value whose bytes overflow u64.
        assert_eq!(parse_mem_total("MemTotal: 44494444444444444444 kB"), None);
        assert_eq!(parse_mem_total("MemTotal: 18014398509481984 kB"), None);
    }

    #[test]
    fn this_process_has_a_limit_no_larger_than_the_host() {
        let host = parse_mem_total(&fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
        let limit = memory_limit(std::process::id());
        assert!(limit > 0 && limit <= host);
    }
}
