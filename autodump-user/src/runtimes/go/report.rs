//! What a Go program's bundle says of its runtime: the summary's `go` section, its notes, the
//! verdict's word on where goroutines wait, and the page's tables.

use std::{collections::HashMap, fmt::Write};

use serde::Serialize;

use super::frames::waited_in;
use crate::{
    model::{reports::is_zero, verdict::NAMED_SHARE},
    record::profile::Profile,
    write::chart::escape,
};

/// Go-specific facts of a bundle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoStatus {
    /// False for a Go binary whose goroutines cannot be read (e.g. stripped with -ldflags=-s -w).
    pub goroutines_available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The runtime's heap profile, when the bundle tried to read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapReport>,
    /// The goroutine snapshots behind `gowait.*`: how often, how many, how much they cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutine_snapshots: Option<SnapshotReport>,
    /// The stacks whose goroutine count grew most over the window (where a leak shows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub goroutines_grew: Vec<GoroutineGrowth>,
    /// The goroutines waiting longest when the bundle was written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_waits: Vec<GoroutineWait>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotReport {
    pub every_s: f64,
    /// Snapshots in the bundle's window.
    pub snapshots: usize,
    /// Goroutines at the last snapshot, and how many of them it read (evenly, over
    /// `--goroutine-max`).
    pub goroutines: usize,
    pub read: usize,
    /// The last snapshot's cost, and the stacks it had to walk (the others had not moved).
    pub read_ms: f64,
    pub walked: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutineGrowth {
    /// Folded, root first.
    pub stack: String,
    pub before: u64,
    pub after: u64,
    /// The state most of them were in at the end.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutineWait {
    pub goid: u64,
    pub state: String,
    /// Seconds it had waited in this state, at least (as the snapshots and the runtime saw it).
    pub waiting_s: f64,
    /// Its innermost user function.
    pub function: String,
}

/// What was read of a Go program's heap profile (`heap.pb.gz`, `heap-base.pb.gz`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeapReport {
    pub available: bool,
    /// `runtime.MemProfileRate`: one sample per this many bytes allocated (0: off).
    pub rate: u64,
    pub buckets: usize,
    /// When the earlier snapshot (`heap-base.pb.gz`) was read, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_read_at: Option<f64>,
    /// Buckets that made no sense and ended the read (a garbled list).
    #[serde(skip_serializing_if = "is_zero")]
    pub garbage_buckets: u64,
    pub read_ms: f64,
    /// Why there is no heap profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a Go program has no heap profile, or a short one.
pub fn heap_notes(heap: Option<&HeapReport>) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(heap) = heap else { return notes };
    if let Some(why) = &heap.reason {
        notes.push(format!("no Go heap profile: {why}"));
    }
    if heap.garbage_buckets > 0 {
        notes.push(format!(
            "the Go heap profile stopped at a bucket that made no sense, after {} buckets",
            heap.buckets
        ));
    }
    notes
}

/// The verdict's word on where the program waits: the wait reason and function holding most of
/// the goroutine time, and their share of it, if it holds at least `NAMED_SHARE` (running and
/// runnable goroutines do not wait).
pub fn wait_verdict(gowait: &Profile) -> Option<String> {
    let mut by_wait: HashMap<(&str, &str), u64> = HashMap::new();
    let mut total = 0u64;
    for (key, value) in &gowait.samples {
        total += value.nanos;
        if matches!(&*key.thread, "running" | "runnable") {
            continue;
        }
        let names = key.stack.iter().flat_map(|&i| gowait.locations[i as usize].frames.iter()).map(|f| &*f.function);
        if let Some(name) = waited_in(names.filter(|n| !n.starts_with('['))) {
            *by_wait.entry((&key.thread, name)).or_default() += value.nanos;
        }
    }
    let ((state, name), w) = by_wait.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))?;
    let share = w as f64 / total.max(1) as f64;
    (share >= NAMED_SHARE).then(|| format!("{:.0}% of goroutine time waiting on [{state}] in {name}", share * 100.0))
}

/// The goroutines that waited longest and the stacks whose count grew most, for `index.html`
/// (after the goroutine-time graph).
pub fn html(go: &GoStatus) -> String {
    let mut html = String::new();
    if !go.top_waits.is_empty() {
        html.push_str("<table><tr><th>goroutine</th><th>waiting</th><th>for (s)</th><th>in</th></tr>");
        for w in &go.top_waits {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td><code>{}</code></td></tr>",
                w.goid,
                escape(&w.state),
                w.waiting_s,
                escape(&w.function)
            );
        }
        html.push_str("</table>");
    }
    if !go.goroutines_grew.is_empty() {
        html.push_str(
            "<h3>Goroutines that grew</h3><table><tr><th>before</th><th>after</th><th>state</th><th>stack</th></tr>",
        );
        for g in &go.goroutines_grew {
            let leaf = g.stack.rsplit(';').take(3).map(escape).collect::<Vec<_>>().join(" &larr; ");
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code title=\"{}\">{}</code></td></tr>",
                g.before,
                g.after,
                escape(&g.state),
                escape(&g.stack),
                leaf
            );
        }
        html.push_str("</table>");
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_problems_become_notes() {
        let off = HeapReport { reason: Some("memory profiling is off".into()), ..Default::default() };
        assert_eq!(heap_notes(Some(&off)), ["no Go heap profile: memory profiling is off"]);
        let garbled = HeapReport { available: true, buckets: 12, garbage_buckets: 1, ..Default::default() };
        let notes = heap_notes(Some(&garbled));
        assert!(notes[0].contains("after 12 buckets"), "{notes:?}");
        assert!(heap_notes(None).is_empty());
    }
}
