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

use core::{
    ffi::c_long,
    intrinsics::{atomic_xadd, AtomicOrdering},
};

use autodump_common::{
    Control, ExitInfo, OffCpuStart, OffCpuTotal, StackKey, Stat, FLAG_RUNNABLE, OVERFLOW_SHARE, OVERFLOW_STACK_ID,
};
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
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
/// Offset of `tgid` in `struct task_struct`, from the kernel's BTF.
#[no_mangle]
static TASK_TGID_OFFSET: u32 = 0;
/// Offset of `exit_code` in `struct task_struct`, from the kernel's BTF.
#[no_mangle]
static TASK_EXIT_CODE_OFFSET: u32 = 0;
/// Nonzero: walk the kernel stack at every off-CPU switch instead of once per user stack and
/// generation (see `kernel_stack_for`).
#[no_mangle]
static KERNEL_STACK_EVERY_SWITCH: u32 = 0;

/// Default map sizes; the agent resizes them before load from its flags.
const STACK_SLOTS: u32 = 8192;
const COUNT_SLOTS: u32 = 16384;
const THREAD_SLOTS: u32 = 16384;

/// `bpf_get_stackid` found no frames on that side.
const EFAULT: i32 = 14;
/// `bpf_get_stackid`: the stack's slot holds another stack.
const EEXIST: i32 = 17;

/// `TASK_DEAD` in `task_struct::__state`: the thread is exiting and will never be switched in.
const TASK_DEAD: u32 = 0x80;

// Two generations of every aggregate; `CONTROL.epoch % 2` says which one the probes write.
#[map]
static STACKS_0: StackTrace = StackTrace::with_max_entries(STACK_SLOTS, 0);
#[map]
static STACKS_1: StackTrace = StackTrace::with_max_entries(STACK_SLOTS, 0);
/// Stacks whose slot in `STACKS_*` held another stack: see `OVERFLOW_STACK_ID`.
#[map]
static OVERFLOW_STACKS_0: StackTrace = StackTrace::with_max_entries(STACK_SLOTS / OVERFLOW_SHARE, 0);
#[map]
static OVERFLOW_STACKS_1: StackTrace = StackTrace::with_max_entries(STACK_SLOTS / OVERFLOW_SHARE, 0);
#[map]
static CPU_COUNTS_0: HashMap<StackKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
static CPU_COUNTS_1: HashMap<StackKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
static OFFCPU_TOTALS_0: HashMap<StackKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
static OFFCPU_TOTALS_1: HashMap<StackKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);
/// Off-CPU kernel stack id by (switch flags, user stack id), per generation: see `kernel_stack_for`.
#[map]
static KERNEL_STACK_CACHE_0: HashMap<u64, i32> = HashMap::with_max_entries(STACK_SLOTS, 0);
#[map]
static KERNEL_STACK_CACHE_1: HashMap<u64, i32> = HashMap::with_max_entries(STACK_SLOTS, 0);

/// Every thread of the target that has switched out since attach, by tid, until it exits:
/// where and when it last switched out (`start_ns` 0 while it runs).
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
    overflow_stacks: &'static StackTrace,
    cpu_counts: &'static HashMap<StackKey, u64>,
    offcpu_totals: &'static HashMap<StackKey, OffCpuTotal>,
    kernel_stack_cache: &'static HashMap<u64, i32>,
}

