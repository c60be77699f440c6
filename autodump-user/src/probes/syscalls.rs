//! Where this architecture's `struct pt_regs` keeps a system call's number and first two
//! arguments, and the futex call's number: the probes read which futex a thread waits on.

use autodump_common::{FUTEX_CMD_MASK, FUTEX_WAITING_OPS as WAITING_OPS};

/// The futex word a thread in system call `nr` with these first arguments waits on; 0 if
/// it is not in a waiting futex call.
pub fn futex_waited(nr: i64, arg0: u64, arg1: u64) -> u64 {
    let cmd = arg1 & FUTEX_CMD_MASK;
    let waits = FUTEX != 0 && nr == i64::from(FUTEX) && cmd < 64 && WAITING_OPS & 1 << cmd != 0;
    if waits {
        arg0
    } else {
        0
    }
}

#[cfg(target_arch = "x86_64")]
mod arch {
    pub const FUTEX: u32 = 202;
    /// `orig_ax`, `di`, `si`.
    pub const PT_REGS_NR: u32 = 120;
    pub const PT_REGS_ARG0: u32 = 112;
    pub const PT_REGS_ARG1: u32 = 104;
}
#[cfg(target_arch = "aarch64")]
mod arch {
    pub const FUTEX: u32 = 98;
    /// `syscallno`, `orig_x0` (x0 holds the return value by then), `regs[1]`.
    pub const PT_REGS_NR: u32 = 280;
    pub const PT_REGS_ARG0: u32 = 272;
    pub const PT_REGS_ARG1: u32 = 8;
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod arch {
    /// Not known here: waits are not grouped by futex.
    pub const FUTEX: u32 = 0;
    pub const PT_REGS_NR: u32 = 0;
    pub const PT_REGS_ARG0: u32 = 0;
    pub const PT_REGS_ARG1: u32 = 0;
}
pub use arch::*;
