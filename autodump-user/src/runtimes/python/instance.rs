//! A session's Python side: the thread dump, the thread count the `python_threads` rule
//! watches, what summaries say of the interpreter, and telling the probes about it.

use super::Session;
use crate::{
    collect::python::PySupport,
    host::ProbeHost,
    model::python::{DumpedPyThread, PythonDump, PythonStatus},
    record::{python_frames::python_share, Profiles},
};

impl Session {
    /// Python threads now, for a CPython program whose interpreter can be read.
    pub fn python_thread_count(&self) -> Option<u64> {
        let PySupport::Ready(rt) = &self.python else { return None };
        rt.thread_states().map(|t| t.len() as u64).map_err(|e| tracing::debug!("Python threads: {e}")).ok()
    }

    /// A Python program's threads now, each with its Python stack.
    pub fn python_dump(&mut self) -> Option<PythonDump> {
        let PySupport::Ready(rt) = &self.python else { return None };
        let pid = self.target.pid;
        let threads = rt.threads(&mut self.python_codes).map_err(|e| tracing::warn!("cannot dump Python threads: {e}"));
        let threads: Vec<DumpedPyThread> = threads
            .ok()?
            .into_iter()
            .map(|thread| {
                let task = format!("/proc/{pid}/task/{}", thread.tid);
                let name = std::fs::read_to_string(format!("{task}/comm")).unwrap_or_default().trim_end().to_string();
                let stat = std::fs::read_to_string(format!("{task}/stat")).unwrap_or_default();
                let active = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('R'));
                DumpedPyThread { thread, name, active }
            })
            .collect();
        let with_frames = threads.iter().filter(|t| !t.thread.frames.is_empty()).count();
        self.python_threads = Some((threads.len(), with_frames));
        Some(PythonDump { threads })
    }

    /// What summaries say about Python, over `profiles`: absent for other programs.
    pub fn python_status(&self, profiles: &Profiles) -> Option<PythonStatus> {
        let (threads, threads_with_frames) = self.python_threads.unzip();
        let status = PythonStatus {
            version: String::new(),
            file: None,
            threads_available: false,
            reason: None,
            threads,
            threads_with_frames,
            frames_in_stacks: false,
            frames_not_in_stacks: None,
            cpu_share_with_python: None,
            offcpu_share_with_python: None,
        };
        match &self.python {
            PySupport::NotPython => None,
            PySupport::Ready(rt) => Some(PythonStatus {
                version: rt.version.clone(),
                file: Some(rt.file.clone()),
                threads_available: true,
                frames_in_stacks: self.python_frames.is_ok(),
                frames_not_in_stacks: self.python_frames.clone().err(),
                cpu_share_with_python: python_share(profiles.cpu()),
                offcpu_share_with_python: python_share(profiles.offcpu()),
                ..status
            }),
            PySupport::Unsupported { version, why } => Some(PythonStatus {
                version: version.clone(),
                reason: Some(why.clone()),
                frames_not_in_stacks: Some(why.clone()),
                ..status
            }),
        }
    }
}

/// Tells the probes where `pid`'s interpreter runs Python code and which threads it has; or
/// why its stacks will have native frames only (said in the log and the summary).
pub(super) fn python_frames(
    host: &mut ProbeHost,
    pid: u32,
    rt: &crate::collect::python::PyRuntime,
) -> Result<(), String> {
    let Some(info) = rt.probe_info() else {
        let why = "the interpreter has no _PyEval_EvalFrameDefault symbol";
        tracing::warn!(pid, "{why}: stacks have native frames only");
        return Err(why.into());
    };
    if !host.watch_python(pid, info) {
        return Err("user stacks are walked by frame pointer (no CFI walk on this kernel, or --unwind fp)".into());
    }
    host.python_threads(pid, &rt.thread_states().unwrap_or_default());
    Ok(())
}
