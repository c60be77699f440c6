//! Who woke a blocked thread: at `sched_waking` of a target thread that `switch` saw block, add
//! its blocked time so far to a total keyed by its blocked stack and the waker's stacks. The
//! waker is the current thread (the tracepoint runs in the context that wakes), or an interrupt
//! (which the agent tells from the kernel stack).

use autodump_common::{Stat, WakeKey, FLAG_RUNNABLE, WAKER_INTERRUPT};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_comm},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use aya_log_ebpf::warn;

use crate::{
    config::{field_u32, in_interrupt, TASK_PID_OFFSET, TASK_TGID_OFFSET},
    maps::{add, count, entry, generation, is_target, now_ns, Generation, OFFCPU_START},
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
    let interrupt = in_interrupt();
    // A thread of the woken one's process, in its own context: its user stack (the CFI walk
    // needs its process's tables), and its kernel path, walked once per user stack and
    // generation (the same call site wakes by the same path).
    let (waker_user_stack_id, waker_kernel_stack_id) = match !interrupt && waker_tgid == tgid {
        true => {
            let user = user_stack_id(ctx, &gen, unwind, WALK_WAKE, Stat::WakerUserStackErrors);
            (user, cached_kernel_stack(ctx, &gen, user))
        }
        false => (NOT_TAKEN, stack_id(ctx, &gen, 0, Stat::WakerKernelStackErrors)),
    };
    // The raw helper: aya's wrapper, compiled as a function of its own that returns through a
    // pointer, is a global function 5.10's verifier rejects ("arg#0 type is not a struct").
    let mut waker_comm = [0u8; 16];
    // SAFETY: a plain helper call into a buffer of its size.
    unsafe { bpf_get_current_comm(waker_comm.as_mut_ptr().cast(), waker_comm.len() as u32) };
    let key = WakeKey {
        blocked: start.key(tid),
        futex: start.futex,
        waker_tgid,
        waker_tid,
        waker_user_stack_id,
        waker_kernel_stack_id,
        waker_epoch: gen.epoch,
        waker_flags: if interrupt { WAKER_INTERRUPT } else { 0 },
        waker_comm,
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

/// Marks a waker's entries in the kernel stack cache apart from the switch's.
const WAKER_CACHE_BIT: u64 = 1 << 63;

/// The waker's kernel stack id, walked once per (user stack, generation) and reused: walking it
/// costs about three times the rest of the probe.
#[inline(always)]
fn cached_kernel_stack(ctx: &BtfTracePointContext, gen: &Generation, user_stack_id: i32) -> i32 {
    if user_stack_id < 0 {
        return stack_id(ctx, gen, 0, Stat::WakerKernelStackErrors);
    }
    let cache_key = WAKER_CACHE_BIT | user_stack_id as u32 as u64;
    // SAFETY: the value is copied out at once.
    if let Some(id) = unsafe { gen.kernel_stack_cache.get(cache_key) } {
        return *id;
    }
    let id = stack_id(ctx, gen, 0, Stat::WakerKernelStackErrors);
    if id >= 0 {
        let _ = gen.kernel_stack_cache.insert(cache_key, id, 0);
    }
    id
}
