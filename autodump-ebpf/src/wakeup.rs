//! Who woke a blocked thread: at `sched_waking` of a target thread that `switch` saw block, add
//! its blocked time so far to a total keyed by its blocked stack and the waker's stacks. The
//! waker is the current thread (the tracepoint runs in the context that wakes), or an interrupt
//! (which the agent tells from the kernel stack).

use autodump_common::{Stat, WakeKey, FLAG_RUNNABLE};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use aya_log_ebpf::warn;

use crate::{
    config::{field_u32, TASK_PID_OFFSET, TASK_TGID_OFFSET},
    maps::{add, count, entry, generation, is_target, now_ns, OFFCPU_START},
    stacks::{stack_id, user_stack_id},
    unwind::WALK_WAKE,
};

/// What a stack id says for a stack not taken: nothing to walk (see `stacks`).
const NOT_TAKEN: i32 = -14;

/// The waker's user stack by frame pointer, walked by the kernel.
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking(ctx: BtfTracePointContext) -> u32 {
    on_waking(&ctx, false)
}

/// The waker's user stack walked with CFI rows (see `unwind`); loaded instead of `sched_waking`.
#[btf_tracepoint(function = "sched_waking")]
pub fn waking_unwind(ctx: BtfTracePointContext) -> u32 {
    on_waking(&ctx, true)
}

#[inline(always)]
fn on_waking(ctx: &BtfTracePointContext, unwind: bool) -> u32 {
    // Every wake-up on the host comes here: most are answered by one task load and the filter.
    let woken: *const u8 = ctx.arg(0);
    // SAFETY: `woken` is the tracepoint's task_struct argument.
    let tgid = unsafe { field_u32(woken, &TASK_TGID_OFFSET) };
    if !is_target(tgid) {
        return 0;
    }
    // SAFETY: as above.
    let tid = unsafe { field_u32(woken, &TASK_PID_OFFSET) };
    let Some(slot) = OFFCPU_START.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: a copy of the thread's slot; `switch` rewrites it only when the thread runs.
    let start = unsafe { core::ptr::read_volatile(slot) };
    let now = now_ns();
    // A thread woken before it switched out (it still runs) or preempted (never asleep) has no
    // blocked time.
    if !start.is_blocked() || start.flags & FLAG_RUNNABLE != 0 || now < start.start_ns {
        return 0;
    }
    let gen = generation();
    let waker = bpf_get_current_pid_tgid();
    let (waker_tgid, waker_tid) = ((waker >> 32) as u32, waker as u32);
    let waker_user_stack_id = match waker_tgid != 0 && is_target(waker_tgid) {
        true => user_stack_id(ctx, &gen, unwind, WALK_WAKE, Stat::WakerUserStackErrors),
        false => NOT_TAKEN,
    };
    let key = WakeKey {
        blocked: start.key(tid),
        futex: start.futex,
        waker_tgid,
        waker_tid,
        waker_user_stack_id,
        waker_kernel_stack_id: stack_id(ctx, &gen, 0, Stat::WakerKernelStackErrors),
        waker_epoch: gen.epoch,
        zero: 0,
        waker_comm: bpf_get_current_comm().unwrap_or_default(),
    };
    match entry(gen.wakeup_totals, key) {
        Some(total) => {
            // SAFETY: points into the map entry; other CPUs may add to it too (atomic adds).
            unsafe {
                add(&raw mut (*total).total_ns, now - start.start_ns);
                add(&raw mut (*total).count, 1);
            }
            count(Stat::Wakeups);
        }
        None => {
            if count(Stat::WakeupTotalsFull) {
                warn!(ctx, "wake-up totals map is full; further losses are counted in stats");
            }
        }
    }
    0
}
