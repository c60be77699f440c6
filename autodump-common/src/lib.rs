//! Types shared by the eBPF probes and the agent: map keys, map values, stat slots and map names.
//!
//! Every type is `#[repr(C)]` with fields ordered so that there is no implicit padding: the kernel
//! hashes keys byte by byte, so a padding byte left uninitialised would split one key into many.
#![no_std]

pub mod runtimes;
pub mod unwind;

/// Processes one probe set can watch at once (the `TARGETS` and `EXITS` maps).
pub const TARGET_SLOTS: u32 = 4096;
/// Words of the `TARGET_BITS` filter: bit `tgid % (64 * TARGET_BIT_WORDS)` is set for every
/// watched process. An array read answers most events (other processes) before the hash lookup.
pub const TARGET_BIT_WORDS: u32 = 1024;

/// The word and bit of `tgid` in the `TARGET_BITS` filter.
#[inline(always)]
pub fn target_bit(tgid: u32) -> (u32, u64) {
    let bit = tgid % (64 * TARGET_BIT_WORDS);
    (bit / 64, 1u64 << (bit % 64))
}

/// Key of the on-CPU sample counts and of the off-CPU totals.
///
/// `stack_epoch` names the stack-map generation that holds the two stack ids (see [`Control`]);
/// off-CPU keys can point at an older generation than the one they are counted in, because a
/// thread's stack is taken when it blocks and its time is added when it wakes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    /// The process (tgid) and thread: one probe set records every watched process.
    pub tgid: u32,
    pub tid: u32,
    /// Negative: the kernel's error code from `bpf_get_stackid`.
    pub user_stack_id: i32,
    /// Negative: the kernel's error code from `bpf_get_stackid`.
    pub kernel_stack_id: i32,
    pub stack_epoch: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// A stack id with this bit set names a stack in its generation's overflow map. The kernel files
/// a stack in the slot its hash picks; when that slot of the main map already holds another
/// stack (a hash collision), the probes file it in the overflow map instead, whose slots are
/// picked from fewer bits of the same hash and hold only such stacks. Ids are below 2^30.
pub const OVERFLOW_STACK_ID: u32 = 1 << 30;

/// A stack id with this bit set (and neither [`OVERFLOW_STACK_ID`] nor
/// `unwind::UNWOUND_STACK_ID`) names a stack the agent took itself, from outside the thread: a
/// thread blocked since before the probes were attached (see `TaskRegs`). The agent seeds the
/// thread's off-CPU slot with it; the probes carry it like any other id.
pub const PRESEEDED_STACK_ID: u32 = 1 << 28;

/// The overflow stack map has one slot for this many slots of the main one.
pub const OVERFLOW_SHARE: u32 = 8;

/// The thread was still runnable when it was switched out (preempted or yielded): its off-CPU
/// time is time spent waiting for a CPU, not blocked.
pub const FLAG_RUNNABLE: u32 = 1;

/// Key of the page-fault counts: a stack as for on-CPU samples, and the faulting page (the
/// address shifted right by 12), which the agent classifies against the target's memory map
/// (heap, anonymous, file, stack). Recorded faults are few (one in `--fault-period`), so keys by
/// page stay few too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultKey {
    /// 24 bytes: `page` is 8-byte aligned with no implicit padding.
    pub stack: StackKey,
    pub page: u64,
}

/// Off-CPU accounting per thread, keyed by tid: where and when it was last switched out. A
/// thread keeps its slot until it exits; `start_ns` is 0 while it runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuStart {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at switch-out; 0: the thread is not blocked.
    pub start_ns: u64,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub stack_epoch: u32,
    pub flags: u32,
    /// The thread's process.
    pub tgid: u32,
    /// Keeps `futex` 8-byte aligned with no implicit padding.
    pub zero: u32,
    /// The futex word it waits on, for a thread blocked in a futex wait (a contended lock or a
    /// condition variable); 0 otherwise, or where the probes cannot read system call arguments.
    pub futex: u64,
}

impl OffCpuStart {
    /// True while the thread is switched out.
    #[inline(always)]
    pub fn is_blocked(&self) -> bool {
        self.start_ns != 0
    }

    /// The key this thread's blocked time is counted under.
    #[inline(always)]
    pub fn key(&self, tid: u32) -> StackKey {
        StackKey {
            tgid: self.tgid,
            tid,
            user_stack_id: self.user_stack_id,
            kernel_stack_id: self.kernel_stack_id,
            stack_epoch: self.stack_epoch,
            flags: self.flags,
        }
    }
}

