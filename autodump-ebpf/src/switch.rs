//! Off-CPU accounting at `sched_switch`: when a target thread switches out, keep where (its
//! stacks) and when; when it switches back in, add the time to that stack's total.

use autodump_common::{OffCpuStart, Stat, FLAG_RUNNABLE};
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use aya_log_ebpf::warn;

use crate::{
    config::{
        field_u32, kernel_stack_every_switch, switch_state_from_task, TASK_PID_OFFSET, TASK_STATE_OFFSET,
        TASK_TGID_OFFSET,
    },
    maps::{add, count, entry, generation, is_target, now_ns, Generation, OFFCPU_START},
    stacks::{stack_id, user_stack_id},
    unwind::WALK_SWITCH,
};

/// `TASK_DEAD` in the task's state: the thread is exiting and will never be switched in.
const TASK_DEAD: u32 = 0x80;

/// User stacks by frame pointer, walked by the kernel.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    on_switch(&ctx, false)
}

/// User stacks walked with CFI rows (see `unwind`); loaded instead of `sched_switch`.
#[btf_tracepoint(function = "sched_switch")]
pub fn switch_unwind(ctx: BtfTracePointContext) -> u32 {
    on_switch(&ctx, true)
}

#[inline(always)]
fn on_switch(ctx: &BtfTracePointContext, unwind: bool) -> u32 {
    // Most switches on a host are not a watched process's: they pay for two task loads and two
    // filter reads.
    // Arguments: 0 preempt, 1 prev, 2 next, 3 prev_state. `current` is still `prev` here.
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // SAFETY: `prev` and `next` are the tracepoint's task_struct arguments.
    let (prev_tgid, next_tgid) = unsafe { (field_u32(prev, &TASK_TGID_OFFSET), field_u32(next, &TASK_TGID_OFFSET)) };
    if is_target(prev_tgid) {
        let prev_state: u32 = if switch_state_from_task() {
            // SAFETY: as above.
            unsafe { field_u32(prev, &TASK_STATE_OFFSET) }
        } else {
            ctx.arg(3)
        };
        // A preempted thread is still runnable whatever its state says (it may have been about
        // to sleep); only a thread that gave up the CPU with a sleeping state is blocked.
        let preempted = ctx.arg::<u64>(0) & 0xff != 0;
        // SAFETY: as above.
        let tid = unsafe { field_u32(prev, &TASK_PID_OFFSET) };
        if prev_state & TASK_DEAD == 0 {
            switch_out(ctx, prev_tgid, tid, preempted || prev_state == 0, now_ns(), unwind);
        } else {
            // The thread's last switch: free its slot.
            let _ = OFFCPU_START.remove(tid);
        }
    }
    if is_target(next_tgid) {
        // SAFETY: as above.
        switch_in(ctx, unsafe { field_u32(next, &TASK_PID_OFFSET) });
    }
    0
}

#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, tgid: u32, tid: u32, runnable: bool, now: u64, unwind: bool) {
    let gen = generation();
    let flags = if runnable { FLAG_RUNNABLE } else { 0 };
    let user_stack_id = user_stack_id(ctx, &gen, unwind, WALK_SWITCH, Stat::OffCpuUserStackErrors);
    let start = OffCpuStart {
        start_ns: now,
        user_stack_id,
        kernel_stack_id: kernel_stack_for(ctx, &gen, user_stack_id, flags),
        stack_epoch: gen.epoch,
        flags,
        tgid,
        zero: 0,
        futex: if unwind && !runnable { crate::futex::waited_on() } else { 0 },
    };
    // A thread keeps its slot while it lives, rewritten in place: an insert or delete at every
    // switch would take the bucket lock twice. `start_ns` goes last, as it marks the slot in use.
    let stored = match OFFCPU_START.get_ptr_mut(tid) {
        Some(slot) => {
            // SAFETY: the slot is this thread's; only its own switches write it, one at a time.
            unsafe {
                core::ptr::write_volatile(slot, OffCpuStart { start_ns: 0, ..start });
                core::ptr::write_volatile(&raw mut (*slot).start_ns, now);
            }
            true
        }
        None => OFFCPU_START.insert(tid, start, 0).is_ok(),
    };
    if stored {
        count(Stat::OffCpuSwitches);
    } else if count(Stat::OffCpuStartFull) {
        warn!(ctx, "off-CPU thread map is full; further losses are counted in stats");
    }
}

/// The kernel stack of a switch-out. Walking it costs about three times the user stack and the
/// map updates together, and a thread that blocks at the same user stack (which ends at the
/// same syscall instruction) almost always blocks on the same kernel path. So by default the
/// kernel stack is walked once per (user stack, runnable or not) and generation, and reused;
/// the agent says so in every summary, and `--offcpu-kernel-stacks every-switch` turns it off.
#[inline(always)]
fn kernel_stack_for(ctx: &BtfTracePointContext, gen: &Generation, user_stack_id: i32, flags: u32) -> i32 {
    if kernel_stack_every_switch() || user_stack_id < 0 {
        return stack_id(ctx, gen, 0, Stat::OffCpuKernelStackErrors);
    }
    let cache_key = (flags as u64) << 32 | user_stack_id as u64;
    // SAFETY: the value is copied out at once.
    if let Some(id) = unsafe { gen.kernel_stack_cache.get(cache_key) } {
        return *id;
    }
    let id = stack_id(ctx, gen, 0, Stat::OffCpuKernelStackErrors);
    if id >= 0 {
        // A full cache only means the next switch here walks again.
        let _ = gen.kernel_stack_cache.insert(cache_key, id, 0);
    }
    id
}

#[inline(always)]
fn switch_in(ctx: &BtfTracePointContext, tid: u32) {
    let Some(slot) = OFFCPU_START.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: the slot is this thread's (see `switch_out`); it is copied, then marked free.
    let start = unsafe { core::ptr::read_volatile(slot) };
    if !start.is_blocked() {
        return;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&raw mut (*slot).start_ns, 0) };
    let now = now_ns();
    if now < start.start_ns {
        return;
    }
    let gen = generation();
    let key = start.key(tid);
    match entry(gen.offcpu_totals, key) {
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

/// Measurement only, never attached unless asked (`--bench-empty-probe`, used by `cargo xtask
/// bench`): a sched_switch program that does nothing, so that the kernel's own per-run
/// accounting can be told apart from the cost of `sched_switch` on the same events.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_empty(_ctx: BtfTracePointContext) -> u32 {
    0
}
