//! CRuby's step. At a native frame of the interpreter loop (`vm_exec_core`), the Ruby frames it
//! runs are the thread's control frames, from its execution context's `cfp` up to the frame a C
//! call into the VM pushed (`VM_FRAME_FLAG_FINISH`). The execution context is the thread's
//! `ruby_current_ec`, thread-local: read through the thread pointer the kernel keeps for it, its
//! DTV, and the interpreter module's block. A frame is emitted as its iseq and the position of
//! its `pc` in the iseq's code, or a C function's method entry; the agent names them.

use autodump_common::runtimes::{
    kind,
    ruby::{
        ruby_cfunc_frame, ruby_iseq_frame, RubyProc, EP_ME_CREF, FRAME_FLAG_FINISH, FRAME_MAGIC_CFUNC,
        FRAME_MAGIC_DUMMY, FRAME_MAGIC_MASK,
    },
    stat_slot, STAT_THREAD_MISSES,
};
use aya_ebpf::helpers::bpf_probe_read_user;

use super::{RuntimeWalk, Step};
use crate::{config::thread_pointer, maps::count_slot};

/// glibc's thread control block: its DTV pointer, and the size of a DTV entry.
const TCB_DTV: u64 = 8;
const DTV_ENTRY: u64 = 16;

/// The next control frame of the current native frame; `first`: the walk's first interpreter
/// frame, where the thread's innermost control frame is read.
#[inline(always)]
pub(super) fn step(rt: &mut RuntimeWalk, first: bool) -> Step {
    // SAFETY: the agent wrote a `RubyProc` for this process (its kind says so).
    let p = unsafe { rt.proc.of::<RubyProc>() };
    if first {
        match current_frames(p) {
            Some((cfp, end)) => (rt.cursor, rt.bound) = (cfp, end),
            None => {
                count_slot(stat_slot(kind::RUBY, STAT_THREAD_MISSES));
                rt.cursor = 0;
            }
        }
    }
    let cfp = rt.cursor;
    if cfp == 0 || cfp >= rt.bound {
        return Step::Done;
    }
    rt.cursor = cfp + p.cfp_size as u64;
    let Some(ep) = read(cfp, p.cfp_ep) else { return done(rt) };
    let Some(flags) = read(ep, 0) else { return done(rt) };
    let last = flags & FRAME_FLAG_FINISH != 0;
    let entry = match flags & FRAME_MAGIC_MASK {
        FRAME_MAGIC_CFUNC => read(ep.wrapping_sub(EP_ME_CREF), 0).map(ruby_cfunc_frame),
        FRAME_MAGIC_DUMMY => None,
        _ => iseq_frame(cfp, p),
    };
    match (entry, last) {
        (Some(entry), true) => Step::Last(entry),
        (Some(entry), false) => Step::Frame(entry),
        (None, true) => Step::Done,
        (None, false) => Step::Skip,
    }
}

#[inline(always)]
fn done(rt: &mut RuntimeWalk) -> Step {
    rt.cursor = 0;
    Step::Done
}

/// An iseq frame's entry; None for a frame without code (the VM's own).
#[inline(always)]
fn iseq_frame(cfp: u64, p: &RubyProc) -> Option<u64> {
    let iseq = read(cfp, p.cfp_iseq)?;
    let pc = read(cfp, p.cfp_pc)?;
    if iseq == 0 || pc == 0 {
        return None;
    }
    let encoded = read(read(iseq, p.iseq_body)?, p.body_encoded)?;
    Some(ruby_iseq_frame(iseq, pc.wrapping_sub(encoded) / 8))
}

/// The thread's innermost control frame and the end of its frames (the top of its VM stack).
#[inline(always)]
fn current_frames(p: &RubyProc) -> Option<(u64, u64)> {
    let tp = thread_pointer()?;
    let ec = if p.tls_module == 0 {
        read(tp.wrapping_add(p.tls_offset as u64), 0)?
    } else {
        let dtv = read(tp, TCB_DTV as u16)?;
        let block = read(dtv.wrapping_add(p.tls_module.wrapping_mul(DTV_ENTRY)), 0)?;
        read(block.wrapping_add(p.tls_offset as u64), 0)?
    };
    if ec == 0 {
        return None;
    }
    let cfp = read(ec, p.ec_cfp)?;
    let stack = read(ec, p.ec_vm_stack)?;
    let size = read(ec, p.ec_vm_stack_size)?;
    Some((cfp, stack.wrapping_add(size.wrapping_mul(8))))
}

#[inline(always)]
fn read(base: u64, offset: u16) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_user(base.wrapping_add(offset as u64) as *const u64).ok() }
}
