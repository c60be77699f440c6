//! Flags for code named from perf maps.

use std::time::Duration;

use crate::units::parse_duration_or_zero;

/// MiB a process's perf map may take in the agent.
pub const JIT_MAP_MAX_MIB: &str = "16";
/// How often a JVM is asked for its perf map.
pub const JIT_MAP_EVERY: &str = "60s";

#[derive(Clone, Debug, clap::Args)]
pub struct PerfMapArgs {
    /// JIT runtimes: memory a process's perf map (/tmp/perf-PID.map) may take in the agent, in
    /// MiB; past it the oldest entries are dropped (counted in the summary).
    #[arg(long, default_value = JIT_MAP_MAX_MIB, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub jit_map_max_mib: u64,

    /// HotSpot JVMs (JDK 17 and later): how often the JVM is asked for a fresh perf map through
    /// its attach mechanism, as `jcmd PID Compiler.perfmap` does; 0 never asks (its compiled
    /// methods are then named from its own memory).
    #[arg(long, default_value = JIT_MAP_EVERY, value_parser = parse_duration_or_zero)]
    pub jit_map_every: Duration,
}
