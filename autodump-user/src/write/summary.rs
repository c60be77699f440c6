//! `summary.json`: why the bundle was written, what was recorded, and what was lost.
//! Every field is documented in README.md ("summary.json").

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use serde::Serialize;

use super::time::unix_secs_f64;
use crate::{
    collect::drain::ProbeStats,
    record::profile::{pseudo, Profile},
};

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

/// What a summary is made from.
pub struct Facts<'a> {
    pub reason: &'a str,
    pub pid: u32,
    pub comm: &'a str,
    pub exe: &'a str,
    pub frequency_hz: u64,
    pub start: SystemTime,
    pub end: SystemTime,
    pub cpu: &'a Profile,
    pub offcpu: &'a Profile,
    pub threads: &'a BTreeMap<u32, Arc<str>>,
    pub dropped: ProbeStats,
    pub exited: bool,
}

pub fn build(f: &Facts<'_>) -> Summary {
    let (start, end) = (unix_secs_f64(f.start), unix_secs_f64(f.end));
    let (cpu, offcpu) = (f.cpu.total(), f.offcpu.total());
    let mut notes = Vec::new();
    if f.exited {
        notes.push("the target exited before the window closed; the bundle holds what was recorded until then".into());
    }
    let d = &f.dropped;
    let lost =
        d.cpu_user_stack_errors + d.cpu_kernel_stack_errors + d.offcpu_user_stack_errors + d.offcpu_kernel_stack_errors;
    if lost > 0 {
        notes.push(format!(
            "{lost} stacks could not be recorded (stack-map collisions or a full map); raise --stack-slots"
        ));
    }
    let full = d.cpu_counts_full + d.offcpu_start_full + d.offcpu_totals_full;
    if full > 0 {
        notes.push(format!("{full} events were lost to full maps; raise --count-slots or --thread-slots"));
    }
    Summary {
        format_version: FORMAT_VERSION,
        reason: Reason { kind: f.reason.into() },
        pid: f.pid,
        comm: f.comm.into(),
        exe: f.exe.into(),
        kernel: kernel_release(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        frequency_hz: f.frequency_hz,
        window: Window { start, end, duration_s: end - start },
        cpu: CpuTotals {
            samples: cpu.count,
            cpu_seconds: cpu.count as f64 / f.frequency_hz as f64,
            distinct_stacks: f.cpu.samples.len(),
        },
        offcpu: OffCpuTotals {
            total_us: offcpu.nanos / 1000,
            runnable_us: runnable_us(f.offcpu),
            blocks: offcpu.count,
            distinct_stacks: f.offcpu.samples.len(),
        },
        dropped: f.dropped,
        target: TargetState { exited: f.exited },
        threads: f.threads.iter().map(|(&tid, name)| Thread { tid, name: name.to_string() }).collect(),
        notes,
    }
}

/// Off-CPU time of samples whose leaf is the runnable pseudo frame, in microseconds.
fn runnable_us(offcpu: &Profile) -> u64 {
    let is_runnable = |i: u32| {
        let loc = &offcpu.locations[i as usize];
        loc.address == 0 && loc.frames.first().is_some_and(|f| &*f.function == pseudo::RUNNABLE)
    };
    offcpu
        .samples
        .iter()
        .filter(|(k, _)| k.stack.first().is_some_and(|&i| is_runnable(i)))
        .map(|(_, v)| v.nanos / 1000)
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::profile::{tests::sample_profile, ProfileKind, SampleValue, StackPart};

    #[test]
    fn summarizes_totals_window_threads_and_losses() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut offcpu = Profile::new(ProfileKind::OffCpu);
        let loc = crate::record::profile::tests::loc(1, "wait", false);
        let user = [loc];
        offcpu.add("t".into(), &[StackPart::User(&user)], SampleValue { count: 3, nanos: 3_000_000 });
        offcpu.add(
            "t".into(),
            &[StackPart::Pseudo(pseudo::RUNNABLE), StackPart::User(&user)],
            SampleValue { count: 1, nanos: 500_000 },
        );
        let threads = BTreeMap::from([(7, Arc::from("worker")), (8, Arc::from("app"))]);
        let dropped = ProbeStats { cpu_user_stack_errors: 2, offcpu_totals_full: 1, ..ProbeStats::default() };
        let summary = build(&Facts {
            reason: "record",
            pid: 7,
            comm: "app",
            exe: "/usr/bin/app",
            frequency_hz: 99,
            start,
            end: start + Duration::from_millis(2500),
            cpu: &sample_profile(),
            offcpu: &offcpu,
            threads: &threads,
            dropped,
            exited: true,
        });
        assert_eq!(summary.cpu.samples, 45);
        assert!((summary.cpu.cpu_seconds - 45.0 / 99.0).abs() < 1e-9);
        assert_eq!(summary.cpu.distinct_stacks, 2);
        assert_eq!((summary.offcpu.total_us, summary.offcpu.runnable_us, summary.offcpu.blocks), (3500, 500, 4));
        assert_eq!(summary.window.start, 1_700_000_000.0);
        assert!((summary.window.duration_s - 2.5).abs() < 1e-6);
        assert_eq!(summary.threads.len(), 2);
        assert!(summary.target.exited);
        assert_eq!(summary.notes.len(), 3, "{:?}", summary.notes);

        let json: serde_json::Value = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["reason"]["kind"], "record");
        assert_eq!(json["dropped"]["cpu_user_stack_errors"], 2);
        assert_eq!(json["threads"][0]["name"], "worker");
        assert_eq!(json["format_version"], FORMAT_VERSION);
    }

    #[test]
    fn a_clean_recording_has_no_notes() {
        let empty = Profile::new(ProfileKind::OffCpu);
        let summary = build(&Facts {
            reason: "record",
            pid: 1,
            comm: "x",
            exe: "/x",
            frequency_hz: 99,
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            cpu: &empty,
            offcpu: &empty,
            threads: &BTreeMap::new(),
            dropped: ProbeStats::default(),
            exited: false,
        });
        assert!(summary.notes.is_empty());
        assert_eq!(summary.offcpu.runnable_us, 0);
    }
}
