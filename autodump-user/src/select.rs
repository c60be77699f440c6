//! What to watch: one pid, or every process that runs an executable, has a name, or lives in a
//! cgroup or a systemd unit. Every selector but `--pid` outlives the processes it matches: the
//! agent scans for new matches each interval and follows a service across its restarts.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    collect::cgroup::V2_ROOTS,
    error::{AgentError, ExitCode},
};

/// Where cgroup paths given without a mount point are looked for: v2 roots, then the v1
/// hierarchies that hold every process on hybrid hosts.
const CGROUP_ROOTS: [&str; 6] = [
    V2_ROOTS[0],
    V2_ROOTS[1],
    "/sys/fs/cgroup/systemd",
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/memory",
];
/// Linux keeps the first 15 bytes of a process's name.
const COMM_LEN: usize = 15;
/// Directories below a cgroup visited at most, so that a huge tree cannot stall a tick.
const MAX_CGROUP_DIRS: usize = 4096;
/// A scan by executable or name checks a process at every scan while it is this young (a fork
/// execs what is looked for just after it starts), then at every full scan only.
const YOUNG: Duration = Duration::from_secs(5);
/// How often a scan by executable or name checks every process again (one that exec'd another
/// program long after it started is found then).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(10);

/// What scans by executable or name learned of each process: on a host of 500 processes, reading
/// each one's link at every interval was a tenth of the agent's time.
#[derive(Debug, Default)]
pub struct ScanMemo {
    /// By pid: whether it matched, and when it was first seen.
    seen: HashMap<u32, (bool, Instant)>,
    last_full: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// One process, until it ends.
    Pid(u32),
    /// Processes whose executable is this file.
    Exe(PathBuf),
    /// Processes with this name (`comm`).
    Comm(String),
    /// Processes in this cgroup or below it: a path in the cgroup file system, or a cgroup path
    /// as /proc/PID/cgroup shows it (`/system.slice/app.service`).
    Cgroup(String),
    /// A systemd unit: its cgroup, asked of systemd.
    Unit(String),
    /// Every process of the host.
    All,
}

impl Selector {
    /// `kind:value`, as logs and summaries name the target.
    pub fn describe(&self) -> String {
        match self {
            Selector::Pid(pid) => format!("pid:{pid}"),
            Selector::Exe(path) => format!("exe:{}", path.display()),
            Selector::Comm(name) => format!("comm:{name}"),
            Selector::Cgroup(path) => format!("cgroup:{path}"),
            Selector::Unit(name) => format!("unit:{name}"),
            Selector::All => "all".into(),
        }
    }

    /// Whether the agent keeps waiting for new processes once the ones it watches have ended.
    pub fn follows_restarts(&self) -> bool {
        !matches!(self, Selector::Pid(_))
    }

