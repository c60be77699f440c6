//! Notes the summary adds so that its numbers can be read: how user stacks were walked, and what
//! keeping the memory budget cost.

use super::reports::{BudgetReport, ProbeReport};

/// What a reader needs to know about how user stacks were walked.
pub fn unwind_notes(probes: &ProbeReport, d: &crate::collect::drain::ProbeStats) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(report) = &probes.unwinding else { return notes };
    if report.unwinding.mode == crate::probes::UnwindMode::FramePointers {
        if let Some(why) = report.unwinding.why.as_deref().filter(|w| !w.starts_with("--unwind")) {
            notes.push(format!(
                "user stacks were walked by frame pointer ({why}): in code built without them (glibc, most \
                 distribution binaries) a frame's caller can be missing"
            ));
        }
    }
    if let Some(tables) = &report.tables {
        // Files without CFI at all (Go binaries) are walked by frame pointer as designed.
        let broken = tables.frame_pointer_files.iter().filter(|n| !n.why.starts_with("no .eh_frame"));
        for note in broken.take(5) {
            notes.push(format!("{}: {}", note.path, note.why));
        }
    }
    let walks = d.unwound_stacks.max(1);
    if d.unwind_unknown_code > 0 {
        notes.push(format!(
            "{} of {walks} user stacks stop at code no file maps (JIT or anonymous memory)",
            d.unwind_unknown_code
        ));
    }
    if d.jit_walk_stops * 100 > walks {
        notes.push(format!(
            "{} of {walks} user stacks stop in JIT code whose frame pointer does not lead up the stack \
             (a JVM without -XX:+PreserveFramePointer: its Java frames are leaf-only)",
            d.jit_walk_stops
        ));
    }
    if d.unwind_broken * 100 > walks {
        notes.push(format!(
            "{} of {walks} user stacks stop early, at unwind information the probes cannot follow or an unreadable frame",
            d.unwind_broken
        ));
    }
    notes
}

/// What keeping the memory budget cost: names looked up again, or a window cut short.
pub fn budget_notes(budget: &BudgetReport, shed_before: Option<f64>) -> Vec<String> {
    let mut notes = Vec::new();
    if budget.over_budget_checks > 0 {
        notes.push(format!(
            "the agent went over its memory budget ({} MiB, --memory-budget) {} times: {} cached files were \
             dropped and read again when needed, {} address caches reset",
            budget.budget_bytes >> 20,
            budget.over_budget_checks,
            budget.file_cache.evictions,
            budget.address_cache_resets
        ));
    }
    if let Some(t) = shed_before {
        notes.push(format!(
            "this process was idle and its flight recorder was cut to save memory: the window starts at {t:.0}, \
             not earlier"
        ));
    }
    notes
}
