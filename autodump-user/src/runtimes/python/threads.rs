//! Every Python thread and its stack: `interpreters.head → threads.head → next`, each thread
//! matched to its kernel thread by `native_thread_id`. This works whether or not the thread
//! holds the GIL: CPython keeps a thread's state and frames while it sleeps, waits on a lock or
//! blocks in I/O.
//!
//! The process runs while it is read: every list is capped, every object is checked (a code
//! object's type is `PyCode_Type`), and what cannot be read is counted, never trusted.

use std::{collections::HashMap, sync::Arc};

use super::{
    line_of,
    offsets::{CurrentFrame, Gil, OWNED_BY_CSTACK, OWNED_BY_GENERATOR},
    PyError, PyRuntime,
};
use crate::collect::remote::{field_u32, field_u64, ReadError};

/// Threads read per interpreter at most (a guard against a garbled list).
pub const MAX_THREADS: usize = 4096;
/// Interpreters read at most.
const MAX_INTERPRETERS: usize = 64;
/// Python frames kept per thread; deeper stacks keep their innermost frames and are marked.
pub const MAX_PY_FRAMES: usize = 256;
/// Longest name or file name read (characters).
const MAX_STRING: u64 = 4096;
/// Largest line table read.
const MAX_LINETABLE: u64 = 256 << 10;
/// Code objects remembered per process before the cache starts over.
const MAX_CODES: usize = 100_000;
/// Frames read per dump at most, over all threads: a garbled list (a thread or frame that
/// leads back to itself) costs at most this much.
pub const MAX_FRAME_READS: usize = 200_000;
/// Reads of a thread whose chain was torn (see `walk`) before the last is kept as it is.
const TORN_READS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrame {
    pub qualname: Arc<str>,
    pub file: Arc<str>,
    /// 0 when the location table gives none.
    pub line: u32,
}

#[derive(Clone, Debug)]
pub struct PyThread {
    pub tid: u32,
    pub holds_gil: bool,
    /// Innermost first.
    pub frames: Vec<PyFrame>,
    /// Frames past `MAX_PY_FRAMES` that were cut.
    pub truncated: bool,
    /// Frames that could not be read or were not code (garbage, or a frame being set up).
    pub unreadable: u32,
}

/// What a code object says, kept while the object's fields stay the same.
pub(super) struct Code {
    pub(super) qualname: Arc<str>,
    pub(super) file: Arc<str>,
    pub(super) first_line: i32,
    pub(super) linetable: Vec<u8>,
}

/// Code objects by address and the fields that name them: an address reused by another code
/// object has other names and is read again.
#[derive(Default)]
pub struct CodeCache {
    codes: HashMap<[u64; 4], Arc<Code>>,
}

/// Bytes of CPython's `struct _gil_runtime_state` (3.11 to 3.14, 64-bit glibc): `interval`,
/// `last_holder`, `locked`, `switch_number` (32), then the condition variable (48) and mutex
/// (40) a thread waiting for the GIL blocks on, and the pair that forces a switch (88).
const GIL_STATE_BYTES: u64 = 208;
/// Where `last_holder` is in it.
const GIL_HOLDER_OFFSET: u64 = 8;

impl PyRuntime {
    /// Every thread's (tid, thread state address), for the probes (see `PyProc`).
    pub fn thread_states(&self) -> Result<Vec<(u32, u64)>, PyError> {
        let (m, o) = (&*self.memory, &self.off);
        let mut out = Vec::new();
        let mut interp = m.u64(self.runtime.wrapping_add(o.interpreters_head))?;
        for _ in 0..MAX_INTERPRETERS {
            if interp == 0 {
                return Ok(out);
            }
            let mut tstate = m.u64(interp.wrapping_add(o.interp_threads_head))?;
            while tstate != 0 {
                if out.len() >= MAX_THREADS {
                    return Err(PyError::Inconsistent("thread list does not end"));
                }
                let tid = m.u64(tstate.wrapping_add(o.tstate_native_thread_id))?;
                out.push((u32::try_from(tid).map_err(|_| PyError::Inconsistent("native_thread_id"))?, tstate));
                tstate = m.u64(tstate.wrapping_add(o.tstate_next))?;
            }
            interp = m.u64(interp.wrapping_add(o.interp_next))?;
        }
        Err(PyError::Inconsistent("interpreter list does not end"))
    }

