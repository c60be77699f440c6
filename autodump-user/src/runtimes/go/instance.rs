//! Go behind the runtime seam: a Go executable is read once per file (`GoFiles`); each Go
//! process keeps snapshots of its heap profile and goroutines for its bundles, reports its
//! goroutine count for the `goroutines` rule, and ends its stacks at Go's roots. Go's code is
//! named from the binary's own function table (`file_names`), stripped or not.

use std::{path::Path, sync::Arc, time::SystemTime};

use super::{
    args::GoArgs,
    binary::GoBinary,
    bundle::{go_bundle, GoroutineFacts},
    dump::write_goroutines_txt,
    frames::{GoStacks, IDLE_THREAD},
    goroutine_watch::GoroutineWatch,
    heap_watch::HeapWatch,
    kinds::{GO_WAIT, HEAP, HEAP_BASE},
    report::{heap_notes, html, wait_verdict, GoStatus},
    GoFiles, GoRuntime, GoSupport,
};
use crate::{
    collect::{metrics::RuntimeMetric, unix_now},
    record::{Profiles, Recorder},
    runtimes::{
        args::RuntimeArgs,
        seam::{IdleThreads, Instance, Loader, Process, Runtime, RuntimeBundle, RuntimeReport, Window},
    },
    symbolize::{files::OwnNames, Frame, RuntimeNames},
    write::{
        diff::{DiffGraph, DiffSide, DiffStyle},
        BundleFile,
    },
};

pub const RUNTIME: Runtime = Runtime {
    name: "go",
    loader: |args: &RuntimeArgs| Box::new(GoLoader { args: args.go.clone(), files: GoFiles::default() }),
    metric: Some(&GOROUTINES),
    frame_kind: None,
    file_reader: Some(file_names),
};

/// Live goroutines, exactly as `runtime.NumGoroutine()` counts them; holmes's default rule.
pub static GOROUTINES: RuntimeMetric = RuntimeMetric {
    name: "goroutines",
    unit: "goroutines",
    help: "Live goroutines of the target's Go processes",
    default: (3000.0, 20.0, 200_000.0),
};

const GOROUTINE_DIFF: DiffStyle = DiffStyle {
    normalize: false,
    subtitle: "red: more goroutines at the window's end than at its start, blue: fewer (goroutines)",
    count_name: "goroutines",
    empty: "[no goroutines at the window's end] 1 1",
};

const HEAP_DIFF: DiffStyle = DiffStyle {
    normalize: false,
    subtitle: "red: more heap in use now than before the window, blue: less (bytes)",
    count_name: "bytes",
    empty: "[no heap in use] 1 1",
};

/// A Go binary, named from its own `.gopclntab` (with or without `.symtab`).
pub fn file_names(path: &Path, shown: &str) -> Option<Arc<dyn OwnNames>> {
    let go = GoBinary::open(path)?;
    tracing::info!(file = shown, version = ?go.version(), inlined = go.has_inline_trees(), "Go binary: symbolized from .gopclntab");
    Some(Arc::new(go))
}

impl OwnNames for GoBinary {
    fn frames(&self, offset: u64) -> Option<Arc<[Frame]>> {
        let frames = GoBinary::frames(self, offset)?;
        let frames = frames.into_iter().map(|f| Frame {
            function: f.function.into(),
            file: f.file.map(Arc::from),
            line: f.line,
        });
        Some(frames.collect())
    }
}

struct GoLoader {
    args: GoArgs,
    files: GoFiles,
}

impl Loader for GoLoader {
    fn name(&self) -> &'static str {
        "go"
    }

    fn attach(&mut self, process: &Process<'_>) -> Option<Box<dyn Instance>> {
        let pid = process.pid;
        let rt = match GoSupport::detect(pid, &mut self.files) {
            GoSupport::NotGo => return None,
            GoSupport::Ready(rt) => {
                tracing::info!(pid, "Go program: goroutines are counted and dumped");
                Ok(rt)
            }
            GoSupport::Unavailable(why) => {
                tracing::warn!(pid, "Go program, but goroutines cannot be read: {why}");
                Err(why)
            }
        };
        let a = &self.args;
        Some(Box::new(GoInstance {
            rt,
            heap: HeapWatch::new(a.heap_every, process.keep_s),
            goroutines: GoroutineWatch::new(a.goroutine_every, a.goroutine_max as usize, process.keep_s),
            facts: GoroutineFacts::default(),
        }))
    }

    fn files_read(&self) -> Option<(&'static str, u64)> {
        Some(("go_files_read", self.files.reads))
    }
}

