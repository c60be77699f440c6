//! Go programs' flags.

use std::time::Duration;

use crate::units::parse_duration;

/// How often a Go program's heap profile is read, so that a bundle can compare the heap with
/// what it was before its window.
pub const HEAP_EVERY: &str = "30s";
/// How often a Go program's goroutines are read (state, wait reason, stack), for `gowait.*`.
pub const GOROUTINE_EVERY: &str = "1s";
/// Goroutines a snapshot reads at most; above, an even sample stands for all of them.
pub const GOROUTINE_MAX: &str = "10000";

#[derive(Clone, Debug, clap::Args)]
pub struct GoArgs {
    /// Go programs: how often the runtime's heap profile is read (cheap: one read per bucket),
    /// so that a bundle holds the heap from before its window (`heap-base.pb.gz`) too.
    #[arg(long, default_value = HEAP_EVERY, value_parser = parse_duration)]
    pub heap_every: Duration,

    /// Go programs: how often every goroutine's state, wait reason and stack are read, for the
    /// goroutine-time profile (`gowait.*`) and what grew (`goroutines-diff.svg`).
    #[arg(long, default_value = GOROUTINE_EVERY, value_parser = parse_duration)]
    pub goroutine_every: Duration,

    /// Go programs: goroutines a snapshot reads at most; above, an even sample of them stands for
    /// all (the summary says how many were read).
    #[arg(long, default_value = GOROUTINE_MAX, value_parser = clap::value_parser!(u32).range(1..))]
    pub goroutine_max: u32,
}
