//! Writers: turn a finished recording into a bundle directory of flamegraphs, pprof files,
//! folded stacks and a summary.

pub mod bundle;
pub mod chart;
pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod goroutines;
pub mod index;
pub mod pprof;
pub mod pprof_proto;
pub mod retention;
pub mod summary;
pub mod time;

use std::path::PathBuf;

use bundle::BundleError;
use flamegraph::Caption;
use pprof::PprofMeta;

use crate::record::{profile::Profile, Profiles};

/// Everything a bundle is made of.
pub struct Recording<'a> {
    pub profiles: &'a Profiles,
    pub summary: summary::Summary,
    /// Go programs: every goroutine's stack at the time of writing.
    pub goroutines: Option<&'a Profile>,
    /// Watch-mode bundles add a metrics chart, an index page and, for rules, a diff.
    pub watch: Option<WatchExtras<'a>>,
}

pub struct WatchExtras<'a> {
    pub charts: Vec<chart::Series>,
    /// On-CPU before and after the trigger, for `cpu-diff.svg`.
    pub diff: Option<(&'a Profile, &'a Profile)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("cannot render {what}: {source}")]
    Render { what: &'static str, source: std::io::Error },
    #[error("cannot encode summary: {0}")]
    Summary(#[from] serde_json::Error),
}

/// Renders every file and writes the bundle atomically under `out`; returns its path.
pub fn write_bundle(out: &std::path::Path, rec: &Recording<'_>) -> Result<PathBuf, WriteError> {
    let s = &rec.summary;
    let (cpu, offcpu) = (&rec.profiles.cpu, &rec.profiles.offcpu);
    let start_secs = s.window.start;
    let window = format!("{}, {:.1} s", time::readable_utc(start_secs as u64), s.window.duration_s);
    let caption = Caption { comm: &s.comm, pid: s.pid, window: &window };
    let render = |what, r: std::io::Result<Vec<u8>>| r.map_err(|source| WriteError::Render { what, source });
    let meta = PprofMeta {
        time_nanos: (start_secs * 1e9) as i64,
        duration_nanos: (s.window.duration_s * 1e9) as i64,
        frequency_hz: s.frequency_hz,
        comment: format!("autodump {} pid {} ({})", s.agent_version, s.pid, s.comm),
    };
    let mut files = vec![
        ("cpu.folded", folded::folded(cpu).into_bytes()),
        ("offcpu.folded", folded::folded(offcpu).into_bytes()),
        ("cpu.svg", render("cpu.svg", flamegraph::flamegraph_svg(cpu, &caption))?),
        ("offcpu.svg", render("offcpu.svg", flamegraph::flamegraph_svg(offcpu, &caption))?),
        ("cpu.pb.gz", render("cpu.pb.gz", pprof::gzipped(&pprof::encode(cpu, &meta)))?),
        ("offcpu.pb.gz", render("offcpu.pb.gz", pprof::gzipped(&pprof::encode(offcpu, &meta)))?),
        ("summary.json", serde_json::to_vec_pretty(s)?),
    ];
    if let Some(g) = rec.goroutines {
        files.push(("goroutines.folded", folded::folded(g).into_bytes()));
        files.push(("goroutines.txt", goroutines::goroutines_txt(g).into_bytes()));
        files.push(("goroutines.svg", render("goroutines.svg", flamegraph::flamegraph_svg(g, &caption))?));
        files.push(("goroutines.pb.gz", render("goroutines.pb.gz", pprof::gzipped(&pprof::encode(g, &meta)))?));
    }
    if let Some(extras) = &rec.watch {
        let chart = chart::metrics_svg(&extras.charts, s.window.start, s.window.end, s.window.trigger);
        files.push(("metrics.svg", chart.into_bytes()));
        if let Some((before, after)) = extras.diff {
            let title = format!("on-CPU {} (pid {}): after the trigger vs before", s.comm, s.pid);
            files.push(("cpu-diff.svg", render("cpu-diff.svg", diff::diff_svg(before, after, &title))?));
        }
        files.push(("index.html", index::index_html(s, extras.diff.is_some()).into_bytes()));
    }
    let stamp = s.window.trigger.unwrap_or(start_secs) as u64;
    let name = bundle::bundle_name(&s.comm, s.pid, stamp, &s.reason.kind);
    Ok(bundle::write_bundle(out, &name, &files)?)
}