#[inline(always)]
fn generation() -> Generation {
    let epoch = CONTROL.get(0).map_or(0, |c| c.epoch);
    if epoch & 1 == 0 {
        Generation {
            epoch,
            stacks: &STACKS_0,
            overflow_stacks: &OVERFLOW_STACKS_0,
            cpu_counts: &CPU_COUNTS_0,
            offcpu_totals: &OFFCPU_TOTALS_0,
            kernel_stack_cache: &KERNEL_STACK_CACHE_0,
        }
    } else {
        Generation {
            epoch,
            stacks: &STACKS_1,
            overflow_stacks: &OVERFLOW_STACKS_1,
            cpu_counts: &CPU_COUNTS_1,
            offcpu_totals: &OFFCPU_TOTALS_1,
            kernel_stack_cache: &KERNEL_STACK_CACHE_1,
        }
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

/// The entry for `key`, created zeroed if absent: a lookup first, because the key usually exists
/// and a failed insert takes the bucket lock. Several CPUs may create the same key at once, so
/// the insert must not overwrite (`BPF_NOEXIST`). None when the map is full.
#[inline(always)]
fn entry<V: Default>(map: &HashMap<StackKey, V>, key: StackKey) -> Option<*mut V> {
    map.get_ptr_mut(key).or_else(|| {
        let _ = map.insert(key, V::default(), BPF_NOEXIST as u64);
        map.get_ptr_mut(key)
    })
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

/// The id of the current stack (user or kernel side, by `flags`) in this generation: in the
/// main stack map, or when its slot there holds another stack, in the overflow map.
#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, gen: &Generation, flags: u64, failed: Stat) -> i32 {
    let found = match ctx.get_stackid(gen.stacks, flags) {
        Err(err) if err == -EEXIST => ctx.get_stackid(gen.overflow_stacks, flags).map(|id| {
            count(Stat::OverflowStacks);
            id | OVERFLOW_STACK_ID as c_long
        }),
        other => other,
    };
    match found {
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
        user_stack_id: stack_id(&ctx, &gen, BPF_F_USER_STACK as u64, Stat::CpuUserStackErrors),
        kernel_stack_id: stack_id(&ctx, &gen, 0, Stat::CpuKernelStackErrors),
        stack_epoch: gen.epoch,
        flags: 0,
    };
    // Several CPUs may count the same key at once: add atomically.
    match entry(gen.cpu_counts, key) {
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

/// Reads a `u32` field of a task. A BTF tracepoint's task arguments are typed pointers, and the
/// offset is a constant to the verifier (a frozen read-only global), so this is one plain load
/// that the verifier checks against the kernel's BTF, not a helper call.
///
/// # Safety
/// `task` must be a `task_struct` argument of a BTF tracepoint and `offset` one of the globals
/// above, holding the offset of a 4-byte field.
#[inline(always)]
unsafe fn task_field(task: *const u8, offset: &'static u32) -> u32 {
    // SAFETY: per the contract above.
    unsafe { *(task.add(core::ptr::read_volatile(offset) as usize) as *const u32) }
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    // Most switches on a host are not the target's: they pay for two loads and two compares.
    // Arguments: 0 preempt, 1 prev, 2 next, 3 prev_state. `current` is still `prev` here.
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // SAFETY: `prev` and `next` are the tracepoint's task_struct arguments.
    let (prev_tgid, next_tgid) = unsafe { (task_field(prev, &TASK_TGID_OFFSET), task_field(next, &TASK_TGID_OFFSET)) };
    if is_target(prev_tgid) {
        let prev_state: u32 = ctx.arg(3);
        // SAFETY: as above.
        let tid = unsafe { task_field(prev, &TASK_PID_OFFSET) };
        if prev_state & TASK_DEAD == 0 {
            switch_out(&ctx, tid, prev_state, now_ns());
        } else {
            // The thread's last switch: free its slot.
            let _ = OFFCPU_START.remove(tid);
        }
    }
    if next_tgid == target_tgid() {
        // SAFETY: as above.
        switch_in(&ctx, unsafe { task_field(next, &TASK_PID_OFFSET) });
    }
    0
}

#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, tid: u32, prev_state: u32, now: u64) {
    let gen = generation();
    let flags = if prev_state == 0 { FLAG_RUNNABLE } else { 0 };
    let user_stack_id = stack_id(ctx, &gen, BPF_F_USER_STACK as u64, Stat::OffCpuUserStackErrors);
    let start = OffCpuStart {
        start_ns: now,
        user_stack_id,
        kernel_stack_id: kernel_stack_for(ctx, &gen, user_stack_id, flags),
        stack_epoch: gen.epoch,
        flags,
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
    // SAFETY: a plain read of a global the loader filled in.
    let every_switch = unsafe { core::ptr::read_volatile(&KERNEL_STACK_EVERY_SWITCH) } != 0;
    if every_switch || user_stack_id < 0 {
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
    // SAFETY: `task` is the tracepoint's task_struct argument.
    let exit_code = unsafe { task_field(task, &TASK_EXIT_CODE_OFFSET) };
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
