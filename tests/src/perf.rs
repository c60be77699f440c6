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
}

impl PerfRecording {
    pub fn start(pid: u32, seconds: u64, frequency_hz: u64, dir: &Path) -> Self {
        // 32 KiB of stack per sample: deeper than any fixture's stack, a quarter of the file.
        Self::start_sampling(pid, seconds, &["--call-graph", "dwarf,32768", "-F", &frequency_hz.to_string()], dir)
    }

    /// Records every page fault (a period would lock onto loops that fault a fixed number of
    /// pages per iteration), with 8 KiB of stack each to keep the file small.
    pub fn start_faults(pid: u32, seconds: u64, dir: &Path) -> Self {
        Self::start_sampling(pid, seconds, &["--call-graph", "dwarf,8192", "-e", "page-faults", "-c", "1"], dir)
    }

    fn start_sampling(pid: u32, seconds: u64, sampling: &[&str], dir: &Path) -> Self {
        let data = dir.join("perf.data");
        let pid = pid.to_string();
        let child = Command::new("perf")
            .args(["record", "-q"])
            .args(sampling)
            .args(["-p", &pid, "-o"])
            .arg(&data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run perf (cargo xtask setup installs linux-perf)");
        Self { child, data }
    }

    pub fn finish(mut self) -> Vec<PerfStack> {
        let status = self.child.wait().expect("wait for perf");
        assert!(status.success(), "perf record failed");
        let out = Command::new("perf")
            .args(["script", "--no-inline", "-F", "comm,tid,ip,sym", "-i"])
            .arg(&self.data)
            .output()
            .expect("perf script");
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
