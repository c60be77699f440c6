//! autodump: an out-of-process eBPF profiler. The data flows one way:
//! probes → collect (drain maps, read /proc) → symbolize → record (profiles) → write (bundle).

pub mod budget;
pub mod cadence;
pub mod cli;
pub mod collect;
pub mod config;
pub mod error;
pub mod files;
pub mod host;
pub mod incident;
pub mod model;
pub mod offhost;
pub mod probes;
pub mod progress;
pub mod record;
pub mod run;
pub mod runtimes;
pub mod select;
pub mod session;
pub mod ship;
pub mod supervisor;
pub mod symbolize;
/// Test helpers: Go fixtures built with each toolchain, and skipping that CI forbids.
#[cfg(test)]
mod test_go;
pub mod trigger;
pub mod units;
pub mod unwind;
pub mod watch;
pub mod watcher;
pub mod write;
