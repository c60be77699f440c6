//! Where CPython keeps what a stack walk reads, by minor version.
//!
//! 3.13 and 3.14 publish them in `_Py_DebugOffsets`, the first member of `_PyRuntime`: read
//! from the process, after its cookie, version and sizes are checked (each version's block has
//! its own layout). 3.11 and 3.12 do not, so their layouts (x86_64, GIL builds, release) are a
//! table, checked against the versions' own headers in `offsets_header_tests.rs`.
//!
//! What neither gives is decided by version here, each with a test: how the thread's current
//! frame is reached, what marks a frame the C stack owns, and where the GIL's holder is.

use super::PyError;
use crate::collect::remote::{field_u64, RemoteMemory};

/// The owner of the entry frame `_PyEval_EvalFrameDefault` pushes (3.12+): 3 on every version.
/// 3.12 and 3.13 call it `FRAME_OWNED_BY_CSTACK`; 3.14 inserted `FRAME_OWNED_BY_INTERPRETER` at
/// 3 and moved the entry frame onto it (its `FRAME_OWNED_BY_CSTACK`, 4, is assigned nowhere).
pub use autodump_common::runtimes::python::PY_OWNED_BY_CSTACK as OWNED_BY_CSTACK;

/// The owner of a generator's or coroutine's frame, `FRAME_OWNED_BY_GENERATOR`: 1 on 3.11 to
/// 3.14. While it runs, its `previous` is its caller; a yield clears it.
pub const OWNED_BY_GENERATOR: u8 = 1;

/// How a thread state leads to its innermost frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurrentFrame {
    /// 3.11, 3.12: `tstate->cframe->current_frame`.
    ThroughCFrame { cframe: u64, current_frame: u64 },
    /// 3.13+: `tstate->current_frame`.
    Direct(u64),
}

/// Where the GIL says who holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gil {
    /// 3.11: in `_PyRuntime.ceval.gil`, offsets from `_PyRuntime`.
    Runtime { holder: u64, locked: u64 },
    /// 3.12: `interp->ceval.gil` points at the state; offsets of the pointer, then inside it.
    Pointer { at: u64, holder: u64, locked: u64 },
    /// 3.13+: the main interpreter's own `_gil`, offsets from the interpreter state.
    Interp { holder: u64, locked: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub interpreters_head: u64,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub gil: Gil,
    pub tstate_next: u64,
    pub tstate_native_thread_id: u64,
    pub current_frame: CurrentFrame,
    pub frame_previous: u64,
    /// `f_code` (3.11, 3.12) or `f_executable` (3.13+).
    pub frame_code: u64,
    /// `prev_instr` (3.11, 3.12) or `instr_ptr` (3.13+).
    pub frame_instr: u64,
    pub frame_owner: u64,
    /// 3.11's `is_entry`; later versions mark entries by owner.
    pub frame_is_entry: Option<u64>,
    /// 3.14's `f_executable` is a tagged pointer: these low bits are cleared.
    pub code_tag_mask: u64,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    pub code_adaptive: u64,
    pub object_type: u64,
    pub bytes_size: u64,
    pub bytes_data: u64,
    pub unicode_state: u64,
    pub unicode_length: u64,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's bytes begin.
    pub ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' code points begin.
    pub compact_size: u64,
}

/// CPython 3.11 (checked against 3.11.2's headers).
pub const V3_11: Offsets = Offsets {
    interpreters_head: 40,
    interp_next: 0,
    interp_threads_head: 16,
    gil: Gil::Runtime { holder: 368, locked: 376 },
    tstate_next: 8,
    tstate_native_thread_id: 160,
    current_frame: CurrentFrame::ThroughCFrame { cframe: 56, current_frame: 8 },
    frame_previous: 48,
    frame_code: 32,
    frame_instr: 56,
    frame_owner: 69,
    frame_is_entry: Some(68),
    code_tag_mask: 0,
    code_filename: 112,
    code_name: 120,
    code_qualname: 128,
    code_linetable: 136,
    code_firstlineno: 72,
    code_adaptive: 184,
    object_type: 8,
    bytes_size: 16,
    bytes_data: 32,
    unicode_state: 32,
    unicode_length: 16,
    ascii_size: 48,
    compact_size: 72,
};

