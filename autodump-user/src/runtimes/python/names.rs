//! Names of the Python frames the probes put in user stacks (`py_frame` entries: a code object
//! and an instruction), read from the live process: the code object's qualified name, file and
//! the line of that instruction.

use std::sync::Arc;

use super::location::{Frame, Location};
use crate::collect::python::{CodeCache, PyRuntime};

pub struct PythonNames {
    rt: Arc<PyRuntime>,
    codes: CodeCache,
}

impl PythonNames {
    pub fn new(rt: Arc<PyRuntime>) -> Self {
        Self { rt, codes: CodeCache::default() }
    }

    /// The location of Python frame `entry`.
    pub fn location(&mut self, entry: u64) -> Location {
        let (frames, unnamed): (Arc<[Frame]>, Option<Arc<str>>) = match self.rt.frame_of(entry, &mut self.codes) {
            Some(f) => {
                let line = (f.line > 0).then_some(f.line);
                ([Frame { function: f.qualname, file: Some(f.file), line }].into(), None)
            }
            None => {
                let code = entry & autodump_common::unwind::PY_CODE_MASK;
                let name: Arc<str> = format!("[python code {code:#x}]").into();
                let why = "the code object was gone or unreadable when the stack was named".into();
                ([Frame { function: name, file: None, line: None }].into(), Some(why))
            }
        };
        Location { address: entry, kernel: false, mapping: None, frames, unnamed }
    }
}
