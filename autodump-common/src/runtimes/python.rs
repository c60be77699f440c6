//! CPython: how a process's frames are laid out, so that a walk through the eval loop
//! (`_PyEval_EvalFrameDefault`) emits the Python frames that C frame runs (see the agent's
//! `runtimes::python`). Offsets are bytes; [`PY_NONE`] marks one a version lacks.

use super::{kind, pack_pointer, payload, runtime_frame, unpack_pointer, POINTER_BITS};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProc {
    /// `tstate->cframe` (3.11, 3.12), then `cframe->current_frame`; or, with `tstate_cframe`
    /// [`PY_NONE`], `tstate->current_frame` (3.13+).
    pub tstate_cframe: u16,
    pub current_frame: u16,
    pub frame_previous: u16,
    pub frame_code: u16,
    pub frame_instr: u16,
    pub frame_owner: u16,
    /// 3.11's `is_entry`; [`PY_NONE`] from 3.12, where the C stack's shim frame marks entries.
    pub frame_is_entry: u16,
    /// Where the bytecode starts in a code object (`co_code_adaptive`).
    pub code_adaptive: u16,
    /// Low bits cleared from the code pointer (3.14 tags `f_executable`).
    pub code_tag_mask: u64,
    /// `_PyRuntime`, and the offsets that lead from it to each thread state: a thread the agent
    /// has not listed yet (it blocked as soon as it started) is looked up by the probe itself,
    /// newest first, as the interpreter links them.
    pub runtime: u64,
    pub interpreters_head: u16,
    pub interp_threads_head: u16,
    pub tstate_next: u16,
    pub tstate_native_thread_id: u16,
}

/// Thread states a probe looks through for a thread the agent has not listed.
pub const PY_THREAD_SEARCH: u32 = 32;

/// A [`PyProc`] offset a version does not have.
pub const PY_NONE: u16 = u16::MAX;
/// The owner of the shim frame a C call into the eval loop pushes (3.12+): 3 on 3.12 to 3.14
/// (`FRAME_OWNED_BY_CSTACK`, then 3.14's `FRAME_OWNED_BY_INTERPRETER`).
pub const PY_OWNED_BY_CSTACK: u8 = 3;

/// A Python frame's payload: the code object's address, and the instruction's index in its
/// bytecode (code units, at most [`PY_INDEX_MAX`]) above it.
pub const PY_INDEX_MAX: u64 = (1 << (super::KIND_SHIFT - POINTER_BITS)) - 1;

/// The stack entry of a Python frame running code object `code` at code unit `index`.
pub const fn py_frame(code: u64, index: u64) -> u64 {
    let index = if index > PY_INDEX_MAX { PY_INDEX_MAX } else { index };
    runtime_frame(kind::PYTHON, pack_pointer(code) | (index << POINTER_BITS))
}

/// The (code object, code unit) of a Python frame's entry.
pub const fn py_frame_parts(entry: u64) -> (u64, u64) {
    let payload = payload(entry);
    (unpack_pointer(payload), payload >> POINTER_BITS)
}
