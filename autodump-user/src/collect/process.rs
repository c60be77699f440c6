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
}

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
        match read_stat(self.pid) {
            Ok(stat) => stat.start_ticks == self.start_ticks && stat.state != 'Z' && stat.state != 'X',
            Err(_) => false,
        }
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
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat(")("), None);
    }

    #[test]
    fn opens_self_and_missing() {
        let me = Target::open(std::process::id()).unwrap();
        assert!(me.is_alive());
        assert!(me.thread_names().contains_key(&std::process::id()));
        assert!(matches!(Target::open(u32::MAX - 1), Err(ProcessError::NotFound(_))));
    }
}
