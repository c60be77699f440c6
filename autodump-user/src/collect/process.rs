//! The target process as /proc shows it: identity, thread names, and whether it is still the
//! same process (pid plus start time, so a reused pid is never mistaken for the target).

use std::{collections::HashMap, fs, io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no process with pid {0} (check the pid; inside a container, use the host's pid)")]
    NotFound(u32),
    #[error("cannot read /proc/{pid}/{file}: {source}")]
    Read { pid: u32, file: &'static str, source: io::Error },
    #[error("/proc/{pid}/stat is malformed")]
    MalformedStat { pid: u32 },
}

/// The fields of /proc/PID/stat that the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time since boot, in clock ticks: with the pid, identifies the process.
    pub start_ticks: u64,
    pub threads: u64,
    /// Virtual memory size in bytes: changes when the process maps or unmaps (a library loaded).
    pub vsize: u64,
    /// Resident pages.
    pub rss_pages: u64,
    /// The kernel's `PF_*` flags (`PF_KTHREAD` marks a kernel thread).
    pub flags: u64,
}

/// `PF_KTHREAD` in a task's flags: a kernel thread, with no user space to profile.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses /proc/PID/stat. The comm field may hold spaces and parentheses, so the fields after
/// it are found from the *last* closing parenthesis.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
        flags: field(9)?,
    })
}

/// A process being profiled.
#[derive(Clone, Debug)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub exe: PathBuf,
    pub start_ticks: u64,
}

impl Target {
    pub fn open(pid: u32) -> Result<Self, ProcessError> {
        let stat = read_stat(pid)?;
        let exe =
            fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|_| PathBuf::from(format!("[{}]", stat.comm)));
        Ok(Self { pid, comm: stat.comm, exe, start_ticks: stat.start_ticks })
    }

    /// True while the process with this pid is the one we opened and has not exited.
    pub fn is_alive(&self) -> bool {
        self.stat_if_alive().is_some()
    }

    /// Its stat now, while the process with this pid is the one we opened and has not exited.
    pub fn stat_if_alive(&self) -> Option<Stat> {
        read_stat(self.pid).ok().filter(|s| s.start_ticks == self.start_ticks && s.state != 'Z' && s.state != 'X')
    }

    /// Names of the threads alive now, by tid.
    pub fn thread_names(&self) -> HashMap<u32, String> {
        let mut names = HashMap::new();
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return names;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(comm) = fs::read_to_string(task.path().join("comm")) {
                names.insert(tid, comm.trim_end_matches('\n').to_string());
            }
        }
        names
    }
}

/// One lifetime of a process: its pid and start time, and the systemd unit's invocation id
/// when it runs as a unit (systemd puts `INVOCATION_ID` in a service's environment).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Instance {
    pub pid: u32,
    /// Unix seconds.
    pub start_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// At most this much of /proc/PID/environ is read.
const ENVIRON_MAX_BYTES: u64 = 256 * 1024;

impl Instance {
    pub fn of(target: &Target) -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let boot = fs::read_to_string("/proc/stat").ok().and_then(|t| parse_boot_time(&t)).unwrap_or(0.0);
        Self {
            pid: target.pid,
            start_time: boot + target.start_ticks as f64 / hz,
            invocation_id: invocation_id(target.pid),
        }
    }
}

/// `btime` of /proc/stat: when the machine booted, Unix seconds.
pub fn parse_boot_time(stat: &str) -> Option<f64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

fn invocation_id(pid: u32) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(format!("/proc/{pid}/environ")).ok()?.take(ENVIRON_MAX_BYTES).read_to_end(&mut bytes).ok()?;
    parse_invocation_id(&bytes)
}

/// `INVOCATION_ID` from an environment block (NUL-separated), if it is 32 hex digits.
pub fn parse_invocation_id(environ: &[u8]) -> Option<String> {
    let value = environ.split(|&b| b == 0).find_map(|v| v.strip_prefix(b"INVOCATION_ID="))?;
    let text = std::str::from_utf8(value).ok()?;
    (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| text.to_string())
}

pub fn read_stat(pid: u32) -> Result<Stat, ProcessError> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ProcessError::NotFound(pid),
        _ => ProcessError::Read { pid, file: "stat", source },
    })?;
    parse_stat(&text).ok_or(ProcessError::MalformedStat { pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let text = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 123456 1000 100 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.comm, "my (odd) name");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.cpu_ticks, 300);
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_ticks, 123456);
        assert_eq!((stat.vsize, stat.rss_pages, stat.flags), (1000, 100, 4194560));
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat(")("), None);
    }

    #[test]
    fn reads_instances() {
        assert_eq!(parse_boot_time("cpu 1 2\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000.0));
        assert_eq!(parse_boot_time("cpu 1 2\n"), None);
        let id = "0123456789abcdef0123456789abcdef";
        let environ = format!("PATH=/bin\0INVOCATION_ID={id}\0HOME=/");
        assert_eq!(parse_invocation_id(environ.as_bytes()).as_deref(), Some(id));
        assert_eq!(parse_invocation_id(b"INVOCATION_ID=zz\0"), None);
        let me = Instance::of(&Target::open(std::process::id()).unwrap());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(me.start_time > now - 3600.0 && me.start_time <= now + 1.0, "{me:?}");
    }

    #[test]
    fn opens_self_and_missing() {
        let me = Target::open(std::process::id()).unwrap();
        assert!(me.is_alive());
        assert!(me.thread_names().contains_key(&std::process::id()));
        assert!(matches!(Target::open(u32::MAX - 1), Err(ProcessError::NotFound(_))));
    }
}
