//! What the guest runs, shared by the host (`vmtest`) and the guest's init (`vmtest-init`): a
//! list of checks, each a program with its arguments, environment and expected outcome, and the
//! lines the guest prints on its serial console so that the host can read the results.

use serde::{Deserialize, Serialize};

/// Where the plan sits in the guest.
pub const PLAN_PATH: &str = "/vmtest/plan.json";
/// Every line the host reads starts with this; everything else on the console is the log.
pub const MARK: &str = "@@vmtest";

/// What the guest's init mounts (source, mount point, type), over the initramfs it boots from.
/// Nothing is mounted on `/tmp` or `/var/tmp`: the initramfs's own file system is writable, and
/// a tmpfs there would hide a workspace cloned under it (the test binaries and fixtures sit at
/// their host paths). The host refuses to pack a path that one of these would hide.
pub const GUEST_MOUNTS: &[(&str, &str, &str)] = &[
    ("proc", "/proc", "proc"),
    ("sysfs", "/sys", "sysfs"),
    // A pure cgroup v2 host, for the tests that follow a cgroup.
    ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
    ("devtmpfs", "/dev", "devtmpfs"),
];
/// Mounted over for the checks that hide BTF (`Check::hide_btf`).
pub const BTF_DIR: &str = "/sys/kernel/btf";

/// The guest mount point that hides `path`, if one does.
pub fn hidden_by(path: &str) -> Option<&'static str> {
    let under = |dir: &str| path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'));
    GUEST_MOUNTS.iter().map(|(_, dir, _)| *dir).chain([BTF_DIR]).find(|dir| under(dir))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub checks: Vec<Check>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    /// Short name: a column of the matrix table.
    pub id: String,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout_s: u64,
    pub expect_exit: i32,
    /// A line of the program's output (stdout and stderr) must contain this.
    pub expect_output: String,
    /// Run with an empty tmpfs over /sys/kernel/btf: a kernel without BTF, to the agent.
    pub hide_btf: bool,
}

/// One check's outcome, as printed by the guest: `@@vmtest result ID pass|fail SECONDS WHY`.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub id: String,
    pub passed: bool,
    pub seconds: f64,
    pub why: String,
}

impl Outcome {
    #[cfg_attr(not(test), allow(dead_code, reason = "printed by the guest's init, which includes this file"))]
    pub fn line(&self) -> String {
        let verdict = if self.passed { "pass" } else { "fail" };
        format!("{MARK} result {} {verdict} {:.1} {}", self.id, self.seconds, self.why)
    }

    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end_matches('\r').split_once(&format!("{MARK} result "))?.1;
        let mut parts = rest.splitn(4, ' ');
        let id = parts.next()?.to_string();
        let passed = match parts.next()? {
            "pass" => true,
            "fail" => false,
            _ => return None,
        };
        let seconds = parts.next()?.parse().ok()?;
        Some(Self { id, passed, seconds, why: parts.next().unwrap_or_default().to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::{hidden_by, Outcome};

    #[test]
    fn a_workspace_under_tmp_or_home_is_not_hidden() {
        // A clone under /tmp: every check failed with "cannot start" when the guest mounted a
        // tmpfs over /tmp (issue 19).
        for path in ["/tmp/autodump/target/debug/deps/on_cpu-1", "/var/tmp/x", "/root/autodump", "/home/u/a"] {
            assert_eq!(hidden_by(path), None, "{path}");
        }
        assert_eq!(hidden_by("/proc/x"), Some("/proc"));
        assert_eq!(hidden_by("/sys/fs/cgroup"), Some("/sys"));
        assert_eq!(hidden_by("/devices/x"), None);
    }

    #[test]
    fn outcome_lines_round_trip() {
        let o = Outcome { id: "on-cpu".into(), passed: false, seconds: 12.5, why: "exit 101".into() };
        assert_eq!(Outcome::parse(&o.line()), Some(o));
        // The console may carry a kernel message before ours on the same line, and a CR.
        let noisy = "[   3.1] x @@vmtest result go pass 3.0 \r";
        assert_eq!(Outcome::parse(noisy).map(|o| (o.id, o.passed)), Some(("go".into(), true)));
        assert_eq!(Outcome::parse("@@vmtest result x maybe 1.0 y"), None);
    }
}
