//! The probes' counters as a summary reports them: every event recorded, and every one lost.

use autodump_common::Stat;
use serde::Serialize;

/// Totals of the probes' per-CPU `STATS` slots since load.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProbeStats {
    pub cpu_samples: u64,
    pub cpu_user_stack_errors: u64,
    pub cpu_kernel_stack_errors: u64,
    pub cpu_counts_full: u64,
    pub offcpu_switches: u64,
    pub offcpu_user_stack_errors: u64,
    pub offcpu_kernel_stack_errors: u64,
    pub offcpu_start_full: u64,
    pub offcpu_totals_full: u64,
    /// Stack walks that collided in the main stack map and were filed in the overflow map: not lost.
    pub overflow_stacks: u64,
    /// User stacks walked with CFI rows, and how the walks ended.
    pub unwound_stacks: u64,
    pub unwound_to_root: u64,
    /// Stopped at code no file covers (JIT or anonymous memory).
    pub unwind_unknown_code: u64,
    /// Stopped at CFI the probes cannot follow or at an unreadable frame.
    pub unwind_broken: u64,
    /// Frames walked by frame pointer because no CFI row covered them (Go code, gaps).
    pub unwind_frame_pointer_frames: u64,
    /// Unwound stacks whose slot held another stack, or whose map was full.
    pub unwound_stacks_lost: u64,
    /// Page-fault samples counted (each stands for `--fault-period` faults), and losses.
    pub fault_samples: u64,
    pub fault_user_stack_errors: u64,
    pub fault_kernel_stack_errors: u64,
    pub fault_counts_full: u64,
    /// Frames walked in JIT code, and walks that stopped there (see `Stat::JitWalkStops`).
    pub jit_frames: u64,
    pub jit_walk_stops: u64,
    /// Walks stopped in code a JIT compiled after the agent last read its code region (the
    /// agent reads it again at once: see `--code-check`).
    pub new_code_stops: u64,
    /// Wake-ups of blocked threads recorded with their waker, waker stacks not recorded, and
    /// wake-ups lost to a full map.
    pub wakeups: u64,
    pub waker_user_stack_errors: u64,
    pub waker_kernel_stack_errors: u64,
    pub wakeup_totals_full: u64,
    /// Walks answered by the thread's last walk from the same registers (`--walk-memo-slots`);
    /// counted in `unwound_stacks` too.
    pub walk_memo_hits: u64,
    /// Each runtime's frames the walks emitted (`python_frames`), and walks through its
    /// interpreter whose thread it could not find (`python_thread_misses`): its frames are
    /// missing from that stack.
    #[serde(flatten)]
    pub runtimes: std::collections::BTreeMap<String, u64>,
}

impl ProbeStats {
    /// From the totals of every `Stat` slot, and each runtime's counters by name.
    pub fn of(totals: &[u64; Stat::COUNT as usize], runtimes: std::collections::BTreeMap<String, u64>) -> Self {
        let t = |s: Stat| totals[s as usize];
        ProbeStats {
            cpu_samples: t(Stat::CpuSamples),
            cpu_user_stack_errors: t(Stat::CpuUserStackErrors),
            cpu_kernel_stack_errors: t(Stat::CpuKernelStackErrors),
            cpu_counts_full: t(Stat::CpuCountsFull),
            offcpu_switches: t(Stat::OffCpuSwitches),
            offcpu_user_stack_errors: t(Stat::OffCpuUserStackErrors),
            offcpu_kernel_stack_errors: t(Stat::OffCpuKernelStackErrors),
            offcpu_start_full: t(Stat::OffCpuStartFull),
            offcpu_totals_full: t(Stat::OffCpuTotalsFull),
            overflow_stacks: t(Stat::OverflowStacks),
            unwound_stacks: t(Stat::UnwoundStacks),
            unwound_to_root: t(Stat::UnwoundToRoot),
            unwind_unknown_code: t(Stat::UnwindUnknownCode),
            unwind_broken: t(Stat::UnwindBroken),
            unwind_frame_pointer_frames: t(Stat::UnwindFramePointerFrames),
            unwound_stacks_lost: t(Stat::UnwoundStacksLost),
            fault_samples: t(Stat::FaultSamples),
            fault_user_stack_errors: t(Stat::FaultUserStackErrors),
            fault_kernel_stack_errors: t(Stat::FaultKernelStackErrors),
            fault_counts_full: t(Stat::FaultCountsFull),
            jit_frames: t(Stat::JitFrames),
            jit_walk_stops: t(Stat::JitWalkStops),
            new_code_stops: t(Stat::NewCodeStops),
            wakeups: t(Stat::Wakeups),
            waker_user_stack_errors: t(Stat::WakerUserStackErrors),
            waker_kernel_stack_errors: t(Stat::WakerKernelStackErrors),
            wakeup_totals_full: t(Stat::WakeupTotalsFull),
            walk_memo_hits: t(Stat::WalkMemoHits),
            runtimes,
        }
    }
}
