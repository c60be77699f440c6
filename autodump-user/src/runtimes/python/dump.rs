//! A Python program's threads as a bundle's `python-threads.txt` lists them (with its id, name,
//! whether it runs and holds the GIL, and its Python stack innermost first, laid out as
//! `py-spy dump` prints them), and what its summary says of its interpreter.

use std::io::Write;

use serde::Serialize;

use super::{PyThread, MAX_PY_FRAMES};
use crate::runtimes::interpreter::{write_thread, DumpedThread, InterpreterStatus, ThreadText};

/// Every Python thread at the dump.
#[derive(Debug, Default)]
pub struct PythonDump {
    pub threads: Vec<DumpedPyThread>,
}

/// A Python thread of a dump, with what /proc says of it.
pub type DumpedPyThread = DumpedThread<PyThread>;

/// Python-specific facts of a bundle: absent for other programs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PythonStatus {
    /// "3.11.2", from `Py_Version`; the executable or a libpython; false for a CPython this
    /// agent cannot read (too old, free-threaded, unknown layout).
    #[serde(flatten)]
    pub interpreter: InterpreterStatus,
    /// Share of on-CPU samples and of off-CPU time whose stacks have Python frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share_with_python: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offcpu_share_with_python: Option<f64>,
}

pub fn write_python_threads(dump: &PythonDump, w: &mut dyn Write) -> std::io::Result<()> {
    for t in &dump.threads {
        let state = match (t.active, t.thread.holds_gil) {
            (true, true) => "active+gil",
            (true, false) => "active",
            (false, true) => "idle+gil",
            (false, false) => "idle",
        };
        let frames = t.thread.frames.iter().map(|f| format!("{} ({}:{})", f.qualname, f.file, f.line));
        let cut_at = t.thread.truncated.then_some(MAX_PY_FRAMES);
        let (tid, name, unreadable) = (t.thread.tid, t.name.as_str(), t.thread.unreadable);
        write_thread(w, ThreadText { tid, state, name, frames, cut_at, unreadable })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtimes::python::PyFrame;

    #[test]
    fn lists_threads_as_py_spy_dump_does() {
        let frame = |q: &str, line| PyFrame { qualname: q.into(), file: "/srv/app.py".into(), line };
        let thread = |tid, holds_gil, frames, truncated| PyThread { tid, holds_gil, frames, truncated, unreadable: 0 };
        let dump = PythonDump {
            threads: vec![
                DumpedPyThread {
                    thread: thread(10, true, vec![frame("Worker.spin", 17), frame("<module>", 34)], false),
                    name: "python3".into(),
                    active: true,
                },
                DumpedPyThread {
                    thread: thread(11, false, vec![frame("f", 3)], true),
                    name: "t".into(),
                    active: false,
                },
            ],
        };
        let mut text = Vec::new();
        write_python_threads(&dump, &mut text).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "Thread 10 (active+gil): \"python3\"\n    Worker.spin (/srv/app.py:17)\n    <module> (/srv/app.py:34)\n\
             Thread 11 (idle): \"t\"\n    f (/srv/app.py:3)\n    ... (outer frames cut at 256)\n"
        );
    }

    /// The summary's `python` section: the interpreter's facts first, then the shares, under
    /// the keys bundles have always had.
    #[test]
    fn the_summary_section_keeps_its_keys() {
        let read = InterpreterStatus::new(Ok(("3.11.2", "/usr/bin/python3.11")), Some((3, 2)), &Ok(()));
        let status =
            PythonStatus { interpreter: read, cpu_share_with_python: Some(0.5), offcpu_share_with_python: None };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            "{\"version\":\"3.11.2\",\"file\":\"/usr/bin/python3.11\",\"threads_available\":true,\"threads\":3,\
             \"threads_with_frames\":2,\"frames_in_stacks\":true,\"cpu_share_with_python\":0.5}"
        );
        let unread = InterpreterStatus::new(Err(("3.9.2", "too old")), None, &Ok(()));
        let status = PythonStatus { interpreter: unread, cpu_share_with_python: None, offcpu_share_with_python: None };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            "{\"version\":\"3.9.2\",\"threads_available\":false,\"reason\":\"too old\",\"frames_in_stacks\":false,\
             \"frames_not_in_stacks\":\"too old\"}"
        );
    }
}
