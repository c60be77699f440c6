//! On-CPU sampling: a `cpu-clock` perf event on every CPU counts the target's samples per
//! (thread, user stack, kernel stack).

use autodump_common::{StackKey, Stat};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::perf_event, programs::PerfEventContext};
use aya_log_ebpf::warn;

use crate::{
    maps::{add, count, entry, generation, is_target},
    stacks::{stack_id, user_stack_id},
    unwind::WALK_ON_CPU,
};

/// User stacks by frame pointer, walked by the kernel.
#[perf_event]
pub fn on_cpu_sample(ctx: PerfEventContext) -> u32 {
    sample(&ctx, false)
}

/// User stacks walked with CFI rows (see `unwind`); loaded instead of `on_cpu_sample`.
#[perf_event]
pub fn on_cpu_unwind(ctx: PerfEventContext) -> u32 {
    sample(&ctx, true)
}

#[inline(always)]
fn sample(ctx: &PerfEventContext, unwind: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let gen = generation();
    let key = StackKey {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        user_stack_id: user_stack_id(ctx, &gen, unwind, WALK_ON_CPU, Stat::CpuUserStackErrors),
        kernel_stack_id: stack_id(ctx, &gen, 0, Stat::CpuKernelStackErrors),
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
                warn!(ctx, "on-CPU count map is full; further losses are counted in stats");
            }
        }
    }
    0
}
