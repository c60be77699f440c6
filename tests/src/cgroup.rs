//! Cgroups a test creates and removes: the v1 cpu hierarchy on hybrid hosts (this machine), or
//! the unified one where the cpu controller lives there.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// A cgroup made for one test; its processes go back to the root and it is removed on drop.
pub struct TestCgroup {
    /// The directory in the cgroup file system.
    pub dir: PathBuf,
    /// The path processes see in /proc/PID/cgroup (`/autodump-test-...`).
    pub path: String,
    root: PathBuf,
}

impl TestCgroup {
    /// A cgroup named after `test`, in the hierarchy that has the cpu controller; with `cores`,
    /// its CPU quota (period 100 ms).
    pub fn cpu(test: &str, cores: Option<f64>) -> Self {
        let name = format!("autodump-test-{test}-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let v2_cpu = fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"));
        let root = if v2_cpu { PathBuf::from("/sys/fs/cgroup") } else { PathBuf::from("/sys/fs/cgroup/cpu") };
        let dir = root.join(&name);
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
        if v2_cpu {
            // Children get cpu.max only where the parent hands the controller down.
            let _ = fs::write(root.join("cgroup.subtree_control"), "+cpu");
        }
        if let Some(cores) = cores {
            let quota = (cores * 100_000.0).round() as u64;
            if v2_cpu {
                fs::write(dir.join("cpu.max"), format!("{quota} 100000")).unwrap();
            } else {
                fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
                fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()).unwrap();
            }
        }
        Self { path: format!("/{name}"), dir, root }
    }

    /// Gives the cgroup the highest weight against its siblings (a process's nice counts only
    /// within its cgroup), for a test that favours its CPU (see [`crate::favour_cpu`]), and only
    /// under nextest, as that. Only for a cgroup with a quota: the quota bounds what it takes,
    /// and the test beside it keeps the rest.
    pub fn favour(&self) {
        if std::env::var_os("NEXTEST_RUN_ID").is_none() {
            return;
        }
        match self.dir.join("cpu.weight").exists() {
            true => fs::write(self.dir.join("cpu.weight"), "10000").unwrap(),
            false => fs::write(self.dir.join("cpu.shares"), "262144").unwrap(),
        }
    }

    /// Moves process `pid` (every thread) in.
    pub fn add(&self, pid: u32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// Moves process `pid` back to the root cgroup.
    pub fn remove(&self, pid: u32) {
        fs::write(self.root.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    pub fn pids(&self) -> Vec<u32> {
        let text = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = fs::write(self.root.join("cgroup.procs"), pid.to_string());
        }
        let _ = fs::remove_dir(&self.dir);
    }
}
