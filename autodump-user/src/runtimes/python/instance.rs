//! CPython behind the runtime seam: an interpreter's file is read once (`PyFiles`); each CPython
//! process tells the probes where its eval loop is and which threads it has (so that walks emit
//! Python frames), names those frames, reports its Python threads for the `python_threads`
//! rule, and gives each bundle a thread dump (`python-threads.txt`).

use std::sync::Arc;

use super::{
    args::PythonArgs,
    dump::{write_python_threads, PythonDump, PythonStatus},
    names::PythonNames,
    stacks::python_share,
    CodeCache, PyFiles, PyRuntime, PySupport,
};
use crate::runtimes::interpreter::{dumped, InterpreterStatus};
use crate::{
    collect::metrics::RuntimeMetric,
    record::{Profiles, Recorder},
    runtimes::{
        args::RuntimeArgs,
        seam::{Instance, Loader, Process, Runtime, RuntimeBundle, RuntimeReport, Window},
    },
    symbolize::RuntimeNames,
    write::BundleFile,
};

pub const RUNTIME: Runtime = Runtime {
    name: "python",
    loader: |args: &RuntimeArgs| Box::new(PyLoader { args: args.python.clone(), files: PyFiles::default() }),
    metric: Some(&PYTHON_THREADS),
    frame_kind: Some(autodump_common::runtimes::kind::PYTHON),
    file_reader: None,
};

/// The thread states of a CPython program's interpreters; as the process's threads: a pool that
/// leaks Python threads.
pub static PYTHON_THREADS: RuntimeMetric = RuntimeMetric {
    name: "python_threads",
    unit: "Python threads",
    help: "Python threads of the target's CPython processes",
    default: (50.0, 50.0, 1000.0),
};

struct PyLoader {
    args: PythonArgs,
    files: PyFiles,
}

impl Loader for PyLoader {
    fn name(&self) -> &'static str {
        "python"
    }

    fn attach(&mut self, process: &Process<'_>) -> Option<Box<dyn Instance>> {
        let (pid, maps) = (process.pid, process.maps?);
        let rt = match PySupport::detect(pid, maps, &mut self.files) {
            PySupport::NotPython => return None,
            PySupport::Ready(rt) => {
                tracing::info!(pid, version = %rt.version, "CPython: its threads are dumped");
                Ok(rt)
            }
            PySupport::Unsupported { version, why } => {
                tracing::warn!(pid, version = %version, "CPython, but its threads cannot be read: {why}");
                Err((version, why))
            }
        };
        let frames = Err("not probed yet".into());
        let eval_frames = self.args.python_eval_frames;
        Some(Box::new(PyInstance { pid, rt, eval_frames, frames, codes: CodeCache::default(), threads: None }))
    }

    fn files_read(&self) -> Option<(&'static str, u64)> {
        Some(("python_files_read", self.files.reads))
    }
}

struct PyInstance {
    pid: u32,
    /// Its interpreter, or (version, why) it cannot be read.
    rt: Result<Arc<PyRuntime>, (String, String)>,
    eval_frames: bool,
    /// Whether the probes emit its Python frames (CFI walks, the eval loop found), or why not.
    frames: Result<(), String>,
    /// Its code objects' names and line tables, read once, for the thread dump.
    codes: CodeCache,
    /// (threads, threads with Python frames) in the last dump.
    threads: Option<(usize, usize)>,
}

impl Instance for PyInstance {
    fn probe(&self) -> Option<Result<autodump_common::runtimes::RuntimeProc, String>> {
        let rt = self.rt.as_ref().ok()?;
        Some(rt.probe_info().ok_or_else(|| {
            let why = "the interpreter has no _PyEval_EvalFrameDefault symbol";
            tracing::warn!(pid = self.pid, "{why}: stacks have native frames only");
            why.to_string()
        }))
    }

    fn probed(&mut self, result: Result<(), String>) {
        self.frames = result;
    }

    fn threads(&self) -> Option<Vec<(u32, u64)>> {
        let rt = self.rt.as_ref().ok().filter(|_| self.frames.is_ok())?;
        Some(rt.thread_states().unwrap_or_default())
    }

    fn names(&mut self) -> Option<Box<dyn RuntimeNames>> {
        let rt = self.rt.as_ref().ok()?;
        Some(Box::new(PythonNames::new(rt.clone(), self.eval_frames)))
    }

    fn locks(&self) -> Vec<crate::model::locks::NamedLock> {
        let Ok(rt) = self.rt.as_ref() else { return Vec::new() };
        let ranges = rt.gil_ranges().map_err(|e| tracing::debug!(pid = self.pid, "the GIL: {e}")).unwrap_or_default();
        ranges.into_iter().map(|(start, end)| crate::model::locks::NamedLock { start, end, name: "the GIL" }).collect()
    }

    fn metric(&self) -> Option<(&'static RuntimeMetric, u64)> {
        let rt = self.rt.as_ref().ok()?;
        let states = rt.thread_states().map_err(|e| tracing::debug!("Python threads: {e}")).ok()?;
        Some((&PYTHON_THREADS, states.len() as u64))
    }

    fn bundle(&mut self, _recorder: &mut Recorder, window: &Window) -> RuntimeBundle {
        let mut bundle = RuntimeBundle::default();
        if let Some(dump) = window.alive.then(|| self.dump()).flatten() {
            let render = Box::new(move |w: &mut dyn std::io::Write| write_python_threads(&dump, w));
            bundle.files.push(BundleFile { name: "python-threads.txt", render });
        }
        bundle
    }

    fn report(&self, profiles: &Profiles) -> Option<RuntimeReport> {
        let read = match &self.rt {
            Ok(rt) => Ok((rt.version.as_str(), rt.file.as_str())),
            Err((version, why)) => Err((version.as_str(), why.as_str())),
        };
        let readable = read.is_ok();
        let status = PythonStatus {
            interpreter: InterpreterStatus::new(read, self.threads, &self.frames),
            cpu_share_with_python: readable.then(|| python_share(profiles.cpu())).flatten(),
            offcpu_share_with_python: readable.then(|| python_share(profiles.offcpu())).flatten(),
        };
        let mut report = RuntimeReport::new("python", &status);
        let html = status.interpreter.html("CPython", "Python", "python-threads.txt", status.cpu_share_with_python);
        report.html = Some((None, html));
        Some(report)
    }
}

impl PyInstance {
    /// Its threads now, each with its Python stack.
    fn dump(&mut self) -> Option<PythonDump> {
        let rt = self.rt.as_ref().ok()?;
        let pid = self.pid;
        let threads = rt.threads(&mut self.codes).map_err(|e| tracing::warn!("cannot dump Python threads: {e}"));
        let threads = dumped(pid, threads.ok()?, |t| t.tid);
        let with_frames = threads.iter().filter(|t| !t.thread.frames.is_empty()).count();
        self.threads = Some((threads.len(), with_frames));
        Some(PythonDump { threads })
    }
}
