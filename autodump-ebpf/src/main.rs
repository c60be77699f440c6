//! autodump's kernel side: count on-CPU samples and off-CPU time of one process per stack.
//!
//! Small on purpose: filter by tgid, build a key, take stack ids, add to a counter. Everything
//! else (draining, symbolizing, formatting) happens in the agent. Every event that cannot be
//! recorded is counted in `STATS`.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add` (no CAS before v3); the intrinsic lowers to BPF_XADD.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use autodump_common::{Control, ExitInfo, OffCpuStart, OffCpuTotal, StackKey, Stat, FLAG_RUNNABLE};
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, perf_event},
    maps::{Array, HashMap, PerCpuArray, StackTrace},
    programs::{tracing::StackIdContext, BtfTracePointContext, PerfEventContext},
};
use aya_log_ebpf::warn;

/// The process to profile. Set by the agent before load.
#[no_mangle]
static TARGET_TGID: u32 = 0;
/// Offset of `pid` in `struct task_struct`, from the kernel's BTF (Rust eBPF has no CO-RE).
#[no_mangle]
static TASK_PID_OFFSET: u32 = 0;
/// Offset of `exit_code` in `struct task_struct`, from the kernel's BTF.
#[no_mangle]
static TASK_EXIT_CODE_OFFSET: u32 = 0;

/// Default map sizes; the agent resizes them before load from its flags.
const STACK_SLOTS: u32 = 8192;
const COUNT_SLOTS: u32 = 16384;
const THREAD_SLOTS: u32 = 16384;

/// `bpf_get_stackid` found no frames on that side.
const EFAULT: i32 = 14;

/// `TASK_DEAD` in `task_struct::__state`: the thread is exiting and will never be switched in.
const TASK_DEAD: u32 = 0x80;

// Two generations of every aggregate; `CONTROL.epoch % 2` says which one the probes write.
#[map]
static STACKS_0: StackTrace = StackTrace::with_max_entries(STACK_SLOTS, 0);
#[map]
static STACKS_1: StackTrace = StackTrace::with_max_entries(STACK_SLOTS, 0);
#[map]
static CPU_COUNTS_0: HashMap<StackKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
static CPU_COUNTS_1: HashMap<StackKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
static OFFCPU_TOTALS_0: HashMap<StackKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
static OFFCPU_TOTALS_1: HashMap<StackKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);

/// Threads of the target that are switched out, by tid.
#[map]
static OFFCPU_START: HashMap<u32, OffCpuStart> = HashMap::with_max_entries(THREAD_SLOTS, 0);
#[map]
static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
/// How the target ended: written once, by its last thread's exit.
#[map]
static EXIT: Array<ExitInfo> = Array::with_max_entries(1, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

struct Generation {
    epoch: u32,
    stacks: &'static StackTrace,
    cpu_counts: &'static HashMap<StackKey, u64>,
    offcpu_totals: &'static HashMap<StackKey, OffCpuTotal>,
}

#[inline(always)]
fn generation() -> Generation {
    let epoch = CONTROL.get(0).map_or(0, |c| c.epoch);
    if epoch & 1 == 0 {
        Generation { epoch, stacks: &STACKS_0, cpu_counts: &CPU_COUNTS_0, offcpu_totals: &OFFCPU_TOTALS_0 }
    } else {
        Generation { epoch, stacks: &STACKS_1, cpu_counts: &CPU_COUNTS_1, offcpu_totals: &OFFCPU_TOTALS_1 }
    }
}

/// Adds one to a stat slot; returns true the first time on this CPU, so callers can log once.
#[inline(always)]
fn count(stat: Stat) -> bool {
    match STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a valid per-CPU slot; probes do not nest on one CPU.
        Some(slot) => unsafe {
            *slot += 1;
            *slot == 1
        },
        None => false,
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// Atomic add into a map value that other CPUs may update at the same time.
///
/// # Safety
/// `dst` must point into a live map value.
#[inline(always)]
unsafe fn add(dst: *mut u64, n: u64) {
    // SAFETY: per the contract above.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, n) };
}

#[inline(always)]
fn target_tgid() -> u32 {
    // SAFETY: a plain read of a global the loader filled in.
    unsafe { core::ptr::read_volatile(&TARGET_TGID) }
}

/// True for the target's threads, and only while the target lives: once its last thread has
/// exited, a new process that reuses the pid is never recorded (the agent may notice the exit
/// only at its next tick). Non-target events return at the first compare.
#[inline(always)]
fn is_target(tgid: u32) -> bool {
    tgid == target_tgid() && EXIT.get(0).is_none_or(|e| e.seen == 0)
}

#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, stacks: &StackTrace, flags: u64, failed: Stat) -> i32 {
    match ctx.get_stackid(stacks, flags) {
        Ok(id) => id as i32,
        Err(err) => {
            // -EFAULT only means there was nothing to walk (no kernel frames in user mode).
            if err != -EFAULT {
                count(failed);
            }
            err
        }
    }
}

#[perf_event]
pub fn on_cpu_sample(ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let gen = generation();
    let key = StackKey {
        tid: pid_tgid as u32,
        user_stack_id: stack_id(&ctx, gen.stacks, BPF_F_USER_STACK as u64, Stat::CpuUserStackErrors),
        kernel_stack_id: stack_id(&ctx, gen.stacks, 0, Stat::CpuKernelStackErrors),
        stack_epoch: gen.epoch,
        flags: 0,
    };
    // Insert-if-absent then add atomically: several CPUs may count the same key at once.
    let _ = gen.cpu_counts.insert(key, 0, BPF_NOEXIST as u64);
    match gen.cpu_counts.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: `value` points into the map entry, which outlives this program run.
            unsafe { add(value, 1) };
            count(Stat::CpuSamples);
        }
        None => {
            if count(Stat::CpuCountsFull) {
                warn!(&ctx, "on-CPU count map is full; further losses are counted in stats");
            }
        }
    }
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    // Most switches on a host are not the target's: they pay for one compare and one lookup.
    // Arguments: 0 preempt, 1 prev, 2 next, 3 prev_state. `current` is still `prev` here.
    let prev_state: u32 = ctx.arg(3);
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_target((pid_tgid >> 32) as u32) && prev_state & TASK_DEAD == 0 {
        switch_out(&ctx, pid_tgid as u32, prev_state, now_ns());
    }
    let next: *const u8 = ctx.arg(2);
    // SAFETY: `next` is a valid task_struct; the offset comes from the kernel's own BTF.
    let next_offset = unsafe { core::ptr::read_volatile(&TASK_PID_OFFSET) } as usize;
    if let Ok(next_tid) = unsafe { bpf_probe_read_kernel(next.add(next_offset) as *const u32) } {
        switch_in(&ctx, next_tid);
    }
    0
}

