//! The reference for unwinding: `perf record --call-graph dwarf`, which copies each sample's
//! stack and unwinds it afterwards with the file's CFI, on the same process over the same time.

use std::{path::Path, process::Command};

/// One sample's frames, root first (perf's names, inlined frames left out).
pub type PerfStack = Vec<String>;

/// Starts `perf record --call-graph dwarf` on `pid` for `seconds` in the background; `finish`
/// returns its stacks.
pub struct PerfRecording {
    child: std::process::Child,
    data: std::path::PathBuf,
    /// `perf script --pid`: the processes whose samples a system-wide recording keeps.
    only: Option<String>,
}

impl PerfRecording {
    pub fn start(pid: u32, seconds: u64, frequency_hz: u64, dir: &Path) -> Self {
        Self::start_many(&[pid], seconds, frequency_hz, dir)
    }

    /// The same over several processes at once.
    pub fn start_many(pids: &[u32], seconds: u64, frequency_hz: u64, dir: &Path) -> Self {
        // 32 KiB of stack per sample: deeper than any fixture's stack, a quarter of the file.
        Self::start_sampling(pids, seconds, &["--call-graph", "dwarf,32768", "-F", &frequency_hz.to_string()], dir)
    }

    /// The same, sampling each CPU on its own clock as the agent does (`perf record -a`), and
    /// keeping the samples of `pids`: a per-process recording restarts its clock whenever a task
    /// is switched in, which moves samples to and from the switch-in.
    pub fn start_on_each_cpu(pids: &[u32], seconds: u64, frequency_hz: u64, dir: &Path) -> Self {
        let frequency = frequency_hz.to_string();
        let mut recording = Self::start_sampling(&[], seconds, &["--call-graph", "dwarf,16384", "-F", &frequency], dir);
        recording.only = Some(pids.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
        recording
    }

    /// Frame-pointer call graphs (`perf record -g`): how perf walks JIT code, which has no CFI.
    pub fn start_frame_pointers(pid: u32, seconds: u64, frequency_hz: u64, dir: &Path) -> Self {
        Self::start_sampling(&[pid], seconds, &["-g", "-F", &frequency_hz.to_string()], dir)
    }

    /// Records every page fault (a period would lock onto loops that fault a fixed number of
    /// pages per iteration), with 8 KiB of stack each to keep the file small.
    pub fn start_faults(pid: u32, seconds: u64, dir: &Path) -> Self {
        Self::start_sampling(&[pid], seconds, &["--call-graph", "dwarf,8192", "-e", "page-faults", "-c", "1"], dir)
    }

    fn start_sampling(pids: &[u32], seconds: u64, sampling: &[&str], dir: &Path) -> Self {
        let data = dir.join("perf.data");
        let pid = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let whom = if pids.is_empty() { ["-a", "-o"].to_vec() } else { ["-p", &pid, "-o"].to_vec() };
        let child = Command::new("perf")
            .args(["record", "-q"])
            .args(sampling)
            .args(whom)
            .arg(&data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run perf (cargo xtask setup installs linux-perf)");
        Self { child, data, only: None }
    }

    /// Waits until perf has stopped recording (`finish` then reads what it recorded; later, once
    /// a JIT has written the map that names its code, say). Waiting again is a no-op.
    pub fn wait(&mut self) {
        let status = self.child.wait().expect("wait for perf");
        assert!(status.success(), "perf record failed");
    }

    pub fn finish(mut self) -> Vec<PerfStack> {
        self.wait();
        let mut script = Command::new("perf");
        script.args(["script", "--no-inline", "-F", "comm,tid,ip,sym"]);
        if let Some(pids) = &self.only {
            script.arg(format!("--pid={pids}"));
        }
        let out = script.arg("-i").arg(&self.data).output().expect("perf script");
        parse_script(&String::from_utf8_lossy(&out.stdout))
    }
}

/// `perf script -F comm,tid,ip,sym`: a header line per sample, then one line per frame
/// (`ADDRESS SYMBOL`, innermost first), then a blank line.
fn parse_script(text: &str) -> Vec<PerfStack> {
    let mut stacks = Vec::new();
    let mut current: Option<PerfStack> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if let Some(mut stack) = current.take() {
                stack.reverse();
                stacks.push(stack);
            }
        } else if line.starts_with(char::is_whitespace) {
            let mut fields = line.split_whitespace();
            let _address = fields.next();
            let symbol = fields.collect::<Vec<_>>().join(" ");
            current.get_or_insert_with(Vec::new).push(symbol);
        } else {
            current = Some(Vec::new());
        }
    }
    if let Some(mut stack) = current.take() {
        stack.reverse();
        stacks.push(stack);
    }
    stacks
}

/// The share of perf's samples whose stack has a frame named `function` (or starting with it,
/// as perf may add `+0x..`).
pub fn share(stacks: &[PerfStack], pred: impl Fn(&str) -> bool) -> f64 {
    let with = stacks.iter().filter(|s| s.iter().any(|f| pred(f))).count();
    with as f64 / stacks.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_perf_script() {
        let text = "gzip 123\n\t    4710 deflate\n\t    3500 main\n\n\
                    gzip 123\n\t    1201 [unknown]\n\n";
        let stacks = super::parse_script(text);
        assert_eq!(stacks, vec![vec!["main".to_string(), "deflate".into()], vec!["[unknown]".to_string()]]);
    }
}
