//! Callers of frames in JIT code, which keeps no CFI: by frame pointer, checked (code no runtime
//! gave rows for), and a frame-pointer frame that saved its caller's stack pointer (`cfa::SENDER_SP`:
//! HotSpot's interpreter, whose compiled caller may have extended its frame for the arguments).

use autodump_common::{unwind::END_BROKEN, Stat};

use super::{read, Walk};
use crate::maps::count;

/// The caller of a frame in JIT code, by its frame pointer: JIT code keeps none of the CFI that
/// would say otherwise. The caller's frame must lie above this one on the same stack (JIT code
/// that uses RBP for data, as HotSpot's does without `-XX:+PreserveFramePointer`, fails this).
#[inline(always)]
pub(super) fn jit_caller(walk: &mut Walk) -> Option<()> {
    count(Stat::JitFrames);
    super::memo::forget(&mut walk.memo);
    walk.from_frame_pointer = 1;
    let stop = |walk: &mut Walk| {
        count(Stat::JitWalkStops);
        walk.stack.end |= END_BROKEN;
        None
    };
    if walk.bp < walk.sp || walk.bp - walk.sp > JIT_MAX_FRAME {
        return stop(walk);
    }
    let (Some(caller_bp), Some(ra)) = (read(walk.bp), read(walk.bp + 8)) else {
        return stop(walk);
    };
    if caller_bp != 0 && caller_bp <= walk.bp {
        return stop(walk);
    }
    walk.sp = walk.bp + 16;
    walk.bp = caller_bp;
    walk.ip = ra;
    Some(())
}

/// The largest JIT frame believed: a frame pointer further above the stack pointer is taken for
/// data in RBP, not a frame.
const JIT_MAX_FRAME: u64 = 1 << 20;

/// The caller of a `cfa::SENDER_SP` frame: its RBP at RBP, its PC at RBP + 8, its stack pointer
/// at RBP - 8, which must hold this frame (at or above RBP + 16, within `JIT_MAX_FRAME`).
#[inline(always)]
pub(super) fn sender_sp_caller(walk: &mut Walk) -> Option<()> {
    super::memo::forget(&mut walk.memo);
    let (Some(caller_bp), Some(ra), Some(sp)) = (read(walk.bp), read(walk.bp + 8), read(walk.bp - 8)) else {
        walk.stack.end |= END_BROKEN;
        return None;
    };
    if sp < walk.bp + 16 || sp.wrapping_sub(walk.sp) > JIT_MAX_FRAME {
        walk.stack.end |= END_BROKEN;
        return None;
    }
    walk.bp = caller_bp;
    walk.sp = sp;
    walk.ip = ra;
    Some(())
}
