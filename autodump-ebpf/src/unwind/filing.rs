//! A walked stack's end counted, and the stack filed once per generation under its id.

use autodump_common::{
    unwind::{UnwoundStack, END_BROKEN, END_ROOT, END_UNKNOWN_CODE, UNWOUND_STACK_ID},
    Stat,
};
use aya_ebpf::bindings::BPF_NOEXIST;

use crate::maps::{count, Generation};

#[inline(always)]
pub(super) fn count_walk(end: u32) {
    count(Stat::UnwoundStacks);
    if end & END_ROOT != 0 {
        count(Stat::UnwoundToRoot);
    }
    if end & END_UNKNOWN_CODE != 0 {
        count(Stat::UnwindUnknownCode);
    }
    if end & END_BROKEN != 0 {
        count(Stat::UnwindBroken);
    }
}

/// Files a walked stack under its id, unless it is there already.
#[inline(always)]
pub(super) fn file(gen: &Generation, stack: &UnwoundStack) -> i32 {
    // The walk's hash multiplies, so its low bits depend only on the entries' low bits: Python
    // frames that differ only in their instruction (high bits) would share an id. Fold the high
    // bits down first (murmur3's finalizer).
    let mut mixed = stack.hash ^ (stack.hash >> 33);
    mixed = mixed.wrapping_mul(0xff51_afd7_ed55_8ccd);
    mixed ^= mixed >> 33;
    let id = UNWOUND_STACK_ID | (mixed as u32 & (UNWOUND_STACK_ID - 1));
    // SAFETY: the value is only compared.
    if let Some(filed) = unsafe { gen.unwound.get(id) } {
        if filed.hash == stack.hash {
            return id as i32;
        }
        count(Stat::UnwoundStacksLost);
        return -17;
    }
    match gen.unwound.insert(id, stack, BPF_NOEXIST as u64) {
        Ok(()) => id as i32,
        Err(e) => {
            // Another CPU may have filed the same stack just now.
            // SAFETY: as above.
            if let Some(filed) = unsafe { gen.unwound.get(id) } {
                if filed.hash == stack.hash {
                    return id as i32;
                }
            }
            count(Stat::UnwoundStacksLost);
            e
        }
    }
}
