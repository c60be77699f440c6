//! Which futex a thread blocks on: read from the system call it is in as it switches out, so
//! that waits can be grouped by lock (a contended mutex, a condition variable).

use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, generated::bpf_task_pt_regs};

use crate::config::syscall_layout;

use autodump_common::{FUTEX_CMD_MASK, FUTEX_WAITING_OPS as WAITING_OPS};

/// The futex word the current thread waits on, if it is in a waiting futex call; else 0. Needs
/// `bpf_task_pt_regs` (5.15+): only the probes that walk with CFI (5.17+) call it.
#[inline(always)]
pub fn waited_on() -> u64 {
    let Some(layout) = syscall_layout() else {
        return 0;
    };
    // SAFETY: plain helper calls; `regs` is the current task's saved user registers, read with
    // bpf_probe_read_kernel.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let read = |offset: usize| bpf_probe_read_kernel(regs.add(offset) as *const u64);
        let (Ok(nr), Ok(addr), Ok(op)) = (read(layout.nr), read(layout.arg0), read(layout.arg1)) else {
            return 0;
        };
        let cmd = op & FUTEX_CMD_MASK;
        if nr != layout.futex || cmd >= 64 || WAITING_OPS & 1 << cmd == 0 {
            return 0;
        }
        addr
    }
}
