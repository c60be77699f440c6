//! CPython's step. At a C frame of the eval loop (`_PyEval_EvalFrameDefault`), the Python frames
//! that C frame runs come from the thread's state, which the agent lists in `RUNTIME_THREADS`
//! (the interpreter's own thread list, read from outside: it holds whether or not the thread
//! has the GIL). The boundary of a C frame's Python frames is the entry frame: `is_entry` on
//! 3.11, the C stack's shim frame from 3.12 on.

use autodump_common::runtimes::{
    kind,
    python::{py_frame, PyProc, PY_NONE, PY_OWNED_BY_CSTACK, PY_THREAD_SEARCH},
    stat_slot, STAT_THREAD_MISSES,
};
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user};

use super::{RuntimeWalk, Step, RUNTIME_THREADS};
use crate::maps::count_slot;

/// The next Python frame of the current C frame; `first`: the walk's first eval-loop frame,
/// whose thread's innermost frame is read first.
#[inline(always)]
pub(super) fn step(rt: &mut RuntimeWalk, first: bool) -> Step {
    // SAFETY: the agent wrote a `PyProc` for this process (its kind says so).
    let p = unsafe { rt.proc.of::<PyProc>() };
    if first {
        rt.cursor = current_frame(rt.tgid, p).unwrap_or(0);
    }
    let frame = rt.cursor;
    if frame == 0 {
        return Step::Done;
    }
    let Some((owner, code, instr, previous)) = read_frame(frame, p) else {
        rt.cursor = 0;
        return Step::Done;
    };
    rt.cursor = previous;
    if owner == PY_OWNED_BY_CSTACK {
        // 3.12+: the shim this C frame pushed as it entered: its frames are done.
        return Step::Done;
    }
    let code = code & !p.code_tag_mask;
    let index = instr.wrapping_sub(code.wrapping_add(p.code_adaptive as u64)) / 2;
    let entry = py_frame(code, index);
    if p.frame_is_entry != PY_NONE && read_u8(frame, p.frame_is_entry).is_none_or(|e| e != 0) {
        // 3.11: the first frame this C frame ran is its last Python frame.
        return Step::Last(entry);
    }
    Step::Frame(entry)
}

/// The thread's innermost Python frame, from the thread state the agent listed, checked to be
/// this thread's (a thread gone and its tid reused); else from the probe's own search.
#[inline(always)]
fn current_frame(tgid: u32, p: &PyProc) -> Option<u64> {
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    let key = (tgid as u64) << 32 | tid;
    // SAFETY: the value is copied out while this program runs.
    let listed = (unsafe { RUNTIME_THREADS.get(key) }).copied();
    let tstate = match listed {
        Some(t) if read(t, p.tstate_native_thread_id) == Some(tid) => t,
        _ => {
            let Some(found) = find_thread(p, tid) else {
                count_slot(stat_slot(kind::PYTHON, STAT_THREAD_MISSES));
                return None;
            };
            let _ = RUNTIME_THREADS.insert(key, found, 0);
            found
        }
    };
    if p.tstate_cframe == PY_NONE {
        return read(tstate, p.current_frame);
    }
    read(read(tstate, p.tstate_cframe)?, p.current_frame)
}

/// The thread state of `tid` among the interpreter's newest `PY_THREAD_SEARCH` threads.
#[inline(always)]
fn find_thread(p: &PyProc, tid: u64) -> Option<u64> {
    let interp = read(p.runtime, p.interpreters_head)?;
    let mut tstate = read(interp, p.interp_threads_head)?;
    for _ in 0..PY_THREAD_SEARCH {
        if tstate == 0 {
            return None;
        }
        if read(tstate, p.tstate_native_thread_id)? == tid {
            return Some(tstate);
        }
        tstate = read(tstate, p.tstate_next)?;
    }
    None
}

#[inline(always)]
fn read(base: u64, offset: u16) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_user(base.wrapping_add(offset as u64) as *const u64).ok() }
}

/// A one-byte field, read as the 8 bytes it starts (every such field lies well inside its
/// frame): kernels before 6.3 reject a program that reads a stack slot the helper only partly
/// wrote, and the compiler spills the byte as a whole slot.
#[inline(always)]
fn read_u8(base: u64, offset: u16) -> Option<u8> {
    read(base, offset).map(|v| v as u8)
}

/// A frame's owner, code object, instruction pointer and previous frame, read one after another
/// (each read's failure ends the frame: the verifier of older kernels cannot follow merged checks).
#[inline(always)]
fn read_frame(frame: u64, p: &PyProc) -> Option<(u8, u64, u64, u64)> {
    let owner = read_u8(frame, p.frame_owner)?;
    let code = read(frame, p.frame_code)?;
    let instr = read(frame, p.frame_instr)?;
    let previous = read(frame, p.frame_previous)?;
    Some((owner, code, instr, previous))
}
