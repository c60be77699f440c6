//! CPython programs from outside: which interpreter a process runs, and every Python thread's
//! stack, read from the live process's memory without stopping it (as py-spy does).
//!
//! The interpreter is found by its files (the executable, or a `libpython3.X.so` it maps), its
//! version by the `Py_Version` constant, its state by `_PyRuntime`. The struct layouts come
//! from `offsets.rs`. Supported: CPython 3.11 to 3.14, GIL builds, x86_64.

pub mod args;
mod build;
mod dump;
pub mod eval_code;
mod file;
mod instance;
mod linetable;
mod names;
mod offsets;
#[cfg(test)]
mod offsets_header_tests;
mod stacks;
mod threads;

use autodump_common::runtimes::{
    kind,
    python::{py_frame_parts, PyProc, PY_NONE},
    RuntimeProc,
};

use crate::{
    collect::{
        maps::MemoryMap,
        remote::{ProcessMemory, RemoteMemory},
    },
    files::identity::open_path,
};
pub use file::{Interpreter, PyFile, PyFiles};
pub use instance::RUNTIME;
pub use linetable::line_of;
use offsets::Offsets;
pub use threads::{CodeCache, PyFrame, PyThread, MAX_FRAME_READS, MAX_PY_FRAMES, MAX_THREADS};

