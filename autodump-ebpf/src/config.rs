//! Read-only globals the agent sets before load, from its flags and the kernel's BTF. The
//! verifier sees each as a constant (a frozen read-only map), so a branch on one is decided at
//! load time and the branch not taken is never checked: a kernel that lacks a tracepoint
//! argument never sees the read of it.

/// Offset of `pid` in `struct task_struct`, from the kernel's BTF (Rust eBPF has no CO-RE).
#[no_mangle]
pub static TASK_PID_OFFSET: u32 = 0;
/// Offset of `tgid` in `struct task_struct`, from the kernel's BTF.
#[no_mangle]
pub static TASK_TGID_OFFSET: u32 = 0;
/// Offset of `exit_code` in `struct task_struct`, from the kernel's BTF.
#[no_mangle]
pub static TASK_EXIT_CODE_OFFSET: u32 = 0;
/// Offset of `__state` (5.14+) or `state` in `struct task_struct`.
#[no_mangle]
pub static TASK_STATE_OFFSET: u32 = 0;
/// Offset of `signal` in `struct task_struct`.
#[no_mangle]
pub static TASK_SIGNAL_OFFSET: u32 = 0;
/// Offset of `live` in `struct signal_struct`.
#[no_mangle]
pub static SIGNAL_LIVE_OFFSET: u32 = 0;
/// Offset in `struct task_struct` of the user thread pointer the kernel keeps
/// (`thread.fsbase` on x86_64), from the kernel's BTF: where thread-local data is found.
#[no_mangle]
pub static TASK_TLS_BASE_OFFSET: u32 = 0;
/// Nonzero: `sched_switch` has no `prev_state` argument (before 5.18); read the task's state.
#[no_mangle]
static SWITCH_STATE_FROM_TASK: u32 = 0;
/// Nonzero: `sched_process_exit` has no `group_dead` argument; read `task->signal->live`.
#[no_mangle]
static GROUP_END_FROM_SIGNAL: u32 = 0;
/// Nonzero: walk the kernel stack at every off-CPU switch instead of once per user stack and
/// generation (see `switch::kernel_stack_for`).
#[no_mangle]
static KERNEL_STACK_EVERY_SWITCH: u32 = 0;
/// The futex system call's number (0: futex addresses are not read), and where `struct pt_regs`
/// keeps the system call number and its first two arguments: set by the agent for its
/// architecture.
#[no_mangle]
static FUTEX_SYSCALL: u32 = 0;
#[no_mangle]
static PT_REGS_SYSCALL_OFFSET: u32 = 0;
#[no_mangle]
static PT_REGS_ARG0_OFFSET: u32 = 0;
#[no_mangle]
static PT_REGS_ARG1_OFFSET: u32 = 0;

/// Offset of `stack` in `struct task_struct`, and the size of the kernel stack it points to.
#[no_mangle]
pub static TASK_STACK_OFFSET: u32 = 0;
#[no_mangle]
static THREAD_SIZE: u32 = 16384;

/// True when the probe runs on another stack than the current task's: in an interrupt (x86_64
/// and arm64 run hard and soft interrupts on per-CPU stacks of their own), where the current
/// task is only what was interrupted.
#[inline(always)]
pub fn in_interrupt() -> bool {
    if read(&TASK_STACK_OFFSET) == 0 {
        return false;
    }
    // Where this program's stack is, as a number: read back through a helper, since the
    // verifier of kernels before 6.18 rejects arithmetic on a stack pointer (6.12 did).
    let marker = 0u64;
    let here_ptr: *const u64 = core::ptr::addr_of!(marker);
    // SAFETY: plain helper calls; the first reads a pointer this program just stored on its own
    // stack, the second a pointer field of the current task (a BTF pointer).
    let (here, stack) = unsafe {
        let here = aya_ebpf::helpers::bpf_probe_read_kernel(core::ptr::addr_of!(here_ptr) as *const u64);
        let task = aya_ebpf::helpers::bpf_get_current_task_btf() as *const u8;
        let stack = aya_ebpf::helpers::bpf_probe_read_kernel(task.add(read(&TASK_STACK_OFFSET) as usize) as *const u64);
        (here, stack)
    };
    let (Ok(here), Ok(stack)) = (here, stack) else {
        return false;
    };
    here.wrapping_sub(stack) >= read(&THREAD_SIZE) as u64
}

/// Where to read a blocked thread's system call, if the agent set it.
pub struct SyscallLayout {
    pub futex: u64,
    pub nr: usize,
    pub arg0: usize,
    pub arg1: usize,
}

#[inline(always)]
pub fn syscall_layout() -> Option<SyscallLayout> {
    let futex = read(&FUTEX_SYSCALL);
    (futex != 0).then(|| SyscallLayout {
        futex: futex as u64,
        nr: read(&PT_REGS_SYSCALL_OFFSET) as usize,
        arg0: read(&PT_REGS_ARG0_OFFSET) as usize,
        arg1: read(&PT_REGS_ARG1_OFFSET) as usize,
    })
}

#[inline(always)]
fn read(global: &'static u32) -> u32 {
    // SAFETY: a plain read of a global the loader filled in.
    unsafe { core::ptr::read_volatile(global) }
}

/// The current thread's user thread pointer (its TLS base), as the kernel keeps it; None where
/// the agent found no such field.
#[inline(always)]
pub fn thread_pointer() -> Option<u64> {
    let offset = read(&TASK_TLS_BASE_OFFSET);
    if offset == 0 {
        return None;
    }
    // SAFETY: plain helper calls; the task is the current one, read with bpf_probe_read_kernel.
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task_btf() as *const u8;
        aya_ebpf::helpers::bpf_probe_read_kernel(task.add(offset as usize) as *const u64).ok()
    }
}

#[inline(always)]
pub fn switch_state_from_task() -> bool {
    read(&SWITCH_STATE_FROM_TASK) != 0
}

#[inline(always)]
pub fn group_end_from_signal() -> bool {
    read(&GROUP_END_FROM_SIGNAL) != 0
}

#[inline(always)]
pub fn kernel_stack_every_switch() -> bool {
    read(&KERNEL_STACK_EVERY_SWITCH) != 0
}

/// Reads a `u32` field of a kernel object. A BTF tracepoint's task arguments are typed pointers,
/// and the offset is a constant to the verifier, so this is one plain load that the verifier
/// checks against the kernel's BTF, not a helper call.
///
/// # Safety
/// `object` must be a BTF-typed pointer (a tracepoint's `task_struct` argument, or a pointer
/// read from one) and `offset` one of the globals above, the offset of a 4-byte field in it.
#[inline(always)]
pub unsafe fn field_u32(object: *const u8, offset: &'static u32) -> u32 {
    // SAFETY: per the contract above.
    unsafe { *(object.add(read(offset) as usize) as *const u32) }
}

/// Reads a pointer field of a kernel object, under the same contract as [`field_u32`].
///
/// # Safety
/// As [`field_u32`], for an 8-byte pointer field.
#[inline(always)]
pub unsafe fn field_ptr(object: *const u8, offset: &'static u32) -> *const u8 {
    // SAFETY: per the contract above.
    unsafe { *(object.add(read(offset) as usize) as *const *const u8) }
}