    /// Checks what can be checked before watching: a unit needs a running systemd.
    pub fn check(&self) -> Result<(), AgentError> {
        if let Selector::Unit(name) = self {
            if !Path::new("/run/systemd/system").is_dir() {
                return Err(AgentError::new(
                    ExitCode::Usage,
                    format!(
                        "--unit {name}: systemd is not running on this host (no /run/systemd/system); \
                         give the unit's cgroup with --cgroup instead"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The processes that match now, in pid order.
    pub fn scan(&self) -> Vec<u32> {
        self.scan_with(&mut ScanMemo::default())
    }

    /// As `scan`, remembering in `memo` which processes matched by executable or name: an old
    /// process is checked again only every [`FULL_SCAN_EVERY`].
    pub fn scan_with(&self, memo: &mut ScanMemo) -> Vec<u32> {
        let mut pids = match self {
            Selector::Pid(pid) => vec![*pid],
            Selector::Exe(path) => memo.scan(|pid| exe_of(pid).is_some_and(|exe| &exe == path)),
            Selector::Comm(name) => {
                let want: String = name.chars().take(COMM_LEN).collect();
                memo.scan(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == want))
            }
            Selector::Cgroup(path) => cgroup_dir(path).map(|dir| cgroup_pids(&dir)).unwrap_or_default(),
            Selector::Unit(name) => {
                unit_cgroup(name).and_then(|p| cgroup_dir(&p)).map(|d| cgroup_pids(&d)).unwrap_or_default()
            }
            // Kernel threads are left out by the caller, as for a cgroup that holds them.
            Selector::All => scan_proc(|_| true),
        };
        let me = std::process::id();
        pids.retain(|&p| p != me);
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl ScanMemo {
    /// Every process in /proc for which `matches` holds, asked of young processes and at full
    /// scans, else remembered.
    fn scan(&mut self, matches: impl Fn(u32) -> bool) -> Vec<u32> {
        let now = Instant::now();
        let full = self.last_full.is_none_or(|t| now.duration_since(t) >= FULL_SCAN_EVERY);
        if full {
            self.last_full = Some(now);
        }
        let present: HashSet<u32> = scan_proc(|_| true).into_iter().collect();
        self.seen.retain(|pid, _| present.contains(pid));
        present
            .into_iter()
            .filter(|&pid| {
                let (matched, first) = self.seen.entry(pid).or_insert((false, now));
                if full || now.duration_since(*first) < YOUNG {
                    *matched = matches(pid);
                }
                *matched
            })
            .collect()
    }
}

/// Every process in /proc for which `keep` holds.
fn scan_proc(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).filter(|&pid| keep(pid)).collect()
}

/// A process's executable; a file replaced since it started still names its old path.
fn exe_of(pid: u32) -> Option<PathBuf> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_str()?;
    Some(PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(text)))
}

/// The directory of cgroup `path` in a mounted hierarchy.
fn cgroup_dir(path: &str) -> Option<PathBuf> {
    if path.starts_with("/sys/fs/cgroup") {
        return Some(PathBuf::from(path)).filter(|p| p.is_dir());
    }
    let relative = path.trim_start_matches('/');
    CGROUP_ROOTS.iter().map(|root| Path::new(root).join(relative)).find(|dir| dir.join("cgroup.procs").is_file())
}

/// The processes in `dir` and the cgroups below it.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    let mut visited = 0;
    while let Some(dir) = todo.pop() {
        visited += 1;
        if visited > MAX_CGROUP_DIRS {
            tracing::warn!(cgroup = %dir.display(), "cgroup tree too large; later cgroups not scanned");
            break;
        }
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            todo.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    pids
}

/// A unit's cgroup path, from systemd (empty while the unit is not running).
fn unit_cgroup(name: &str) -> Option<String> {
    let out = std::process::Command::new("systemctl")
        .args(["show", "--property=ControlGroup", "--value", name])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_name_and_executable() {
        let me = std::process::id();
        // A child of ours, since the scan leaves out the agent itself.
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let exe = fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
        assert!(Selector::Exe(exe).scan().contains(&child.id()));
        assert!(Selector::Comm("sleep".into()).scan().contains(&child.id()));
        assert!(!Selector::Comm("sleep".into()).scan().contains(&me));
        let cgroup = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        let v1_pids = cgroup.lines().find_map(|l| l.split_once(":pids:").map(|x| x.1.to_string()));
        if let Some(path) = v1_pids {
            assert!(Selector::Cgroup(path).scan().contains(&child.id()), "the v1 pids hierarchy holds every process");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn names_are_cut_as_the_kernel_cuts_them() {
        let long = Selector::Comm("a-very-long-process-name".into());
        assert!(long.scan().is_empty());
        assert_eq!(long.describe(), "comm:a-very-long-process-name");
        assert!(!Selector::Pid(1).follows_restarts());
        assert!(Selector::Exe("/x".into()).follows_restarts());
        assert_eq!(cgroup_dir("/no/such/cgroup"), None);
    }
}