#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error("cannot read target memory at {0:#x}")]
    Read(u64),
    #[error("_Py_DebugOffsets: {0}")]
    DebugOffsets(String),
    #[error("{0} has no {1} symbol")]
    NoSymbol(String, &'static str),
    #[error("the interpreter's thread list is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Whether Python threads can be read for a process.
pub enum PySupport {
    /// No CPython in the process: nothing to say.
    NotPython,
    /// A CPython this reader does not support, or cannot read, and why (said in summaries).
    Unsupported {
        version: String,
        why: String,
    },
    Ready(std::sync::Arc<PyRuntime>),
}

/// A CPython interpreter in a live process.
pub struct PyRuntime {
    memory: Box<dyn RemoteMemory>,
    /// "3.11.2", from `Py_Version`.
    pub version: String,
    /// The file the interpreter lives in (the executable or libpython).
    pub file: String,
    runtime: u64,
    code_type: u64,
    off: Offsets,
    /// The eval loop in the process (its body and cold part): where the probes emit Python
    /// frames. None when the file does not say (no symbol).
    pub eval: Option<eval_code::EvalCode>,
}

impl PySupport {
    /// Looks for CPython in `pid`'s executable mappings; `files` keeps what each file says.
    pub fn detect(pid: u32, maps: &MemoryMap, files: &mut PyFiles) -> PySupport {
        let candidates = maps.mappings().filter(|m| {
            let name = m.module();
            m.is_file() && (name.starts_with("libpython3.") || name.starts_with("python3"))
        });
        for m in candidates {
            let path = open_path(pid, m.start, m.end, &m.path);
            let Some(file) = files.get(&path, |elf, data| PyFile::parse(elf, data, &m.path)) else { continue };
            let interpreter = match &*file {
                PyFile::NotPython => continue,
                PyFile::Before311 => {
                    let why = "CPython before 3.11 (no Py_Version) is not supported".into();
                    return PySupport::Unsupported { version: "< 3.11".into(), why };
                }
                PyFile::Interpreter(interpreter) => interpreter,
            };
            let version = interpreter.version();
            let why =
                interpreter.unsupported.clone().or_else(|| interpreter.jit_built.then(|| build::jit_on_in(pid))?);
            if let Some(why) = why {
                return PySupport::Unsupported { version, why };
            }
            let segments = &interpreter.segments;
            let bias = segments.delta_for_mapping(m.file_offset).map(|d| m.start.wrapping_sub(m.file_offset + d));
            let memory = Box::new(ProcessMemory::new(pid));
            return match PyRuntime::open(memory, interpreter, bias.unwrap_or(0), &m.path) {
                Ok(rt) => PySupport::Ready(std::sync::Arc::new(PyRuntime { version, ..rt })),
                Err(why) => PySupport::Unsupported { version, why },
            };
        }
        PySupport::NotPython
    }
}

impl PyRuntime {
    /// Checks the version and finds the runtime state; `bias` is added to the file's addresses.
    fn open(memory: Box<dyn RemoteMemory>, file: &Interpreter, bias: u64, path: &str) -> Result<Self, String> {
        let hex = file.hex;
        let minor = (hex >> 16) & 0xff;
        let runtime = file.runtime.clone()?.wrapping_add(bias);
        let code_type = file.code_type.clone()?.wrapping_add(bias);
        let moved = |(start, end): (u64, u64)| (start.wrapping_add(bias), end.wrapping_add(bias));
        let eval = file.eval.map(|e| eval_code::EvalCode { body: moved(e.body), cold: e.cold.map(moved) });
        let off = match minor {
            11 => offsets::V3_11,
            12 => offsets::V3_12,
            13 | 14 => {
                let debug = offsets::read_debug_offsets(&*memory, runtime, minor).map_err(|e| e.to_string())?;
                if debug.version >> 16 != hex >> 16 {
                    return Err(format!("_Py_DebugOffsets says {:#x}, Py_Version {hex:#x}", debug.version));
                }
                if debug.free_threaded {
                    return Err("free-threaded CPython is not supported".into());
                }
                debug.offsets
            }
            _ => return Err(format!("CPython 3.{minor} is not supported (3.11 to 3.14 are)")),
        };
        let rt = Self { memory, version: String::new(), file: path.to_string(), runtime, code_type, off, eval };
        rt.threads(&mut CodeCache::default()).map_err(|e| format!("cannot read the interpreter's threads: {e}"))?;
        Ok(rt)
    }
}

impl PyRuntime {
    /// A reader of CPython 3.`minor` over a byte image of memory at `base`, with `_PyRuntime`
    /// at `base` and `PyCode_Type` at `code_type` (for the fuzz target: the image is garbage).
    pub fn over_image(base: u64, bytes: Vec<u8>, minor: u8, code_type: u64) -> Option<Self> {
        let memory: Box<dyn RemoteMemory> = Box::new(crate::collect::remote::ImageMemory { base, bytes });
        let off = match minor {
            11 => offsets::V3_11,
            12 => offsets::V3_12,
            _ => offsets::read_debug_offsets(&*memory, base, u64::from(minor)).ok()?.offsets,
        };
        let version = format!("3.{minor}");
        Some(Self { memory, version, file: String::new(), runtime: base, code_type, off, eval: None })
    }
}

impl PyRuntime {
    /// What the probes need to emit this interpreter's Python frames; None without the eval
    /// loop's address.
    pub fn probe_info(&self) -> Option<RuntimeProc> {
        let eval = self.eval?;
        let (eval_start, eval_end) = eval.body;
        let (cold_start, cold_end) = eval.cold.unwrap_or((0, 0));
        let code = [eval_start, eval_end, cold_start, cold_end];
        let o = &self.off;
        let narrow = |v: u64| u16::try_from(v).unwrap_or(PY_NONE);
        let (tstate_cframe, current_frame) = match o.current_frame {
            offsets::CurrentFrame::ThroughCFrame { cframe, current_frame } => (narrow(cframe), narrow(current_frame)),
            offsets::CurrentFrame::Direct(at) => (PY_NONE, narrow(at)),
        };
        let proc = PyProc {
            tstate_cframe,
            current_frame,
            frame_previous: narrow(o.frame_previous),
            frame_code: narrow(o.frame_code),
            frame_instr: narrow(o.frame_instr),
            frame_owner: narrow(o.frame_owner),
            frame_is_entry: o.frame_is_entry.map_or(PY_NONE, narrow),
            code_adaptive: narrow(o.code_adaptive),
            code_tag_mask: o.code_tag_mask,
            runtime: self.runtime,
            interpreters_head: narrow(o.interpreters_head),
            interp_threads_head: narrow(o.interp_threads_head),
            tstate_next: narrow(o.tstate_next),
            tstate_native_thread_id: narrow(o.tstate_native_thread_id),
        };
        Some(RuntimeProc::new(kind::PYTHON, code, &proc))
    }

    /// The name and line of the Python frame the probes recorded as `entry` (see `py_frame`),
    /// read now from the process; None when the code object is gone or garbled.
    pub fn frame_of(&self, entry: u64, cache: &mut CodeCache) -> Option<PyFrame> {
        let (code, index) = py_frame_parts(entry);
        let c = self.code(code, cache)?;
        let line = line_of(&c.linetable, c.first_line, index).unwrap_or(0);
        Some(PyFrame { qualname: c.qualname.clone(), file: c.file.clone(), line })
    }
}