/// Key of the wake-up totals: a blocked thread's stack as counted off-CPU, the futex it waited
/// on (0: not a futex wait), and the thread that woke it with its stacks, taken as it did.
///
/// A waker in another process, or in an interrupt, has its kernel stack only: its user stack
/// would be another program's (or the interrupted one's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WakeKey {
    pub blocked: StackKey,
    pub futex: u64,
    pub waker_tgid: u32,
    pub waker_tid: u32,
    /// Negative: not taken (see above), or the kernel's error code.
    pub waker_user_stack_id: i32,
    pub waker_kernel_stack_id: i32,
    /// The generation the waker's stacks are filed in (the blocked stack's may be older).
    pub waker_epoch: u32,
    /// `WAKER_*` bits.
    pub waker_flags: u32,
    /// The waker's `comm`: its process may be gone before the agent reads it.
    pub waker_comm: [u8; 16],
}

/// One thread of the process the agent asked about, as the `task_regs` iterator writes it: its
/// state, the user registers it entered the kernel with, its system call, and its kernel
/// stack. A thread blocked since before the probes were attached never switches; this is where
/// the agent takes its stacks from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRegs {
    pub tid: u32,
    /// `task_struct::__state`: 0 running, else sleeping (1 interruptible, 2 uninterruptible).
    pub state: u32,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The system call it is in (-1: none), and its first two arguments.
    pub syscall: i64,
    pub arg0: u64,
    pub arg1: u64,
    /// Valid entries of `kernel`, innermost first.
    pub kernel_len: u32,
    pub zero: u32,
    pub kernel: [u64; MAX_STACK_DEPTH],
}

/// The futex commands that wait (`FUTEX_WAIT`, `_LOCK_PI`, `_WAIT_BITSET`, `_WAIT_REQUEUE_PI`,
/// `_LOCK_PI2`), as bits of the command (`op & FUTEX_CMD_MASK`): the probes and the agent read
/// which futex a thread waits on alike.
pub const FUTEX_WAITING_OPS: u64 = 1 << 0 | 1 << 6 | 1 << 9 | 1 << 11 | 1 << 13;
/// The command bits of a futex operation (without the private and clock flags).
pub const FUTEX_CMD_MASK: u64 = 0x7f;

/// The wake-up came from an interrupt (a timer's expiry, a device): the probe ran off the current
/// task's stack, and the current task is not the waker.
pub const WAKER_INTERRUPT: u32 = 1;

/// Off-CPU time summed per [`StackKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuTotal {
    pub total_ns: u64,
    /// How many blocks were summed into `total_ns`.
    pub count: u64,
}

/// The single entry of the `CONTROL` array, written by the agent.
///
/// The probes count into generation `epoch % 2` of the double-buffered maps; the agent bumps the
/// epoch, waits for in-flight probes to finish, then drains and clears the other generation. Nothing
/// is lost and nothing is counted twice.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    pub epoch: u32,
}

/// How a watched process ended, from `sched_process_exit` of its last thread (the `EXITS` map,
/// by tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// `task_struct::exit_code`: the signal in bits 0-6 (bit 7: core dumped), or the exit
    /// status in bits 8-15.
    pub exit_code: u32,
    /// 1 once the process's last thread has exited.
    pub seen: u32,
}

