//! Page faults: a software `page-faults` perf event on every CPU runs this probe every Nth fault
//! (N prime: see `--fault-period`), which counts the target's per (thread, user stack, kernel
//! stack, faulting page). A fault is where a process first touches memory, so this is where its
//! resident size grows, whatever the language or allocator. The agent tells from the page which
//! kind of memory it is (heap, anonymous, file, stack), against the target's memory map: asking
//! the kernel here (`bpf_find_vma`) cost 12 µs a fault, six times the rest of the probe.

use autodump_common::{FaultKey, StackKey, Stat};
use aya_ebpf::{
    bindings::bpf_perf_event_data, helpers::bpf_get_current_pid_tgid, macros::perf_event, programs::PerfEventContext,
    EbpfContext,
};
use aya_log_ebpf::warn;

use crate::{
    maps::{add, count, entry, generation, is_target},
    stacks::{stack_id, user_stack_id},
    unwind::WALK_FAULT,
};

const PAGE_SHIFT: u64 = 12;

/// User stacks by frame pointer, walked by the kernel.
#[perf_event]
pub fn fault_sample(ctx: PerfEventContext) -> u32 {
    fault(&ctx, false)
}

/// User stacks walked with CFI rows (see `unwind`); loaded instead of `fault_sample`.
#[perf_event]
pub fn fault_unwind(ctx: PerfEventContext) -> u32 {
    fault(&ctx, true)
}

#[inline(always)]
fn fault(ctx: &PerfEventContext, unwind: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: a perf event program's context is `bpf_perf_event_data`; `addr` is the faulting
    // address the software event was raised with.
    let address = unsafe { (*(ctx.as_ptr() as *const bpf_perf_event_data)).addr };
    let gen = generation();
    let stack = StackKey {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        user_stack_id: user_stack_id(ctx, &gen, unwind, WALK_FAULT, Stat::FaultUserStackErrors),
        kernel_stack_id: stack_id(ctx, &gen, 0, Stat::FaultKernelStackErrors),
        stack_epoch: gen.epoch,
        flags: 0,
    };
    match entry(gen.fault_counts, FaultKey { stack, page: address >> PAGE_SHIFT }) {
        Some(value) => {
            // SAFETY: `value` points into the map entry, which outlives this program run.
            unsafe { add(value, 1) };
            count(Stat::FaultSamples);
        }
        None => {
            if count(Stat::FaultCountsFull) {
                warn!(ctx, "page-fault count map is full; further losses are counted in stats");
            }
        }
    }
    0
}
