//! A Go program's goroutines as a bundle's `goroutines.txt` lists them, one by one, as Go's own
//! `/debug/pprof/goroutine?debug=2` does: id, state, how long it has waited, stack.

use std::sync::Arc;

use crate::symbolize::Location;

/// Goroutines listed one by one at most; the rest are counted (they are all in
/// `goroutines.folded`, grouped).
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug, Default)]
pub struct GoroutineDump {
    pub goroutines: Vec<DumpedGoroutine>,
    /// Goroutines not listed (over `MAX_LISTED`, or not read: see the snapshot report).
    pub left_out: usize,
}

#[derive(Debug)]
pub struct DumpedGoroutine {
    pub goid: u64,
    pub state: Arc<str>,
    /// Seconds it has waited in this state, when it waits and that is known.
    pub waiting_s: Option<f64>,
    /// Innermost first.
    pub stack: Vec<Arc<Location>>,
}