/// Slots of the per-CPU `STATS` array: every event the probes could not record is counted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// On-CPU samples of the target that were counted.
    CpuSamples = 0,
    CpuUserStackErrors,
    CpuKernelStackErrors,
    /// Samples lost because the sample-count map was full.
    CpuCountsFull,
    /// Switch-outs of the target's threads that were recorded.
    OffCpuSwitches,
    OffCpuUserStackErrors,
    OffCpuKernelStackErrors,
    /// Switch-outs lost because the per-thread start map was full.
    OffCpuStartFull,
    /// Blocks lost because the off-CPU totals map was full.
    OffCpuTotalsFull,
    /// Stack walks filed in the overflow map after a collision in the main one (not lost).
    OverflowStacks,
    /// User stacks walked with CFI rows (on-CPU and off-CPU).
    UnwoundStacks,
    /// Walks that reached the outermost frame.
    UnwoundToRoot,
    /// Walks stopped at code no file covers (JIT or anonymous code).
    UnwindUnknownCode,
    /// Walks stopped at CFI the probes cannot follow, or an unreadable frame.
    UnwindBroken,
    /// Frames walked by frame pointer because no CFI row covered them.
    UnwindFramePointerFrames,
    /// Unwound stacks lost: their slot held another stack, or the map was full.
    UnwoundStacksLost,
    /// Page-fault samples of the target that were counted.
    FaultSamples,
    FaultUserStackErrors,
    FaultKernelStackErrors,
    /// Page-fault samples lost because the fault-count map was full.
    FaultCountsFull,
    /// Frames in JIT code (anonymous executable memory), walked by frame pointer.
    JitFrames,
    /// Walks that stopped in JIT code: its frame pointer did not move up the stack, or could
    /// not be read (code built without frame pointers, as HotSpot's without
    /// `-XX:+PreserveFramePointer`).
    JitWalkStops,
    /// Walks that stopped in code a JIT compiled after the agent last read its code region
    /// (`cfa::NEW_CODE`): the agent reads the region again when this rises.
    NewCodeStops,
    /// Wake-ups of blocked target threads that were recorded with their waker.
    Wakeups,
    WakerUserStackErrors,
    WakerKernelStackErrors,
    /// Wake-ups lost because the wake-up totals map was full.
    WakeupTotalsFull,
    /// User-stack walks answered by the thread's last walk from the same registers, its stack
    /// words re-read and unchanged (see `WalkMemo`); also counted in `UnwoundStacks`.
    WalkMemoHits,
}

/// Each runtime's own counters follow these (see `runtimes::stat_slot`).
impl Stat {
    pub const COUNT: u32 = 28;
    pub const ALL: [Stat; Stat::COUNT as usize] = [
        Stat::CpuSamples,
        Stat::CpuUserStackErrors,
        Stat::CpuKernelStackErrors,
        Stat::CpuCountsFull,
        Stat::OffCpuSwitches,
        Stat::OffCpuUserStackErrors,
        Stat::OffCpuKernelStackErrors,
        Stat::OffCpuStartFull,
        Stat::OffCpuTotalsFull,
        Stat::OverflowStacks,
        Stat::UnwoundStacks,
        Stat::UnwoundToRoot,
        Stat::UnwindUnknownCode,
        Stat::UnwindBroken,
        Stat::UnwindFramePointerFrames,
        Stat::UnwoundStacksLost,
        Stat::FaultSamples,
        Stat::FaultUserStackErrors,
        Stat::FaultKernelStackErrors,
        Stat::FaultCountsFull,
        Stat::JitFrames,
        Stat::JitWalkStops,
        Stat::NewCodeStops,
        Stat::Wakeups,
        Stat::WakerUserStackErrors,
        Stat::WakerKernelStackErrors,
        Stat::WakeupTotalsFull,
        Stat::WalkMemoHits,
    ];
}

/// Deepest stack the kernel records (its `PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;

/// Map names, as the agent looks them up in the loaded object.
pub mod maps {
    pub const STACKS: [&str; 2] = ["STACKS_0", "STACKS_1"];
    pub const OVERFLOW_STACKS: [&str; 2] = ["OVERFLOW_STACKS_0", "OVERFLOW_STACKS_1"];
    pub const CPU_COUNTS: [&str; 2] = ["CPU_COUNTS_0", "CPU_COUNTS_1"];
    pub const OFFCPU_TOTALS: [&str; 2] = ["OFFCPU_TOTALS_0", "OFFCPU_TOTALS_1"];
    pub const FAULT_COUNTS: [&str; 2] = ["FAULT_COUNTS_0", "FAULT_COUNTS_1"];
    pub const KERNEL_STACK_CACHE: [&str; 2] = ["KERNEL_STACK_CACHE_0", "KERNEL_STACK_CACHE_1"];
    pub const WAKEUP_TOTALS: [&str; 2] = ["WAKEUP_TOTALS_0", "WAKEUP_TOTALS_1"];
    pub const OFFCPU_START: &str = "OFFCPU_START";
    pub const CONTROL: &str = "CONTROL";
    pub const EXITS: &str = "EXITS";
    pub const TARGETS: &str = "TARGETS";
    pub const TARGET_BITS: &str = "TARGET_BITS";
    pub const STATS: &str = "STATS";
    pub const UNWOUND_STACKS: [&str; 2] = ["UNWOUND_STACKS_0", "UNWOUND_STACKS_1"];
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    pub const PROC_MAPPINGS: &str = "PROC_MAPPINGS";
    pub const WALK_MEMOS: &str = "WALK_MEMOS";
    pub const MAPPING_ENTRIES: &str = "MAPPING_ENTRIES";
    pub const RUNTIME_PROCS: &str = "RUNTIME_PROCS";
    pub const RUNTIME_THREADS: &str = "RUNTIME_THREADS";
    /// The process whose threads `task_regs` reports (entry 0).
    pub const TASK_ITER_TARGET: &str = "TASK_ITER_TARGET";
}

