//! Where CPython keeps what a stack walk reads, by minor version.
//!
//! 3.13 and later publish them in `_Py_DebugOffsets`, the first member of `_PyRuntime`: read
//! from the process, after its cookie, version and sizes are checked. 3.11 and 3.12 do not, so
//! their layouts (x86_64, GIL builds, release) are a table, checked against the versions'
//! own headers in `header_tests.rs`.
//!
//! What neither gives is decided by version here, each with a test: how the thread's current
//! frame is reached, what marks a frame the C stack owns, and where the GIL's holder is.

use super::PyError;
use crate::collect::remote::{field_u64, RemoteMemory};

/// `FRAME_OWNED_BY_CSTACK`: the shim frame a C call into the interpreter pushes (3.12+). The
/// enum was renumbered in 3.14, but this value stayed.
pub const OWNED_BY_CSTACK: u8 = 3;

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
/// 3.13's `_Py_DebugOffsets`: 73 u64s (cookie, version, free_threaded, then the tables).
const DEBUG_OFFSETS_3_13: usize = 73 * 8;

/// What `_Py_DebugOffsets` says, read at `runtime` (the address of `_PyRuntime`).
pub struct DebugOffsets {
    pub version: u64,
    pub free_threaded: bool,
    pub offsets: Offsets,
}

/// Reads and checks 3.13's `_Py_DebugOffsets`. Versions whose layout is not known here are
/// refused by the caller before this is reached.
pub fn read_debug_offsets(m: &dyn RemoteMemory, runtime: u64) -> Result<DebugOffsets, PyError> {
    let mut block = vec![0u8; DEBUG_OFFSETS_3_13];
    m.read(runtime, &mut block).map_err(|e| PyError::Read(e.0))?;
    parse_3_13(&block)
}

/// Parses 3.13's layout of `_Py_DebugOffsets` (Include/internal/pycore_runtime.h).
pub fn parse_3_13(block: &[u8]) -> Result<DebugOffsets, PyError> {
    if block.get(..8) != Some(&COOKIE[..]) {
        return Err(PyError::DebugOffsets("no xdebugpy cookie at _PyRuntime".into()));
    }
    let u = |i: u64| field_u64(block, i * 8).unwrap_or(u64::MAX);
    let version = u(1);
    if version >> 16 != 0x030d {
        return Err(PyError::DebugOffsets(format!("version {version:#x} is not 3.13")));
    }
    // Each table starts with its struct's size: every offset read from it must fall inside.
    let (runtime, interp, tstate, frame, code) = (3, 6, 19, 28, 34);
    let (object, bytes, unicode) = (44, 64, 67);
    let inside = |table: u64, i: u64| -> Result<u64, PyError> {
        let (size, off) = (u(table), u(table + i));
        if size == 0 || size > 1 << 20 || off >= size {
            return Err(PyError::DebugOffsets(format!("offset {off} outside its struct of {size} bytes")));
        }
        Ok(off)
    };
    // A compact string's code points follow its `PyCompactUnicodeObject` part, 16 bytes past
    // the ASCII header (`utf8_length`, `utf8`), inside `PyUnicodeObject`.
    let ascii_size = inside(unicode, 3)?;
    let compact_size = ascii_size + 16;
    if compact_size > u(unicode) {
        return Err(PyError::DebugOffsets(format!("compact strings of {compact_size} bytes in {}", u(unicode))));
    }
    let offsets = Offsets {
        interpreters_head: inside(runtime, 2)?,
        interp_next: inside(interp, 2)?,
        interp_threads_head: inside(interp, 3)?,
        gil: Gil::Interp { holder: inside(interp, 12)?, locked: inside(interp, 11)? },
        tstate_next: inside(tstate, 2)?,
        tstate_native_thread_id: inside(tstate, 6)?,
        current_frame: CurrentFrame::Direct(inside(tstate, 4)?),
        frame_previous: inside(frame, 1)?,
        frame_code: inside(frame, 2)?,
        frame_instr: inside(frame, 3)?,
        frame_owner: inside(frame, 5)?,
        frame_is_entry: None,
        code_tag_mask: 0,
        code_filename: inside(code, 1)?,
        code_name: inside(code, 2)?,
        code_qualname: inside(code, 3)?,
        code_linetable: inside(code, 4)?,
        code_firstlineno: inside(code, 5)?,
        code_adaptive: inside(code, 9)?,
        object_type: inside(object, 1)?,
        bytes_size: inside(bytes, 1)?,
        bytes_data: inside(bytes, 2)?,
        unicode_state: inside(unicode, 1)?,
        unicode_length: inside(unicode, 2)?,
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
        let parsed = parse_3_13(&block).unwrap();
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
        assert!(parse_3_13(&wrong).is_err(), "cookie");
        let mut wrong = block.clone();
        wrong[8..16].copy_from_slice(&0x030e00f0u64.to_le_bytes());
        assert!(parse_3_13(&wrong).is_err(), "3.14's layout differs");
        let mut wrong = block.clone();
        wrong[25 * 8..26 * 8].copy_from_slice(&5000u64.to_le_bytes());
        assert!(parse_3_13(&wrong).is_err(), "native_thread_id outside PyThreadState");
        assert!(parse_3_13(&block[..100]).is_err(), "short");
        let mut wrong = block.clone();
        wrong[70 * 8..71 * 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_3_13(&wrong).is_err(), "asciiobject_size past PyUnicodeObject");
        let mut threaded = block.clone();
        threaded[16] = 1;
        assert!(parse_3_13(&threaded).unwrap().free_threaded);
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