    /// Every thread of every interpreter, with its Python stack.
    pub fn threads(&self, cache: &mut CodeCache) -> Result<Vec<PyThread>, PyError> {
        let (m, o) = (&*self.memory, &self.off);
        let mut interp = m.u64(self.runtime.wrapping_add(o.interpreters_head))?;
        let mut out: Vec<PyThread> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut budget = MAX_FRAME_READS;
        for _ in 0..MAX_INTERPRETERS {
            if interp == 0 {
                // The lists are newest first; list the main thread first, as py-spy does.
                out.reverse();
                return Ok(out);
            }
            let holder = self.gil_holder(interp).unwrap_or(0);
            let mut tstate = m.u64(interp.wrapping_add(o.interp_threads_head))?;
            for _ in 0..MAX_THREADS {
                if tstate == 0 {
                    break;
                }
                if !seen.insert(tstate) {
                    return Err(PyError::Inconsistent("a thread state appears twice"));
                }
                let tid = m.u64(tstate.wrapping_add(o.tstate_native_thread_id))?;
                let tid = u32::try_from(tid).map_err(|_| PyError::Inconsistent("native_thread_id"))?;
                let mut thread =
                    PyThread { tid, holds_gil: holder == tstate, frames: Vec::new(), truncated: false, unreadable: 0 };
                // A running thread changes its chain as it is read: a generator read just as it
                // yields has lost its caller. Such a torn read is read again.
                for _ in 0..TORN_READS {
                    (thread.frames, thread.truncated, thread.unreadable) = (Vec::new(), false, 0);
                    let Ok(frame) = self.current_frame(tstate) else { break };
                    if !self.walk(frame, cache, &mut thread, &mut budget) {
                        break;
                    }
                }
                out.push(thread);
                tstate = m.u64(tstate.wrapping_add(o.tstate_next))?;
            }
            interp = m.u64(interp.wrapping_add(o.interp_next))?;
        }
        Err(PyError::Inconsistent("interpreter list does not end"))
    }

    /// The thread state holding `interp`'s GIL, or 0 if it is not held.
    fn gil_holder(&self, interp: u64) -> Result<u64, ReadError> {
        let m = &*self.memory;
        let (holder, locked) = self.gil_fields(interp)?;
        Ok(if m.i32(locked)? != 0 { m.u64(holder)? } else { 0 })
    }

    /// Where each interpreter's GIL lies, [start, end): the condition variable and mutex its
    /// waiters block on are inside (see [`GIL_STATE_BYTES`]).
    pub fn gil_ranges(&self) -> Result<Vec<(u64, u64)>, PyError> {
        let (m, o) = (&*self.memory, &self.off);
        let mut ranges = Vec::new();
        let mut interp = m.u64(self.runtime.wrapping_add(o.interpreters_head))?;
        for _ in 0..MAX_INTERPRETERS {
            if interp == 0 {
                return Ok(ranges);
            }
            let start = self.gil_fields(interp)?.0.wrapping_sub(GIL_HOLDER_OFFSET);
            if !ranges.iter().any(|r: &(u64, u64)| r.0 == start) {
                ranges.push((start, start.wrapping_add(GIL_STATE_BYTES)));
            }
            interp = m.u64(interp.wrapping_add(o.interp_next))?;
        }
        Err(PyError::Inconsistent("interpreter list does not end"))
    }

    /// The addresses of `interp`'s GIL's `last_holder` and `locked`.
    fn gil_fields(&self, interp: u64) -> Result<(u64, u64), ReadError> {
        let m = &*self.memory;
        Ok(match self.off.gil {
            Gil::Runtime { holder, locked } => (self.runtime.wrapping_add(holder), self.runtime.wrapping_add(locked)),
            Gil::Pointer { at, holder, locked } => {
                let gil = m.u64(interp.wrapping_add(at))?;
                (gil.wrapping_add(holder), gil.wrapping_add(locked))
            }
            Gil::Interp { holder, locked } => (interp.wrapping_add(holder), interp.wrapping_add(locked)),
        })
    }

    fn current_frame(&self, tstate: u64) -> Result<u64, ReadError> {
        match self.off.current_frame {
            CurrentFrame::ThroughCFrame { cframe, current_frame } => {
                let cframe = self.memory.u64(tstate.wrapping_add(cframe))?;
                self.memory.u64(cframe.wrapping_add(current_frame))
            }
            CurrentFrame::Direct(at) => self.memory.u64(tstate.wrapping_add(at)),
        }
    }

