//! Names of the Python frames the probes put in user stacks (`py_frame` entries: a code object
//! and an instruction), read from the live process: the code object's qualified name, file and
//! the line of that instruction. The eval loop's C frames, which those Python frames stand in
//! for, are left out of stacks unless asked for (`--python-eval-frames`).

use std::sync::Arc;

use autodump_common::runtimes::{kind, python::py_frame_parts};

use super::{stacks::without_eval_frames, CodeCache, PyRuntime};
use crate::symbolize::{Frame, Location, RuntimeNames};

pub struct PythonNames {
    rt: Arc<PyRuntime>,
    codes: CodeCache,
    /// Where the eval loop's code is (body and cold part), when its frames are left out.
    eval: Option<Vec<(u64, u64)>>,
}

impl PythonNames {
    /// Names of `rt`'s frames; `eval_frames`: keep the eval loop's C frames.
    pub fn new(rt: Arc<PyRuntime>, eval_frames: bool) -> Self {
        let eval = rt.eval.iter().flat_map(|e| [Some(e.body), e.cold]).flatten().collect();
        Self { rt, codes: CodeCache::default(), eval: (!eval_frames).then_some(eval) }
    }
}

impl RuntimeNames for PythonNames {
    fn kind(&self) -> Option<u8> {
        Some(kind::PYTHON)
    }

    fn frame(&mut self, entry: u64) -> Option<Location> {
        let (frames, unnamed): (Arc<[Frame]>, Option<Arc<str>>) = match self.rt.frame_of(entry, &mut self.codes) {
            Some(f) => {
                let line = (f.line > 0).then_some(f.line);
                ([Frame { function: f.qualname, file: Some(f.file), line }].into(), None)
            }
            None => {
                let (code, _) = py_frame_parts(entry);
                let name: Arc<str> = format!("[python code {code:#x}]").into();
                let why = "the code object was gone or unreadable when the stack was named".into();
                ([Frame { function: name, file: None, line: None }].into(), Some(why))
            }
        };
        Some(Location { address: entry, kernel: false, mapping: None, frames, unnamed })
    }

    fn tidy(&self, stack: Vec<Arc<Location>>) -> Vec<Arc<Location>> {
        match &self.eval {
            Some(eval) => without_eval_frames(stack, eval),
            None => stack,
        }
    }
}
