//! What a bundle's summary says of JIT code: the runtime, its perf map, and how much of the
//! profile it named.

use serde::Serialize;

/// JIT facts of a bundle: absent for a process with neither a known JIT runtime nor a perf map.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JitStatus {
    /// `java` or `node`, when the runtime was recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    /// The map as the target names it (`/tmp/perf-PID.map`), whether it was found, and what it
    /// held: entries kept, lines read, lines that did not parse, entries dropped to stay within
    /// `--jit-map-max-mib`, and times it was replaced and read again.
    pub map: String,
    pub map_found: bool,
    pub entries: usize,
    pub lines: u64,
    pub malformed: u64,
    pub left_out: u64,
    pub rereads: u64,
    /// Why the map was not used (not trusted, unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Share of on-CPU samples and of off-CPU time whose stacks have a frame named from the map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share_named: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offcpu_share_named: Option<f64>,
    /// HotSpot: perf maps the JVM wrote when the agent asked, and whether it keeps frame
    /// pointers in compiled code (`-XX:+PreserveFramePointer`: whole Java stacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maps_requested: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_pointers: Option<bool>,
    /// What to do for named or whole JIT stacks, when something is missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}
