//! `python-threads.txt`: every Python thread with its id, name, whether it runs and holds the
//! GIL, and its Python stack innermost first, laid out as `py-spy dump` prints them.

use std::io::Write;

use crate::model::python::PythonDump;

pub fn write_python_threads(dump: &PythonDump, w: &mut dyn Write) -> std::io::Result<()> {
    for t in &dump.threads {
        let state = match (t.active, t.thread.holds_gil) {
            (true, true) => "active+gil",
            (true, false) => "active",
            (false, true) => "idle+gil",
            (false, false) => "idle",
        };
        writeln!(w, "Thread {} ({state}): \"{}\"", t.thread.tid, t.name)?;
        for f in &t.thread.frames {
            writeln!(w, "    {} ({}:{})", f.qualname, f.file, f.line)?;
        }
        if t.thread.truncated {
            writeln!(w, "    ... (outer frames cut at {})", crate::collect::python::MAX_PY_FRAMES)?;
        }
        if t.thread.unreadable > 0 {
            writeln!(w, "    # {} frames could not be read", t.thread.unreadable)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        collect::python::{PyFrame, PyThread},
        model::python::DumpedPyThread,
    };

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
}
