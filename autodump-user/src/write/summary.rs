//! `summary.json`: why the bundle was written, what was recorded, and what was lost.
//! Every field is documented in README.md ("summary.json").

use serde::Serialize;

use crate::collect::drain::ProbeStats;

/// Bumped when a field changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub format_version: u32,
    pub reason: Reason,
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub kernel: String,
    pub agent_version: String,
    pub frequency_hz: u64,
    pub window: Window,
    pub cpu: CpuTotals,
    pub offcpu: OffCpuTotals,
    /// Events the probes could not record (from their stats map).
    pub dropped: ProbeStats,
    pub target: TargetState,
    pub threads: Vec<Thread>,
    /// Facts a reader needs to interpret the numbers (e.g. the target exited early).
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Reason {
    /// `record` for a fixed-time recording.
    pub kind: String,
}

#[derive(Debug, Serialize)]
pub struct Window {
    /// Unix seconds.
    pub start: f64,
    pub end: f64,
    pub duration_s: f64,
}

#[derive(Debug, Serialize)]
pub struct CpuTotals {
    pub samples: u64,
    /// samples / frequency: the CPU time the samples stand for.
    pub cpu_seconds: f64,
    pub distinct_stacks: usize,
}

#[derive(Debug, Serialize)]
pub struct OffCpuTotals {
    pub total_us: u64,
    /// Of which the threads were runnable (waiting for a CPU), not blocked.
    pub runnable_us: u64,
    /// Switch-outs whose time was counted.
    pub blocks: u64,
    pub distinct_stacks: usize,
}

#[derive(Debug, Serialize)]
pub struct TargetState {
    /// The target exited before the window closed; the bundle holds what was recorded.
    pub exited: bool,
}

#[derive(Debug, Serialize)]
pub struct Thread {
    pub tid: u32,
    pub name: String,
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}
