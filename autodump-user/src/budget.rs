//! `--memory-budget`: the agent's own heap, kept under a bound however many processes it
//! watches. Checked once an interval; over it, the agent frees in a stated order, each step only
//! if the one before did not suffice:
//! 1. shared file caches (symbols, debug files, names by file offset), least recently used
//!    first, of files not named for `FILE_UNUSED`: re-read from disk when needed again (a file
//!    not named for `FILE_EXPIRY` goes whatever the budget);
//! 2. the address caches of idle processes, then of every process;
//! 3. the flight-recorder depth of idle processes (down to `IDLE_DEPTH_S`).
//!
//! A bundle being written is never cut: writing happens within one interval, between checks.
//! What was freed is counted in every summary (`agent.memory`) and logged once per change.

use crate::{collect::memory::heap_in_use, host::ProbeHost, supervisor::Supervisor};

/// An idle process's flight recorder keeps this much when the budget is short.
const IDLE_DEPTH_S: f64 = 10.0;
/// Idle: nothing recorded for this long.
const IDLE_FOR_S: f64 = 30.0;
/// A file named within this long is not evicted: it would be read again at once.
const FILE_UNUSED: std::time::Duration = std::time::Duration::from_secs(30);
/// A file not named for this long is dropped whatever the budget: a host's passing programs
/// (cron jobs, deploy scripts) do not fill the cache up to the budget.
const FILE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(600);
/// Freeing aims this far under the budget, so that one check does not follow another.
const HEADROOM: f64 = 0.9;
/// Address caches are dropped at most this often: names looked up again every interval would
/// cost CPU for nothing when the agent's working set itself is over the budget.
const CACHE_RESET_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

pub struct MemoryBudget {
    limit: usize,
    /// Whether the last check found the agent over budget (logged once per change).
    over: bool,
    /// When address caches were last dropped.
    reset_at: Option<std::time::Instant>,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        Self { limit: usize::try_from(limit).unwrap_or(usize::MAX), over: false, reset_at: None }
    }

    /// Checks the heap after an interval's work and frees what it must; the report goes to the
    /// host for summaries.
    pub fn enforce(&mut self, host: &mut ProbeHost, supervisors: &mut [Supervisor]) {
        host.files.borrow_mut().evict(usize::MAX, FILE_EXPIRY);
        let files_read = host.files_read();
        let report = &mut host.budget;
        report.budget_bytes = self.limit as u64;
        report.file_cache = host.files.borrow().stats();
        report.files_read = files_read;
        let used = heap_in_use();
        report.heap_bytes = used as u64;
        if used <= self.limit {
            if self.over {
                tracing::info!(heap_mib = used >> 20, budget_mib = self.limit >> 20, "back within the memory budget");
            }
            self.over = false;
            return;
        }
        report.over_budget_checks += 1;
        let target = (self.limit as f64 * HEADROOM) as usize;
        host.files.borrow_mut().evict(used - target, FILE_UNUSED);
        let mut watchers: Vec<_> = supervisors.iter_mut().flat_map(|s| s.watchers.values_mut()).collect();
        let may_reset = self.reset_at.is_none_or(|t| t.elapsed() >= CACHE_RESET_EVERY);
        // Idle processes first, then every process.
        for idle_only in [true, false].into_iter().filter(|_| may_reset) {
            for w in watchers.iter_mut().filter(|w| !idle_only || w.idle_for(IDLE_FOR_S)) {
                if heap_in_use() <= target {
                    break;
                }
                if w.session.recorder.clear_names() {
                    report.address_cache_resets += 1;
                    self.reset_at = Some(std::time::Instant::now());
                }
            }
        }
        for w in watchers.iter_mut().filter(|w| w.idle_for(IDLE_FOR_S)) {
            if heap_in_use() <= target {
                break;
            }
            report.flight_recorder_cuts += u64::from(w.shed(IDLE_DEPTH_S));
        }
        report.file_cache = host.files.borrow().stats();
        let after = heap_in_use();
        report.heap_bytes = after as u64;
        if !self.over {
            tracing::warn!(
                heap_mib = used >> 20,
                after_mib = after >> 20,
                budget_mib = self.limit >> 20,
                evicted_files = report.file_cache.evictions,
                address_cache_resets = report.address_cache_resets,
                flight_recorder_cuts = report.flight_recorder_cuts,
                "over the memory budget: caches freed (see --memory-budget)"
            );
        }
        self.over = true;
    }
}