#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, tid: u32, prev_state: u32, now: u64) {
    let gen = generation();
    let start = OffCpuStart {
        start_ns: now,
        user_stack_id: stack_id(ctx, gen.stacks, BPF_F_USER_STACK as u64, Stat::OffCpuUserStackErrors),
        kernel_stack_id: stack_id(ctx, gen.stacks, 0, Stat::OffCpuKernelStackErrors),
        stack_epoch: gen.epoch,
        flags: if prev_state == 0 { FLAG_RUNNABLE } else { 0 },
    };
    if OFFCPU_START.insert(tid, start, 0).is_ok() {
        count(Stat::OffCpuSwitches);
    } else if count(Stat::OffCpuStartFull) {
        warn!(ctx, "off-CPU thread map is full; further losses are counted in stats");
    }
}

#[inline(always)]
fn switch_in(ctx: &BtfTracePointContext, tid: u32) {
    // SAFETY: the entry is read once and copied; it is deleted below.
    let Some(start) = (unsafe { OFFCPU_START.get(tid) }).copied() else {
        return;
    };
    let _ = OFFCPU_START.remove(tid);
    let now = now_ns();
    if now < start.start_ns {
        return;
    }
    let gen = generation();
    let key = start.key(tid);
    let _ = gen.offcpu_totals.insert(key, OffCpuTotal::default(), BPF_NOEXIST as u64);
    match gen.offcpu_totals.get_ptr_mut(key) {
        Some(total) => {
            // SAFETY: points into the map entry; only this thread's switch-in adds to its key.
            unsafe {
                add(&raw mut (*total).total_ns, now - start.start_ns);
                add(&raw mut (*total).count, 1);
            }
        }
        None => {
            if count(Stat::OffCpuTotalsFull) {
                warn!(ctx, "off-CPU totals map is full; further losses are counted in stats");
            }
        }
    }
}

/// The last thread of the target exits: keep its exit code (signal or status) for the agent.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(ctx: BtfTracePointContext) -> u32 {
    // Arguments: 0 the exiting task (also `current`), 1 group_dead.
    let group_dead: u64 = ctx.arg(1);
    // Only the target's own end: a later process reusing its pid must not overwrite it.
    if !is_target((bpf_get_current_pid_tgid() >> 32) as u32) || group_dead & 0xff == 0 {
        return 0;
    }
    let task: *const u8 = ctx.arg(0);
    // SAFETY: `task` is a valid task_struct; the offset comes from the kernel's own BTF.
    let offset = unsafe { core::ptr::read_volatile(&TASK_EXIT_CODE_OFFSET) } as usize;
    let exit_code = unsafe { bpf_probe_read_kernel(task.add(offset) as *const u32) }.unwrap_or(0);
    let _ = EXIT.set(0, ExitInfo { exit_code, seen: 1 }, 0);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
