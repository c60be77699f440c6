//! A watched process's end: its last thread's exit code (a signal or a status), for the exit
//! bundle; and the process leaves the watched set.

use autodump_common::ExitInfo;
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    config::{
        field_ptr, field_u32, group_end_from_signal, SIGNAL_LIVE_OFFSET, TASK_EXIT_CODE_OFFSET, TASK_SIGNAL_OFFSET,
    },
    maps::{is_target, EXITS, TARGETS},
};

/// The last thread of the target exits: keep its exit code (signal or status) for the agent.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(ctx: BtfTracePointContext) -> u32 {
    // Only a watched process's own end: a later process reusing its pid is not watched.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    // Arguments: 0 the exiting task (also `current`), and since 6.13 or so 1 group_dead.
    let task: *const u8 = ctx.arg(0);
    let group_dead = if group_end_from_signal() {
        // `do_exit` counts `signal->live` down before this tracepoint, so the last thread sees
        // 0. Threads ending together may all see 0; they share the group's exit code then.
        // SAFETY: `task` is the tracepoint's task_struct argument; `signal` is its own.
        unsafe { field_u32(field_ptr(task, &TASK_SIGNAL_OFFSET), &SIGNAL_LIVE_OFFSET) == 0 }
    } else {
        ctx.arg::<u64>(1) & 0xff != 0
    };
    if !group_dead {
        return 0;
    }
    // SAFETY: `task` is the tracepoint's task_struct argument.
    let exit_code = unsafe { field_u32(task, &TASK_EXIT_CODE_OFFSET) };
    let _ = EXITS.insert(tgid, ExitInfo { exit_code, seen: 1 }, 0);
    let _ = TARGETS.remove(tgid);
    0
}
