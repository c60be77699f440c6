//! What a bundle holds of a Go program's goroutines, from the snapshots of its window and a
//! read at its end: where they spent their time (`gowait.*`), their counts by stack at the
//! window's start and end (`goroutines-diff.svg`), the goroutines now (`goroutines.*`, and one
//! by one in `goroutines.txt`), and the summary's growth and longest waits.

use std::sync::Arc;

use super::{
    dump::{DumpedGoroutine, GoroutineDump, MAX_LISTED},
    frames::{state_frame, waited_in, without_frames_past_root, without_wrappers, NO_STACK},
    goroutine_watch::{grew, GoEntry, GoroutineWatch},
    kinds::{GOROUTINES, GO_WAIT},
    report::{GoroutineGrowth, GoroutineWait, SnapshotReport},
    GoRuntime, Goroutine,
};
use crate::{
    record::{
        profile::{Profile, ProfileKind, SampleValue, StackPart},
        Recorder,
    },
    symbolize::Location,
};

/// The goroutine files of one bundle.
#[derive(Default)]
pub struct GoBundle {
    /// `gowait`, and `goroutines` when the process could be read at the end.
    pub profiles: Vec<Profile>,
    /// Goroutines by stack at the window's first and last snapshot (`goroutines-diff.svg`).
    pub counts: Option<(Profile, Profile)>,
    /// The goroutines at the end, one by one (`goroutines.txt`).
    pub dump: Option<GoroutineDump>,
}

/// What the summary says of them.
#[derive(Clone, Debug, Default)]
pub struct GoroutineFacts {
    pub snapshots: Option<SnapshotReport>,
    pub grew: Vec<GoroutineGrowth>,
    pub top_waits: Vec<GoroutineWait>,
}

/// The goroutine files of a bundle over [from, to] (Unix seconds); `rt` is `None` once the
/// process is gone (the snapshots still tell what its goroutines did).
pub fn go_bundle(
    watch: &mut GoroutineWatch,
    rt: Option<&GoRuntime>,
    recorder: &mut Recorder,
    (from, to): (f64, f64),
    now: f64,
) -> (GoBundle, GoroutineFacts) {
    let window = watch.window(from, to);
    let mut bundle = GoBundle::default();
    let mut facts = GoroutineFacts::default();
    if window.report.snapshots > 0 {
        bundle.profiles.push(go_profile(recorder, GO_WAIT, &window.time));
        let (first, last) = (&window.first, &window.last);
        bundle.counts = Some((go_profile(recorder, GOROUTINES, first), go_profile(recorder, GOROUTINES, last)));
        facts.grew = grew(&window, &mut |frames| folded(recorder, frames));
        facts.top_waits = watch.top_waits(now, &mut |frames| waited_in_stack(recorder, frames));
        facts.snapshots = Some(window.report);
    }
    let Some(rt) = rt else { return (bundle, facts) };
    let started = std::time::Instant::now();
    match watch.read_all(rt) {
        Ok(mut goroutines) => {
            bundle.profiles.push(goroutine_profile(recorder, &goroutines));
            goroutines.sort_unstable_by_key(|g| g.goid);
            let left_out = goroutines.len().saturating_sub(MAX_LISTED);
            let listed = goroutines
                .iter()
                .take(MAX_LISTED)
                .map(|g| DumpedGoroutine {
                    goid: g.goid,
                    state: g.state.as_str().into(),
                    waiting_s: watch.waited(g, now),
                    stack: go_stack(recorder, &g.frames),
                })
                .collect();
            bundle.dump = Some(GoroutineDump { goroutines: listed, left_out });
            tracing::debug!(
                goroutines = goroutines.len(),
                took_ms = started.elapsed().as_secs_f64() * 1e3,
                "goroutines dumped"
            );
        }
        Err(e) => tracing::warn!("cannot dump goroutines: {e}"),
    }
    (bundle, facts)
}

/// A profile of goroutines: one per stack and state, symbolized like the rest.
fn goroutine_profile(recorder: &mut Recorder, goroutines: &[Goroutine]) -> Profile {
    let entries: Vec<GoEntry> = goroutines
        .iter()
        .map(|g| GoEntry { frames: g.frames.clone(), state: g.state.as_str().into(), goroutines: 1, seconds: 0.0 })
        .collect();
    go_profile(recorder, GOROUTINES, &entries)
}

/// A profile of goroutine stacks of `kind`: the root frame is the state, and in the
/// goroutine-time profile (`GO_WAIT`) the leaf is too, as `[chan receive]`.
fn go_profile(recorder: &mut Recorder, kind: ProfileKind, entries: &[GoEntry]) -> Profile {
    let mut profile = Profile::new(kind);
    for e in entries {
        let locations = go_stack(recorder, &e.frames);
        let mut parts = Vec::with_capacity(2);
        if kind == GO_WAIT {
            parts.push(StackPart::Pseudo(state_frame(&e.state)));
        }
        parts.push(if locations.is_empty() { StackPart::Pseudo(NO_STACK) } else { StackPart::User(&locations) });
        let value = SampleValue { count: e.goroutines, nanos: (e.seconds * 1e9) as u64, ..Default::default() };
        profile.add(e.state.clone(), &parts, value);
    }
    profile
}

/// A goroutine's stack, named: every saved pc of a parked goroutine is a return address, so the
/// call is looked up.
pub fn go_stack(recorder: &mut Recorder, frames: &[u64]) -> Vec<Arc<Location>> {
    let addrs: Vec<u64> = frames.iter().map(|a| a.saturating_sub(1)).collect();
    without_wrappers(without_frames_past_root(recorder.user_locations(&addrs)))
}

/// A goroutine stack as folded names, root first.
fn folded(recorder: &mut Recorder, frames: &[u64]) -> String {
    let stack = go_stack(recorder, frames);
    let names: Vec<&str> = stack.iter().rev().flat_map(|l| l.frames.iter().rev()).map(|f| &*f.function).collect();
    names.join(";")
}

/// The function a goroutine with this stack waits in.
fn waited_in_stack(recorder: &mut Recorder, frames: &[u64]) -> String {
    let stack = go_stack(recorder, frames);
    let names = stack.iter().flat_map(|l| l.frames.iter()).map(|f| &*f.function);
    waited_in(names).unwrap_or("[no stack]").to_string()
}