    /// Reads the chain from `frame` into `thread`; true if it was torn (a generator's frame
    /// without its caller: it yielded while being read).
    fn walk(&self, mut frame: u64, cache: &mut CodeCache, thread: &mut PyThread, budget: &mut usize) -> bool {
        let o = &self.off;
        let len = [o.frame_previous, o.frame_code, o.frame_instr, o.frame_owner].into_iter().max().unwrap_or(0) + 8;
        let mut block = vec![0u8; len as usize];
        let mut torn = false;
        for _ in 0..MAX_PY_FRAMES * 4 {
            if frame == 0 {
                return torn;
            }
            if *budget == 0 {
                thread.truncated = true;
                return false;
            }
            *budget -= 1;
            if self.memory.read(frame, &mut block).is_err() {
                thread.unreadable += 1;
                return false;
            }
            let owner = block[o.frame_owner as usize];
            let code = field_u64(&block, o.frame_code).unwrap_or(0) & !o.code_tag_mask;
            let instr = field_u64(&block, o.frame_instr).unwrap_or(0);
            frame = field_u64(&block, o.frame_previous).unwrap_or(0);
            // Its frame is kept either way: the last read of a thread that stays torn ends there.
            torn = frame == 0 && owner == OWNED_BY_GENERATOR;
            if owner == OWNED_BY_CSTACK {
                continue; // the shim a C call into the interpreter pushes (3.12+)
            }
            match self.code(code, cache) {
                Some(c) => {
                    // Frames not yet started point before their first instruction.
                    let Some(index) = instr.checked_sub(code.wrapping_add(o.code_adaptive)).map(|b| b / 2) else {
                        continue;
                    };
                    if thread.frames.len() == MAX_PY_FRAMES {
                        thread.truncated = true;
                        return false;
                    }
                    let line = line_of(&c.linetable, c.first_line, index).unwrap_or(0);
                    thread.frames.push(PyFrame { qualname: c.qualname.clone(), file: c.file.clone(), line });
                }
                None => thread.unreadable += 1,
            }
        }
        thread.truncated = true;
        false
    }

    pub(super) fn code(&self, at: u64, cache: &mut CodeCache) -> Option<Arc<Code>> {
        let o = &self.off;
        let mut block = vec![0u8; o.code_adaptive as usize];
        self.memory.read(at, &mut block).ok()?;
        if field_u64(&block, o.object_type)? != self.code_type {
            return None;
        }
        let key = [
            at,
            field_u64(&block, o.code_filename)?,
            field_u64(&block, o.code_qualname)?,
            field_u64(&block, o.code_linetable)?,
        ];
        if let Some(c) = cache.codes.get(&key) {
            return Some(c.clone());
        }
        let code = Arc::new(Code {
            qualname: self.string(key[2])?,
            file: self.string(key[1])?,
            first_line: field_u32(&block, o.code_firstlineno)? as i32,
            linetable: self.bytes(key[3]).unwrap_or_default(),
        });
        if cache.codes.len() >= MAX_CODES {
            cache.codes.clear();
        }
        cache.codes.insert(key, code.clone());
        Some(code)
    }

    /// A compact `str` object's text (names and file names are compact).
    fn string(&self, at: u64) -> Option<Arc<str>> {
        let o = &self.off;
        let mut head = vec![0u8; o.compact_size as usize];
        self.memory.read(at, &mut head).ok()?;
        let state = field_u32(&head, o.unicode_state)?;
        let (kind, compact, ascii) = ((state >> 2) & 7, state & (1 << 5) != 0, state & (1 << 6) != 0);
        let length = field_u64(&head, o.unicode_length)?;
        if !compact || !matches!(kind, 1 | 2 | 4) || length > MAX_STRING {
            return None;
        }
        let data = if ascii { o.ascii_size } else { o.compact_size };
        let mut raw = vec![0u8; (length * u64::from(kind)) as usize];
        self.memory.read(at.wrapping_add(data), &mut raw).ok()?;
        let text: String = match kind {
            1 => raw.iter().map(|&b| char::from(b)).collect(),
            2 => raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .filter_map(char::from_u32)
                .collect(),
            _ => raw.chunks_exact(4).filter_map(|c| char::from_u32(u32::from_le_bytes(c.try_into().ok()?))).collect(),
        };
        Some(text.into())
    }

    fn bytes(&self, at: u64) -> Option<Vec<u8>> {
        let o = &self.off;
        let size = self.memory.u64(at.wrapping_add(o.bytes_size)).ok()?;
        if size > MAX_LINETABLE {
            return None;
        }
        let mut data = vec![0u8; size as usize];
        self.memory.read(at.wrapping_add(o.bytes_data), &mut data).ok()?;
        Some(data)
    }
}

impl From<ReadError> for PyError {
    fn from(e: ReadError) -> Self {
        PyError::Read(e.0)
    }
}