/// Names of the read-only globals the agent sets before loading.
pub mod globals {
    /// Byte offset of `pid` in `struct task_struct`, found in the kernel's BTF at run time.
    pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
    /// Byte offset of `tgid` in `struct task_struct`.
    pub const TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
    /// Byte offset of `exit_code` in `struct task_struct`.
    pub const TASK_EXIT_CODE_OFFSET: &str = "TASK_EXIT_CODE_OFFSET";
    /// Offset of `__state` (or `state`) in `struct task_struct`.
    pub const TASK_STATE_OFFSET: &str = "TASK_STATE_OFFSET";
    /// Offset of `signal` in `struct task_struct`.
    pub const TASK_SIGNAL_OFFSET: &str = "TASK_SIGNAL_OFFSET";
    /// Offset of `live` in `struct signal_struct`.
    pub const SIGNAL_LIVE_OFFSET: &str = "SIGNAL_LIVE_OFFSET";
    /// Nonzero: read the switching-out thread's state from the task (no `prev_state` argument).
    pub const SWITCH_STATE_FROM_TASK: &str = "SWITCH_STATE_FROM_TASK";
    /// Nonzero: tell the group's end from `signal->live` (no `group_dead` argument).
    pub const GROUP_END_FROM_SIGNAL: &str = "GROUP_END_FROM_SIGNAL";
    /// Nonzero: walk the kernel stack at every off-CPU switch, not once per user stack.
    pub const KERNEL_STACK_EVERY_SWITCH: &str = "KERNEL_STACK_EVERY_SWITCH";
    /// Offset in `struct task_struct` of the user thread pointer the kernel keeps
    /// (`thread.fsbase` on x86_64): where a runtime's thread-local state is found.
    pub const TASK_TLS_BASE_OFFSET: &str = "TASK_TLS_BASE_OFFSET";
    /// The futex system call's number on this architecture, and the offsets in `struct pt_regs`
    /// of the system call number and its first two arguments (0: no futex addresses).
    pub const FUTEX_SYSCALL: &str = "FUTEX_SYSCALL";
    pub const PT_REGS_SYSCALL_OFFSET: &str = "PT_REGS_SYSCALL_OFFSET";
    pub const PT_REGS_ARG0_OFFSET: &str = "PT_REGS_ARG0_OFFSET";
    pub const PT_REGS_ARG1_OFFSET: &str = "PT_REGS_ARG1_OFFSET";
    /// Offset of `stack` in `struct task_struct`, and the size of a task's kernel stack.
    pub const TASK_STACK_OFFSET: &str = "TASK_STACK_OFFSET";
    pub const THREAD_SIZE: &str = "THREAD_SIZE";
    /// Nonzero: remember each thread's last user-stack walk per probe (`WALK_MEMOS`).
    pub const WALK_MEMO: &str = "WALK_MEMO";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), made only of integers, with no padding (see the module comment).
    unsafe impl aya::Pod for super::StackKey {}
    unsafe impl aya::Pod for super::FaultKey {}
    unsafe impl aya::Pod for super::OffCpuStart {}
    unsafe impl aya::Pod for super::OffCpuTotal {}
    unsafe impl aya::Pod for super::WakeKey {}
    unsafe impl aya::Pod for super::TaskRegs {}
    unsafe impl aya::Pod for super::Control {}
    unsafe impl aya::Pod for super::ExitInfo {}
    unsafe impl aya::Pod for super::unwind::UnwindRow {}
    unsafe impl aya::Pod for super::unwind::MappingEntry {}
    unsafe impl aya::Pod for super::unwind::ProcMappings {}
    unsafe impl aya::Pod for super::runtimes::RuntimeProc {}

    unsafe impl aya::Pod for super::unwind::UnwoundStack {}
}
