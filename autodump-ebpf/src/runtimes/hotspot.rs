//! HotSpot's step. At a native frame in the template interpreter, the Java method that frame
//! runs is in the frame itself: its `Method*` and bytecode pointer sit at fixed slots below its
//! frame pointer. One Java frame is emitted, and it stands for the interpreter's native frame
//! (see `takes_native`). Compiled Java frames need no step: the agent's rows for the code cache
//! walk them by each method's frame size, and the agent names them by address.

use autodump_common::runtimes::hotspot::{hotspot_frame, HotSpotProc, BCI_UNKNOWN};
use aya_ebpf::helpers::bpf_probe_read_user;

use super::{RuntimeWalk, Step};

/// The interpreted Java frame of the current native frame, whose frame pointer is `rt.frame`.
#[inline(always)]
pub(super) fn step(rt: &mut RuntimeWalk) -> Step {
    // SAFETY: the agent wrote a `HotSpotProc` for this process (its kind says so).
    let p = unsafe { rt.proc.of::<HotSpotProc>() };
    let fp = rt.frame;
    let Some(method) = read(fp.wrapping_add(p.frame_method as u64)) else { return Step::Done };
    // Metadata is 8-byte aligned in user space: anything else is not a `Method*` (the frame is
    // not set up yet, at a method's entry).
    if method & 7 != 0 || method == 0 || method >> 47 != 0 {
        return Step::Done;
    }
    let bci = match (read(fp.wrapping_add(p.frame_bcp as u64)), read(method.wrapping_add(p.method_const))) {
        (Some(bcp), Some(constant)) => {
            let code = constant.wrapping_add(p.const_method_size);
            if bcp >= code {
                bcp - code
            } else {
                BCI_UNKNOWN
            }
        }
        _ => BCI_UNKNOWN,
    };
    Step::Last(hotspot_frame(method, bci))
}

#[inline(always)]
fn read(address: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_user(address as *const u64).ok() }
}