/// CPython 3.12 (checked against 3.12.1's headers).
pub const V3_12: Offsets = Offsets {
    interp_threads_head: 72,
    gil: Gil::Pointer { at: 384, holder: 8, locked: 16 },
    tstate_native_thread_id: 144,
    current_frame: CurrentFrame::ThroughCFrame { cframe: 56, current_frame: 0 },
    frame_previous: 8,
    frame_code: 0,
    frame_instr: 56,
    frame_owner: 70,
    frame_is_entry: None,
    code_firstlineno: 68,
    code_adaptive: 192,
    ascii_size: 40,
    compact_size: 56,
    ..V3_11
};

/// The cookie `_Py_DebugOffsets` starts with.
const COOKIE: &[u8; 8] = b"xdebugpy";

/// Where one version's `_Py_DebugOffsets` (Include/internal/pycore_debug_offsets.h) puts what a
/// walk reads: each table's first word (its struct's size) and the words inside the tables, by
/// index of u64 from the start of the block. 3.14 added fields inside the interpreter, frame
/// and code tables and new tables after them, so every index after the interpreter's moved.
struct Layout {
    minor: u64,
    /// u64s in the block, all of which are read.
    words: usize,
    runtime: u64,
    interp: u64,
    tstate: u64,
    frame: u64,
    code: u64,
    object: u64,
    bytes: u64,
    unicode: u64,
    /// `gil_runtime_state_locked` and `_holder` inside the interpreter's table.
    gil_locked: u64,
    gil_holder: u64,
    /// Low bits of `f_executable` that are a tag, not part of the pointer.
    code_tag_mask: u64,
}

const LAYOUT_3_13: Layout = Layout {
    minor: 13,
    words: 73,
    runtime: 3,
    interp: 6,
    tstate: 19,
    frame: 28,
    code: 34,
    object: 44,
    bytes: 64,
    unicode: 67,
    gil_locked: 11,
    gil_holder: 12,
    code_tag_mask: 0,
};

/// 3.14: `threads_main` after `threads_head`; `code_object_generation`, `tlbc_generation`;
/// the frame's `stackpointer`, `tlbc_index`; `co_tlbc`; the set table before the dict's; gen,
/// llist and debugger tables at the end. `f_executable` is a `_PyStackRef`, whose low bits tag
/// it (`Py_TAG_BITS`, 1 in Debian's GIL build): the two low bits are cleared, which no object's
/// address uses (objects are 8-byte aligned).
const LAYOUT_3_14: Layout = Layout {
    minor: 14,
    words: 95,
    tstate: 22,
    frame: 31,
    code: 39,
    object: 50,
    bytes: 74,
    unicode: 77,
    gil_locked: 12,
    gil_holder: 13,
    code_tag_mask: 3,
    ..LAYOUT_3_13
};

fn layout(minor: u64) -> Option<&'static Layout> {
    [&LAYOUT_3_13, &LAYOUT_3_14].into_iter().find(|l| l.minor == minor)
}

/// What `_Py_DebugOffsets` says, read at `runtime` (the address of `_PyRuntime`).
pub struct DebugOffsets {
    pub version: u64,
    pub free_threaded: bool,
    pub offsets: Offsets,
}

/// Reads and checks the `_Py_DebugOffsets` of CPython 3.`minor` (3.13 or 3.14).
pub fn read_debug_offsets(m: &dyn RemoteMemory, runtime: u64, minor: u64) -> Result<DebugOffsets, PyError> {
    let layout = layout(minor).ok_or_else(|| PyError::DebugOffsets(format!("no known layout for 3.{minor}")))?;
    let mut block = vec![0u8; layout.words * 8];
    m.read(runtime, &mut block).map_err(|e| PyError::Read(e.0))?;
    parse(&block, minor)
}

