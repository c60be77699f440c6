//! A Go heap snapshot as a profile: one sample per allocating stack, unsampled the way
//! `runtime/pprof` does it, with the runtime's own frames at the leaf left out as it leaves them.

use std::sync::Arc;

use super::heap::{unsample, HeapSnapshot};
use crate::{
    record::{
        profile::{Profile, ProfileKind, SampleValue, StackPart},
        Recorder,
    },
    symbolize::Location,
};

/// The root of every heap stack in folded output (heap profiles have no thread).
pub const HEAP_ROOT: &str = "heap";

/// `snapshot` as a profile of `kind` (`HEAP`, or `HEAP_BASE` for the earlier one).
pub fn heap_profile(recorder: &mut Recorder, snapshot: &HeapSnapshot, kind: ProfileKind) -> Profile {
    let mut profile = Profile::new(kind);
    profile.period = snapshot.rate;
    let root: Arc<str> = Arc::from(HEAP_ROOT);
    for record in &snapshot.records {
        // Return PCs, one per logical frame: the call is the byte before.
        let addrs: Vec<u64> = record.stack.iter().map(|a| a.saturating_sub(1)).collect();
        let locations = logical_frames(&recorder.user_locations(&addrs));
        let (inuse_objects, inuse_bytes) = unsample(
            record.alloc_objects.saturating_sub(record.free_objects),
            record.alloc_bytes.saturating_sub(record.free_bytes),
            snapshot.rate,
        );
        let (alloc_objects, alloc_bytes) = unsample(record.alloc_objects, record.alloc_bytes, snapshot.rate);
        let value =
            SampleValue { count: inuse_objects, bytes: inuse_bytes, alloc_count: alloc_objects, alloc_bytes, nanos: 0 };
        profile.add(root.clone(), &[StackPart::User(without_runtime_leaf(&locations))], value);
    }
    profile
}

/// The runtime records one PC per logical frame, inlined ones included: a PC inside inlined
/// code is followed by one PC in the same function for each caller it was inlined into. As
/// `runtime/pprof` does, each location is expanded once (innermost and its inlined callers) and
/// the PCs that stand for those callers are skipped, rather than named again.
fn logical_frames(locations: &[Arc<Location>]) -> Vec<Arc<Location>> {
    let function = |l: &Arc<Location>| l.frames.last().map(|f| f.function.clone());
    let mut kept = Vec::with_capacity(locations.len());
    let mut i = 0;
    while i < locations.len() {
        let location = &locations[i];
        kept.push(location.clone());
        // The callers it was inlined into: the next PCs in the same physical function.
        let mut callers = location.frames.len().saturating_sub(1);
        i += 1;
        while callers > 0 && i < locations.len() && function(&locations[i]) == function(location) {
            callers -= 1;
            i += 1;
        }
    }
    kept
}

/// As `runtime/pprof` hides them: the leading (innermost) frames in the runtime, unless the
/// whole stack is the runtime's.
fn without_runtime_leaf(locations: &[Arc<Location>]) -> &[Arc<Location>] {
    let is_runtime = |l: &Arc<Location>| l.frames.first().is_some_and(|f| f.function.starts_with("runtime."));
    match locations.iter().position(|l| !is_runtime(l)) {
        Some(first) => &locations[first..],
        None => locations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::tests::loc;

    #[test]
    fn runtime_frames_at_the_leaf_are_hidden() {
        let stack = [loc(1, "runtime.mallocgc", false), loc(2, "runtime.makeslice", false), loc(3, "main.leak", false)];
        let kept: Vec<&str> = without_runtime_leaf(&stack).iter().map(|l| &*l.frames[0].function).collect();
        assert_eq!(kept, ["main.leak"]);
        let all_runtime = [loc(1, "runtime.main", false)];
        assert_eq!(without_runtime_leaf(&all_runtime).len(), 1);
    }

    #[test]
    fn inlined_callers_are_named_once() {
        // main.outer inlines main.inner; the runtime recorded a PC for each, then main.main's.
        let with_outer = |l: Arc<Location>| {
            let mut l = (*l).clone();
            let outer = crate::symbolize::Frame { function: "main.outer".into(), file: None, line: None };
            l.frames = l.frames.iter().cloned().chain([outer]).collect();
            l
        };
        let inlined = with_outer(loc(9, "main.inner", false));
        let mark = with_outer(loc(10, "main.inner", false));
        let stack = [Arc::new(inlined), Arc::new(mark), loc(11, "main.main", false)];
        let kept = logical_frames(&stack);
        let names: Vec<Vec<&str>> = kept.iter().map(|l| l.frames.iter().map(|f| &*f.function).collect()).collect();
        assert_eq!(names, [vec!["main.inner", "main.outer"], vec!["main.main"]]);
    }
}
