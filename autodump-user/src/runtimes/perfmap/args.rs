//! Flags for code named from perf maps.

use std::time::Duration;

use crate::units::parse_duration_or_zero;

/// MiB a process's perf map may take in the agent.
pub const JIT_MAP_MAX_MIB: &str = "16";
/// How often a JVM whose code is not named from its memory is asked for its perf map.
pub const JIT_MAP_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, clap::Args)]
pub struct PerfMapArgs {
    /// JIT runtimes: memory a process's perf map (/tmp/perf-PID.map) may take in the agent, in
    /// MiB; past it the oldest entries are dropped (counted in the summary).
    #[arg(long, default_value = JIT_MAP_MAX_MIB, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub jit_map_max_mib: u64,

    /// HotSpot JVMs (JDK 17 and later): how often the JVM is asked for a fresh perf map through
    /// its attach mechanism, as `jcmd PID Compiler.perfmap` does; 0 never asks. Unset, a JVM is
    /// asked (every JIT_MAP_EVERY) only when its code cannot be named from its own memory.
    #[arg(long, value_parser = parse_duration_or_zero)]
    pub jit_map_every: Option<Duration>,
}

impl PerfMapArgs {
    /// How often a JVM is asked for its map, None for never; `code_named`: its code is named
    /// from its memory.
    pub fn requests_every(&self, code_named: bool) -> Option<Duration> {
        match self.jit_map_every {
            Some(every) => (!every.is_zero()).then_some(every),
            None if code_named => None,
            None => Some(JIT_MAP_EVERY),
        }
    }
}
