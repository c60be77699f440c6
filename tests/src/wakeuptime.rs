//! The reference for waker stacks: libbpf-tools' `wakeuptime -p PID`, which sums each target
//! thread's time from switch-out to wake-up by the waker's kernel stack, taken at
//! `sched_wakeup`.

use std::{
    collections::HashMap,
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Blocked microseconds by waker kernel stack, as [`normalize`]d.
pub type ByWakerStack = HashMap<String, u64>;

/// What wakeuptime's stacks hold that is not a waker: a wake-up the kernel queued to the wakee's
/// CPU, whose `sched_wakeup` ran there in an interrupt (`sched_ttwu_pending`), not in the waker.
pub const QUEUED: &str = "sched_ttwu_pending";

pub struct Wakeuptime {
    child: Child,
    /// Its output, read as it comes: a full pipe would stop it before it ends.
    output: std::thread::JoinHandle<String>,
}

impl Wakeuptime {
    /// Starts `wakeuptime -p pid seconds` and waits until it traces.
    pub fn start(pid: u32, seconds: u64) -> Self {
        // Line-buffered: its header, printed once its probes are attached, must reach us then.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "wakeuptime", "-p", &pid.to_string(), &seconds.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run wakeuptime (libbpf-tools; `cargo xtask setup` installs it)");
        // It prints its header once its probes are attached.
        let mut header = [0u8; 8];
        child.stdout.as_mut().expect("piped").read_exact(&mut header).expect("wakeuptime's header");
        assert_eq!(&header, b"Tracing ", "wakeuptime did not start");
        let mut stdout = child.stdout.take().expect("piped");
        let output = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        Self { child, output }
    }

    /// Waits for it to end and returns its totals.
    pub fn finish(mut self, timeout: Duration) -> ByWakerStack {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().expect("wait for wakeuptime").is_none() {
            assert!(Instant::now() < deadline, "wakeuptime did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
        parse(&self.output.join().expect("wakeuptime's output"))
    }
}

/// wakeuptime's blocks: "target: comm", the waker kernel stack ("ffff... function", innermost
/// first), "waker: comm", then the microseconds. It prints each total through a 32-bit int of
/// nanoseconds, so a total over 2.147 s wraps negative: tests keep totals below that, and a
/// wrapped one fails here.
pub fn parse(out: &str) -> ByWakerStack {
    let mut totals = ByWakerStack::new();
    for block in out.split("\n\n") {
        let lines: Vec<&str> = block.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if !lines.first().is_some_and(|l| l.starts_with("target:")) {
            continue;
        }
        let frames: Vec<&str> = lines
            .iter()
            .filter_map(|l| {
                l.split_once(' ').filter(|(a, _)| a.len() == 16 && a.chars().all(|c| c.is_ascii_hexdigit()))
            })
            .map(|(_, f)| f)
            .collect();
        let us: i64 = lines.last().and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("no total in {block:?}"));
        assert!(us >= 0, "wakeuptime wrapped a total over 2.147 s: {block}");
        *totals.entry(normalize(&frames)).or_default() += us as u64;
    }
    totals
}

/// A waker's kernel stack, innermost first, as both sides can agree on it: the frames that
/// called `try_to_wake_up` (wakeuptime's probe runs deeper inside it than ours), up to the
/// entry of an interrupt (what it interrupted did not wake anyone), `;`-separated.
pub fn normalize(frames: &[&str]) -> String {
    let start = frames.iter().position(|f| *f == "try_to_wake_up").map_or(0, |i| i + 1);
    let mut kept = Vec::new();
    for f in &frames[start..] {
        kept.push(*f);
        if f.starts_with("asm_") {
            break;
        }
    }
    kept.join(";")
}
