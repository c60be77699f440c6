//! A Python program's threads as a bundle's `python-threads.txt` lists them, and what its
//! summary says of its interpreter.

use serde::Serialize;

use crate::collect::python::PyThread;

/// Every Python thread at the dump.
#[derive(Debug, Default)]
pub struct PythonDump {
    pub threads: Vec<DumpedPyThread>,
}

#[derive(Debug)]
pub struct DumpedPyThread {
    pub thread: PyThread,
    /// The kernel thread's name (`comm`).
    pub name: String,
    /// Running or runnable when read (`R` in its /proc stat), as py-spy's "active".
    pub active: bool,
}

/// Python-specific facts of a bundle: absent for other programs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PythonStatus {
    /// "3.11.2", from the interpreter's `Py_Version`.
    pub version: String,
    /// The file it lives in: the executable or a libpython.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// False for a CPython this agent cannot read (too old, free-threaded, unknown layout).
    pub threads_available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Python threads in the bundle's dump, and how many of them had Python frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_with_frames: Option<usize>,
    /// Whether the probes put Python frames in the stacks (CFI walks, the eval loop found), and
    /// if not, why.
    pub frames_in_stacks: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_not_in_stacks: Option<String>,
    /// Share of on-CPU samples and of off-CPU time whose stacks have Python frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share_with_python: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offcpu_share_with_python: Option<f64>,
}
