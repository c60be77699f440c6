//! What a bundle holds of a Go program's goroutines, from the snapshots of its window and a
//! read at its end: where they spent their time (`gowait.*`), their counts by stack at the
//! window's start and end (`goroutines-diff.svg`), the goroutines now (`goroutines.*`, and one
//! by one in `goroutines.txt`), and the summary's growth and longest waits.

use crate::{
    collect::goruntime::GoRuntime,
    goroutine_watch::{grew, GoroutineWatch},
    model::{
        goroutines::{DumpedGoroutine, GoroutineDump, MAX_LISTED},
        reports::{GoroutineGrowth, GoroutineWait, SnapshotReport},
    },
    record::{
        go_frames::waited_in,
        profile::{Profile, ProfileKind},
        Recorder,
    },
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
        bundle.profiles.push(recorder.go_profile(ProfileKind::GoWait, &window.time));
        let (first, last) = (&window.first, &window.last);
        bundle.counts = Some((
            recorder.go_profile(ProfileKind::Goroutines, first),
            recorder.go_profile(ProfileKind::Goroutines, last),
        ));
        facts.grew = grew(&window, &mut |frames| folded(recorder, frames));
        facts.top_waits = watch.top_waits(now, &mut |frames| waited_in_stack(recorder, frames));
        facts.snapshots = Some(window.report);
    }
    let Some(rt) = rt else { return (bundle, facts) };
    let started = std::time::Instant::now();
    match watch.read_all(rt) {
        Ok(mut goroutines) => {
            bundle.profiles.push(recorder.goroutine_profile(&goroutines));
            goroutines.sort_unstable_by_key(|g| g.goid);
            let left_out = goroutines.len().saturating_sub(MAX_LISTED);
            let listed = goroutines
                .iter()
                .take(MAX_LISTED)
                .map(|g| DumpedGoroutine {
                    goid: g.goid,
                    state: g.state.as_str().into(),
                    waiting_s: watch.waited(g, now),
                    stack: recorder.go_stack(&g.frames),
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

/// A goroutine stack as folded names, root first.
fn folded(recorder: &mut Recorder, frames: &[u64]) -> String {
    let stack = recorder.go_stack(frames);
    let names: Vec<&str> = stack.iter().rev().flat_map(|l| l.frames.iter().rev()).map(|f| &*f.function).collect();
    names.join(";")
}

/// The function a goroutine with this stack waits in.
fn waited_in_stack(recorder: &mut Recorder, frames: &[u64]) -> String {
    let stack = recorder.go_stack(frames);
    let names = stack.iter().flat_map(|l| l.frames.iter()).map(|f| &*f.function);
    waited_in(names).unwrap_or("[no stack]").to_string()
}