struct GoInstance {
    /// Its runtime, or why it cannot be read.
    rt: Result<Box<GoRuntime>, String>,
    /// Heap profiles and goroutine snapshots over the recent past.
    heap: HeapWatch,
    goroutines: GoroutineWatch,
    /// What the last bundle said of the goroutines.
    facts: GoroutineFacts,
}

impl Instance for GoInstance {
    fn names(&mut self) -> Option<Box<dyn RuntimeNames>> {
        Some(Box::new(GoStacks))
    }

    fn tick(&mut self, _recorder: &mut Recorder, now: f64) {
        if let Ok(rt) = &self.rt {
            self.heap.observe(rt, now);
            self.goroutines.observe(rt, now);
        }
    }

    fn metric(&self) -> Option<(&'static RuntimeMetric, u64)> {
        let rt = self.rt.as_ref().ok()?;
        let started = std::time::Instant::now();
        let count = rt.count().map_err(|e| tracing::debug!("goroutine count: {e}")).ok();
        tracing::debug!(?count, took_us = started.elapsed().as_micros() as u64, "goroutines counted");
        Some((&GOROUTINES, count?))
    }

    fn bundle(&mut self, recorder: &mut Recorder, window: &Window) -> RuntimeBundle {
        let Ok(rt) = &self.rt else { return RuntimeBundle::default() };
        let now = unix_now(SystemTime::now());
        let alive = window.alive.then_some(&**rt);
        let (go, facts) = go_bundle(&mut self.goroutines, alive, recorder, (window.from, window.to), now);
        self.facts = facts;
        let mut bundle = RuntimeBundle { profiles: go.profiles, ..Default::default() };
        if window.alive {
            bundle.profiles.extend(self.heap.profiles(rt, recorder, window.from, now));
        }
        if let Some((first, last)) = go.counts {
            bundle.diffs.push(DiffGraph {
                file: "goroutines-diff.svg",
                follows: GO_WAIT,
                caption: "Goroutines: at the window's end against its start (what grew)",
                title: ("goroutines of", "at the window's end against its start"),
                style: &GOROUTINE_DIFF,
                before: DiffSide::Own(first),
                after: DiffSide::Own(last),
            });
        }
        if bundle.profiles.iter().any(|p| p.kind == HEAP_BASE) {
            bundle.diffs.push(DiffGraph {
                file: "heap-diff.svg",
                follows: HEAP,
                caption: "Go heap: in use now against before the window (what grew)",
                title: ("Go heap in use of", "now against before the window"),
                style: &HEAP_DIFF,
                before: DiffSide::Kind(HEAP_BASE),
                after: DiffSide::Kind(HEAP),
            });
        }
        if let Some(dump) = go.dump {
            let render = Box::new(move |w: &mut dyn std::io::Write| write_goroutines_txt(&dump, w));
            bundle.files.push(BundleFile { name: "goroutines.txt", render });
        }
        bundle
    }

    fn report(&self, profiles: &Profiles) -> Option<RuntimeReport> {
        let status = match &self.rt {
            Ok(_) => GoStatus {
                goroutines_available: true,
                reason: None,
                heap: self.heap.report.clone(),
                goroutine_snapshots: self.facts.snapshots.clone(),
                goroutines_grew: self.facts.grew.clone(),
                top_waits: self.facts.top_waits.clone(),
            },
            Err(why) => GoStatus {
                goroutines_available: false,
                reason: Some(why.clone()),
                heap: None,
                goroutine_snapshots: None,
                goroutines_grew: Vec::new(),
                top_waits: Vec::new(),
            },
        };
        let mut report = RuntimeReport::new("go", &status);
        report.notes = heap_notes(status.heap.as_ref());
        report.wait = profiles.get(GO_WAIT).and_then(wait_verdict);
        report.idle = Some(IdleThreads { key: "idle_go_threads_us", frame: IDLE_THREAD });
        let page = html(&status);
        report.html = (!page.is_empty()).then_some((Some(GO_WAIT), page));
        Some(report)
    }
}
