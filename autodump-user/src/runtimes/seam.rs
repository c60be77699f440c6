//! The runtime seam: what the generic stages ask of a language runtime (Go, CPython, code a JIT
//! names in a perf map), and what it gives back. The stages call only this; a runtime is one
//! folder beside this file, registered in `runtimes/mod.rs`.
//!
//! - A [`Loader`] is the runtime for the whole agent: it reads what each file says of it once,
//!   for every process that maps the file (`files::shared`), and attaches to processes.
//! - An [`Instance`] is the runtime in one process: what the probes need (`RuntimeProc`, its
//!   threads), how its frames are named (`symbolize::RuntimeNames`), what it keeps each
//!   interval, its metric, and what a bundle gains (profiles, files, summary, notes).

use std::path::Path;

use autodump_common::runtimes::RuntimeProc;

use super::args::RuntimeArgs;
use crate::{
    collect::{maps::MemoryMap, metrics::RuntimeMetric},
    record::{profile::Profile, Profiles, Recorder},
    symbolize::{files::FileReader, RuntimeNames},
    unwind::code_rows::CodeRows,
    write::{diff::DiffGraph, BundleFile},
};

pub use crate::model::reports::{IdleThreads, RuntimeReport};

/// What a runtime registers (`runtimes::ALL`).
pub struct Runtime {
    /// Its name in logs, and in its probe counters' names (`python_frames`).
    pub name: &'static str,
    /// Its loader, for the whole agent, with its flags.
    pub loader: fn(&RuntimeArgs) -> Box<dyn Loader>,
    /// The metric its rule watches, when it has one.
    pub metric: Option<&'static RuntimeMetric>,
    /// Its frame kind, when its probe module emits frames of its own.
    pub frame_kind: Option<u8>,
    /// Names the addresses of files it knows better than their symbols (Go's function table).
    pub file_reader: Option<FileReader>,
}

/// One runtime, for the whole agent.
pub trait Loader {
    /// Its name in logs.
    fn name(&self) -> &'static str;
    /// The runtime in `process`, when the process runs it (supported or not: an instance of a
    /// runtime it cannot read says why in its report); None when it does not run it.
    fn attach(&mut self, process: &Process<'_>) -> Option<Box<dyn Instance>>;
    /// Its files read so far, under its key in the summary's `agent_memory`
    /// (`python_files_read`): each file once, for every process that maps it.
    fn files_read(&self) -> Option<(&'static str, u64)> {
        None
    }
}

/// What a loader sees of a process at attach.
pub struct Process<'a> {
    pub pid: u32,
    pub exe: &'a Path,
    /// Its memory map (None when it could not be read).
    pub maps: Option<&'a MemoryMap>,
    /// Seconds a bundle may reach back: what an instance keeps over time is kept this long.
    pub keep_s: f64,
    /// A runtime attached before names the code this process generates outside files (a
    /// JIT's code) from the process's own memory: nothing need be asked of the process.
    pub code_named: bool,
}

/// One process's runtime.
pub trait Instance {
    /// What its probe module needs to emit its frames in this process's walks; `Err` says why
    /// its stacks will have native frames only. None: the runtime has no frames of its own.
    fn probe(&self) -> Option<Result<RuntimeProc, String>> {
        None
    }
    /// Whether the probes emit its frames (the walk is by CFI and took it), or why not.
    fn probed(&mut self, _result: Result<(), String>) {}
    /// The word of each thread its probe step starts from, (tid, word), read now.
    fn threads(&self) -> Option<Vec<(u32, u64)>> {
        None
    }
    /// Rows that walk the code it generates outside files (a JIT's code cache), when they
    /// changed since it was last asked.
    fn code_rows(&mut self) -> Option<CodeRows> {
        None
    }
    /// Whether it names the code the process generates outside files, from its memory.
    fn names_code(&self) -> bool {
        false
    }
    /// What names its frames (and any code it runs outside files) in this process's stacks.
    fn names(&mut self) -> Option<Box<dyn RuntimeNames>> {
        None
    }
    /// Locks it knows by name, where they are in the process now (CPython's GIL).
    fn locks(&self) -> Vec<crate::model::locks::NamedLock> {
        Vec::new()
    }
    /// Once an interval: what it keeps for bundles (snapshots over time).
    fn tick(&mut self, _recorder: &mut Recorder, _now: f64) {}
    /// Its metric and the value now, when it has one.
    fn metric(&self) -> Option<(&'static RuntimeMetric, u64)> {
        None
    }
    /// What a bundle over `window` gains.
    fn bundle(&mut self, _recorder: &mut Recorder, _window: &Window) -> RuntimeBundle {
        RuntimeBundle::default()
    }
    /// What the bundle's summary says of it, over the bundle's profiles (after `bundle`).
    fn report(&self, profiles: &Profiles) -> Option<RuntimeReport>;
}

/// The window of a bundle, Unix seconds.
pub struct Window {
    pub from: f64,
    pub to: f64,
    /// The process can still be read (not an exit bundle).
    pub alive: bool,
}

/// What a runtime adds to a bundle.
#[derive(Default)]
pub struct RuntimeBundle {
    /// Profiles of its own kinds (written like every other).
    pub profiles: Vec<Profile>,
    /// Differential flamegraphs.
    pub diffs: Vec<DiffGraph>,
    /// Files of its own (a thread dump).
    pub files: Vec<BundleFile>,
}
