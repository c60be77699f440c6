//! Language runtimes, each one folder behind the seam (`seam.rs`): Go (goroutines, the heap
//! profile, Go's own function table), CPython (Python frames in stacks, the thread dump) and
//! code a JIT names in a perf map (Java, Node). The generic stages never name one; this file
//! registers them, one entry each in `ALL` (and their flags, for those that have some).

pub mod args;
pub mod interpreter;
pub mod seam;

pub mod go;
pub mod hotspot;
pub mod perfmap;
pub mod python;
pub mod ruby;

use crate::{collect::metrics::RuntimeMetric, symbolize::files::FileReader};
use args::RuntimeArgs;
use seam::{Loader, Runtime};

/// Every runtime, in the order they attach to a process and name its frames: HotSpot before
/// perf maps, which then name only what a JVM's memory does not (and no JVM is asked for one).
pub const ALL: &[&Runtime] = &[&go::RUNTIME, &python::RUNTIME, &ruby::RUNTIME, &hotspot::RUNTIME, &perfmap::RUNTIME];

/// Every runtime's loader, for the whole agent.
pub fn loaders(args: &RuntimeArgs) -> Vec<Box<dyn Loader>> {
    ALL.iter().map(|r| (r.loader)(args)).collect()
}

/// The metrics runtimes add, which rules can watch.
pub fn metrics() -> impl Iterator<Item = &'static RuntimeMetric> {
    ALL.iter().filter_map(|r| r.metric)
}

/// Runtimes whose probe module emits frames: (frame kind, name), the name naming their probe
/// counters in summaries (`python_frames`, `python_thread_misses`).
pub fn probed() -> impl Iterator<Item = (u8, &'static str)> {
    ALL.iter().filter_map(|r| Some((r.frame_kind?, r.name)))
}

/// Readers of files a runtime names itself (a Go binary, from its own function table).
pub fn file_readers() -> Vec<FileReader> {
    ALL.iter().filter_map(|r| r.file_reader).collect()
}
