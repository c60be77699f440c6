//! Python frames in a native walk. When the walk meets a C frame of CPython's eval loop
//! (`_PyEval_EvalFrameDefault`), it first emits the Python frames that C frame runs, one per
//! loop step, innermost first, then carries on with the C frame itself. The thread's frames come
//! from its thread state, which the agent lists in `PY_THREADS` (the interpreter's own thread
//! list, read from outside: it holds whether or not the thread has the GIL). The boundary of a
//! C frame's Python frames is the entry frame: `is_entry` on 3.11, the C stack's shim frame
//! from 3.12 on.
//!
//! Only addresses go into the stack (`py_frame`): the agent reads names and lines.

use autodump_common::{
    unwind::{py_frame, PyProc, PY_NONE, PY_OWNED_BY_CSTACK, PY_THREAD_SEARCH},
    Stat,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::map,
    maps::HashMap,
};

use super::Walk;
use crate::maps::count;

const PROCESS_SLOTS: u32 = 64;
const THREAD_SLOTS: u32 = 16384;

/// CPython processes by tgid.
#[map]
pub static PY_PROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(PROCESS_SLOTS, 0);
/// Each Python thread's state (`PyThreadState *`), by tgid << 32 | tid.
#[map]
pub static PY_THREADS: HashMap<u64, u64> = HashMap::with_max_entries(THREAD_SLOTS, 0);

/// Where the walk is in the current C frame's Python frames.
pub(super) const IDLE: u32 = 0;
const EMITTING: u32 = 1;
/// This C frame's Python frames are all out: the native step follows, then back to `IDLE`.
pub(super) const DONE: u32 = 2;

/// Prepares `walk` for the current process: whether it runs CPython, and how.
#[inline(always)]
pub(super) fn start(walk: &mut Walk) {
    walk.py_state = IDLE;
    walk.py_cursor_ready = 0;
    // SAFETY: the value is copied out while this program runs.
    match unsafe { PY_PROCS.get(walk.tgid) } {
        Some(proc) => {
            walk.py = *proc;
            walk.py_active = 1;
        }
        None => walk.py_active = 0,
    }
}

/// The next Python frame to emit before the native frame at the walk's PC, if any.
#[inline(always)]
pub(super) fn next_frame(walk: &mut Walk) -> Option<u64> {
    if walk.py_state == IDLE {
        let pc = if walk.exact_ip != 0 { walk.ip } else { walk.ip.wrapping_sub(1) };
        let p = &walk.py;
        let in_body = pc >= p.eval_start && pc < p.eval_end;
        if !in_body && (pc < p.cold_start || pc >= p.cold_end) {
            return None;
        }
        walk.py_state = EMITTING;
    }
    if walk.py_state != EMITTING {
        return None;
    }
    if walk.py_cursor_ready == 0 {
        walk.py_cursor_ready = 1;
        walk.py_cursor = current_frame(walk).unwrap_or(0);
    }
    let p = &walk.py;
    let frame = walk.py_cursor;
    if frame == 0 {
        walk.py_state = DONE;
        return None;
    }
    let Some((owner, code, instr, previous)) = read_frame(frame, p) else {
        walk.py_cursor = 0;
        walk.py_state = DONE;
        return None;
    };
    walk.py_cursor = previous;
    if owner == PY_OWNED_BY_CSTACK {
        // 3.12+: the shim this C frame pushed as it entered: its frames are done.
        walk.py_state = DONE;
        return None;
    }
    if p.frame_is_entry != PY_NONE && read_u8(frame, p.frame_is_entry).is_none_or(|e| e != 0) {
        // 3.11: the first frame this C frame ran is its last Python frame.
        walk.py_state = DONE;
    }
    let code = code & !p.code_tag_mask;
    let index = instr.wrapping_sub(code.wrapping_add(p.code_adaptive as u64)) / 2;
    count(Stat::PythonFrames);
    Some(py_frame(code, index))
}

/// The thread's innermost Python frame, from the thread state the agent listed, checked to be
/// this thread's (a thread gone and its tid reused); else from the probe's own search.
#[inline(always)]
fn current_frame(walk: &Walk) -> Option<u64> {
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    let key = (walk.tgid as u64) << 32 | tid;
    let p = &walk.py;
    // SAFETY: the value is copied out while this program runs.
    let listed = (unsafe { PY_THREADS.get(key) }).copied();
    let tstate = match listed {
        Some(t) if read(t, p.tstate_native_thread_id) == Some(tid) => t,
        _ => {
            let Some(found) = find_thread(p, tid) else {
                count(Stat::PythonThreadMisses);
                return None;
            };
            let _ = PY_THREADS.insert(key, found, 0);
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
