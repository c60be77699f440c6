//! A task iterator the agent runs when it starts watching a process: for each of its threads,
//! the state, the user registers it entered the kernel with, its system call and its kernel
//! stack. A thread blocked since before the probes were attached never switches, so `switch`
//! never sees it; this is how the agent takes its stacks. Loaded only where user stacks are
//! walked with CFI (5.17+: `bpf_task_pt_regs` is 5.15+).

use core::ffi::c_void;

use autodump_common::{TaskRegs, MAX_STACK_DEPTH};
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_task_stack, bpf_seq_write, bpf_task_pt_regs},
    },
    macros::map,
    maps::{Array, PerCpuArray},
};

use crate::{
    config::{field_u32, syscall_layout, TASK_PID_OFFSET, TASK_STATE_OFFSET, TASK_TGID_OFFSET},
    unwind::{PT_REGS_BP, PT_REGS_IP, PT_REGS_SP},
};

/// The process whose threads to report (entry 0), set by the agent before each run.
#[map]
static TASK_ITER_TARGET: Array<u32> = Array::with_max_entries(1, 0);

/// One record being built (too large for the BPF stack).
#[map]
static TASK_RECORD: PerCpuArray<TaskRegs> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
    session_id: u64,
    seq_num: u64,
}

/// The context of an `iter/task` program (`struct bpf_iter__task`); `task` is null at the end.
#[repr(C)]
pub struct IterTask {
    meta: *mut IterMeta,
    task: *mut u8,
}

#[no_mangle]
#[link_section = "iter/task"]
pub extern "C" fn task_regs(ctx: *mut IterTask) -> i32 {
    // SAFETY: the kernel passes a valid context; `task` is checked before use.
    let (meta, task) = unsafe { ((*ctx).meta, (*ctx).task) };
    if task.is_null() {
        return 0;
    }
    let target = TASK_ITER_TARGET.get(0).copied().unwrap_or(0);
    // SAFETY: `task` is a BTF-typed task_struct pointer, checked non-null.
    if target == 0 || unsafe { field_u32(task, &TASK_TGID_OFFSET) } != target {
        return 0;
    }
    let Some(record) = TASK_RECORD.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; the program cannot run twice at once on one CPU.
    let record = unsafe { &mut *record };
    // SAFETY: as above; the registers are read with bpf_probe_read_kernel.
    unsafe {
        record.tid = field_u32(task, &TASK_PID_OFFSET);
        record.state = field_u32(task, &TASK_STATE_OFFSET);
        let regs = bpf_task_pt_regs(task.cast()) as *const u8;
        let read = |offset: usize| bpf_probe_read_kernel(regs.add(offset) as *const u64).unwrap_or(0);
        record.ip = read(PT_REGS_IP);
        record.sp = read(PT_REGS_SP);
        record.bp = read(PT_REGS_BP);
        (record.syscall, record.arg0, record.arg1) = match syscall_layout() {
            Some(l) => (read(l.nr) as i64, read(l.arg0), read(l.arg1)),
            None => (-1, 0, 0),
        };
        let size = (MAX_STACK_DEPTH * 8) as u32;
        let written = bpf_get_task_stack(task.cast(), record.kernel.as_mut_ptr().cast(), size, 0);
        record.kernel_len = if written > 0 { (written / 8) as u32 } else { 0 };
        record.zero = 0;
        bpf_seq_write((*meta).seq.cast(), (record as *const TaskRegs).cast(), size_of::<TaskRegs>() as u32);
    }
    0
}
