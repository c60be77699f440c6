//! Collection: drain the probes' maps each interval, and read the target from /proc.

pub mod batch;
pub mod capacity;
pub mod cgroup;
pub mod drain;
pub mod maps;
pub mod memory;
pub mod metrics;
pub mod probe_stats;
pub mod process;
pub mod remote;
pub mod stack_tables;
pub mod waits;

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds since the Unix epoch, as used in summaries.
pub fn unix_now(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
