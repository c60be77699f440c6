//! Taking a stack id: the kernel's walk (with the overflow map for collisions) for kernel stacks
//! and frame-pointer user stacks, or the CFI walk (`unwind`) for user stacks.

use core::ffi::c_long;

use autodump_common::{Stat, OVERFLOW_STACK_ID};
use aya_ebpf::programs::tracing::StackIdContext;

use crate::maps::{count, Generation};

/// `bpf_get_stackid` found no frames on that side.
const EFAULT: i32 = 14;
/// `bpf_get_stackid`: the stack's slot holds another stack.
const EEXIST: i32 = 17;

/// The id of the current stack (user or kernel side, by `flags`) in this generation: in the
/// main stack map, or when its slot there holds another stack, in the overflow map.
#[inline(always)]
pub fn stack_id<C: StackIdContext>(ctx: &C, gen: &Generation, flags: u64, failed: Stat) -> i32 {
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

/// The id of the current user stack: walked with CFI rows (`unwind`, programs loaded only where
/// the kernel has `bpf_loop`), or by the kernel along frame pointers.
#[inline(always)]
pub fn user_stack_id<C: StackIdContext>(ctx: &C, gen: &Generation, unwind: bool, walk_slot: u32, failed: Stat) -> i32 {
    if unwind {
        let id = crate::unwind::user_stack_id(gen, walk_slot);
        if id < 0 {
            count(failed);
        }
        id
    } else {
        stack_id(ctx, gen, aya_ebpf::bindings::BPF_F_USER_STACK as u64, failed)
    }
}