/// Parses a `_Py_DebugOffsets` block of CPython 3.`minor`: the cookie, the version (which must
/// be 3.`minor`'s) and every offset used, each inside the size its table gives.
pub fn parse(block: &[u8], minor: u64) -> Result<DebugOffsets, PyError> {
    let l = layout(minor).ok_or_else(|| PyError::DebugOffsets(format!("no known layout for 3.{minor}")))?;
    if block.get(..8) != Some(&COOKIE[..]) {
        return Err(PyError::DebugOffsets("no xdebugpy cookie at _PyRuntime".into()));
    }
    if block.len() < l.words * 8 {
        return Err(PyError::DebugOffsets(format!("{} bytes, 3.{minor}'s has {}", block.len(), l.words * 8)));
    }
    let u = |i: u64| field_u64(block, i * 8).unwrap_or(u64::MAX);
    let version = u(1);
    if version >> 16 != 0x0300 | minor {
        return Err(PyError::DebugOffsets(format!("version {version:#x} is not 3.{minor}")));
    }
    // Each table starts with its struct's size: every offset read from it must fall inside.
    let inside = |table: u64, i: u64| -> Result<u64, PyError> {
        let (size, off) = (u(table), u(table + i));
        if size == 0 || size > 1 << 20 || off >= size {
            return Err(PyError::DebugOffsets(format!("offset {off} outside its struct of {size} bytes")));
        }
        Ok(off)
    };
    // A compact string's code points follow its `PyCompactUnicodeObject` part, 16 bytes past
    // the ASCII header (`utf8_length`, `utf8`), inside `PyUnicodeObject`.
    let ascii_size = inside(l.unicode, 3)?;
    let compact_size = ascii_size + 16;
    if compact_size > u(l.unicode) {
        return Err(PyError::DebugOffsets(format!("compact strings of {compact_size} bytes in {}", u(l.unicode))));
    }
    let (interp, tstate, frame, code) = (l.interp, l.tstate, l.frame, l.code);
    let offsets = Offsets {
        interpreters_head: inside(l.runtime, 2)?,
        interp_next: inside(interp, 2)?,
        interp_threads_head: inside(interp, 3)?,
        gil: Gil::Interp { holder: inside(interp, l.gil_holder)?, locked: inside(interp, l.gil_locked)? },
        tstate_next: inside(tstate, 2)?,
        tstate_native_thread_id: inside(tstate, 6)?,
        current_frame: CurrentFrame::Direct(inside(tstate, 4)?),
        frame_previous: inside(frame, 1)?,
        frame_code: inside(frame, 2)?,
        frame_instr: inside(frame, 3)?,
        frame_owner: inside(frame, 5)?,
        frame_is_entry: None,
        code_tag_mask: l.code_tag_mask,
        code_filename: inside(code, 1)?,
        code_name: inside(code, 2)?,
        code_qualname: inside(code, 3)?,
        code_linetable: inside(code, 4)?,
        code_firstlineno: inside(code, 5)?,
        code_adaptive: inside(code, 9)?,
        object_type: inside(l.object, 1)?,
        bytes_size: inside(l.bytes, 1)?,
        bytes_data: inside(l.bytes, 2)?,
        unicode_state: inside(l.unicode, 1)?,
        unicode_length: inside(l.unicode, 2)?,
        ascii_size,
        compact_size,
    };
    Ok(DebugOffsets { version, free_threaded: u(2) != 0, offsets })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_Py_DebugOffsets` as pyenv's CPython 3.13.0 (x86_64, GIL build) has it in memory, read
    /// with ctypes from `_PyRuntime`, after the cookie, version and free_threaded words.
    const TABLES_3_13_0: [u64; 70] = [
        283320, 608, 632, 194968, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16, 7752, 0, 7768, 7760, 304, 0, 8, 16, 72,
        152, 160, 232, 32, 80, 8, 0, 56, 72, 70, 208, 112, 120, 128, 136, 68, 52, 96, 104, 200, 16, 8, 416, 24, 88,
        168, 32, 24, 16, 40, 24, 16, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 240, 200,
    ];

    fn block_3_13() -> Vec<u8> {
        let head = [u64::from_le_bytes(*COOKIE), 0x030d00f0, 0];
        head.iter().chain(&TABLES_3_13_0).flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn debug_offsets_are_checked_before_use() {
        let block = block_3_13();
        let parsed = parse(&block, 13).unwrap();
        assert_eq!(parsed.version, 0x030d00f0);
        assert!(!parsed.free_threaded);
        let o = parsed.offsets;
        assert_eq!((o.interpreters_head, o.interp_threads_head, o.tstate_next), (632, 7344, 8));
        assert_eq!(o.gil, Gil::Interp { holder: 7760, locked: 7768 });
        assert_eq!(o.current_frame, CurrentFrame::Direct(72));
        assert_eq!((o.tstate_native_thread_id, o.frame_previous), (160, 8));
        assert_eq!((o.frame_code, o.frame_instr, o.frame_owner), (0, 56, 70));
        assert_eq!((o.code_filename, o.code_qualname, o.code_linetable, o.code_firstlineno), (112, 128, 136, 68));
        assert_eq!((o.code_adaptive, o.bytes_size, o.bytes_data), (200, 16, 32));
        assert_eq!((o.unicode_state, o.unicode_length, o.ascii_size, o.compact_size), (32, 16, 40, 56));

        let mut wrong = block.clone();
        wrong[0] = b'X';
        assert!(parse(&wrong, 13).is_err(), "cookie");
        let mut wrong = block.clone();
        wrong[8..16].copy_from_slice(&0x030e00f0u64.to_le_bytes());
        assert!(parse(&wrong, 13).is_err(), "3.14's layout differs");
        assert!(parse(&block, 14).is_err(), "a 3.13 block is not read as 3.14's");
        assert!(parse(&block, 15).is_err(), "no layout known for 3.15");
        let mut wrong = block.clone();
        wrong[25 * 8..26 * 8].copy_from_slice(&5000u64.to_le_bytes());
        assert!(parse(&wrong, 13).is_err(), "native_thread_id outside PyThreadState");
        assert!(parse(&block[..100], 13).is_err(), "short");
        let mut wrong = block.clone();
        wrong[70 * 8..71 * 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&wrong, 13).is_err(), "asciiobject_size past PyUnicodeObject");
        let mut threaded = block.clone();
        threaded[16] = 1;
        assert!(parse(&threaded, 13).unwrap().free_threaded);
    }

    /// `_Py_DebugOffsets` as Debian unstable's CPython 3.14.10 (x86_64, GIL build, JIT built in
    /// and off) has it in memory, read with ctypes from `_PyRuntime`, after the first three words.
    const TABLES_3_14_10: [u64; 92] = [
        316616, 784, 808, 225864, 7280, 7272, 7344, 7360, 7408, 7688, 7672, 7680, 16, 7784, 0, 7800, 7792, 7992, 0,
        832, 0, 8, 16, 72, 152, 160, 232, 32, 88, 8, 0, 56, 80, 74, 64, 0, 216, 112, 120, 128, 136, 68, 52, 96, 104,
        208, 0, 16, 8, 416, 24, 88, 168, 40, 32, 16, 40, 24, 16, 200, 24, 40, 32, 48, 32, 40, 24, 16, 32, 16, 24, 40,
        16, 32, 64, 32, 16, 40, 264, 192, 160, 24, 72, 67, 0, 8, 24, 304, 8076, 0, 4, 512,
    ];

    /// The 3.14 layout, checked against what the interpreter's own machine code does: Debian's
    /// `_PyEval_EvalFrameDefault` stores the new frame at `0x48(tstate)` (`current_frame`),
    /// links it through `0x8(frame)` (`previous`) and tests its entry frame's owner at
    /// `0x4a(frame)` against 3.
    #[test]
    fn debug_offsets_of_3_14_have_their_own_layout() {
        let head = [u64::from_le_bytes(*COOKIE), 0x030e0af0, 0];
        let block: Vec<u8> = head.iter().chain(&TABLES_3_14_10).flat_map(|w| w.to_le_bytes()).collect();
        let o = parse(&block, 14).unwrap().offsets;
        assert_eq!(o.current_frame, CurrentFrame::Direct(0x48));
        assert_eq!((o.frame_previous, o.frame_owner, o.frame_code, o.frame_instr), (8, 0x4a, 0, 56));
        assert_eq!((o.interpreters_head, o.interp_next, o.interp_threads_head), (808, 7272, 7344));
        assert_eq!(o.gil, Gil::Interp { holder: 7792, locked: 7800 });
        assert_eq!((o.tstate_next, o.tstate_native_thread_id), (8, 160));
        assert_eq!((o.code_filename, o.code_name, o.code_qualname, o.code_linetable), (112, 120, 128, 136));
        assert_eq!((o.code_firstlineno, o.code_adaptive, o.code_tag_mask), (68, 208, 3));
        assert_eq!((o.object_type, o.bytes_size, o.bytes_data), (8, 16, 32));
        assert_eq!((o.unicode_state, o.unicode_length, o.ascii_size, o.compact_size), (32, 16, 40, 56));
        assert!(parse(&block, 13).is_err(), "a 3.14 block is not read as 3.13's");
        assert!(parse(&block[..80 * 8], 14).is_err(), "short");
    }

    #[test]
    fn versions_reach_the_current_frame_their_own_way() {
        assert!(matches!(V3_11.current_frame, CurrentFrame::ThroughCFrame { current_frame: 8, .. }));
        assert!(matches!(V3_12.current_frame, CurrentFrame::ThroughCFrame { current_frame: 0, .. }));
        assert_eq!(V3_11.frame_is_entry, Some(68), "3.11 marks entry frames with is_entry");
        assert_eq!(V3_12.frame_is_entry, None, "3.12 pushes a shim frame instead");
        assert!(matches!(V3_11.gil, Gil::Runtime { .. }) && matches!(V3_12.gil, Gil::Pointer { .. }));
    }
}
