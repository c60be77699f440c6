//! Writers: turn a finished recording into a bundle directory of flamegraphs, pprof files,
//! folded stacks and a summary.

pub mod bundle;
pub mod chart;
pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod goroutines;
pub mod index;
pub mod listing;
mod notes;
pub mod pprof;
pub mod pprof_proto;
pub mod retention;
pub mod summary;
pub mod time;

use std::path::PathBuf;

use bundle::BundleError;
use flamegraph::Caption;
use pprof::PprofMeta;

use crate::record::{
    profile::{Profile, ProfileKind},
    Profiles,
};

/// Everything a bundle is made of.
pub struct Recording<'a> {
    /// Every profile, each written as `<stem>.folded`, `<stem>.svg` and `<stem>.pb.gz`.
    pub profiles: &'a Profiles,
    pub summary: summary::Summary,
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

/// An SVG, or when inferno cannot draw it, a small SVG that says why. One graph that cannot be
/// drawn must not cost an incident its other files; the reason is added to the summary's notes.
fn drawn(what: &str, svg: std::io::Result<Vec<u8>>, failures: &mut Vec<String>) -> Vec<u8> {
    svg.unwrap_or_else(|e| {
        let why = format!("{what} could not be drawn: {e}");
        tracing::warn!("{why}");
        let svg = format!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
             width=\"1200\" height=\"40\"><text x=\"10\" y=\"25\" font-family=\"Verdana\" \
             font-size=\"14\">{}</text></svg>\n",
            chart::escape(&why)
        );
        failures.push(why);
        svg.into_bytes()
    })
}

/// One profile's folded stacks, flamegraph (drawn from the same folded text) and pprof file.
fn profile_files(
    profile: &Profile,
    caption: &Caption<'_>,
    meta: &PprofMeta,
    failures: &mut Vec<String>,
) -> Result<Vec<(String, Vec<u8>)>, WriteError> {
    let stem = profile.kind.info().stem;
    let (folded_name, svg_name, pprof_name) =
        (format!("{stem}.folded"), format!("{stem}.svg"), format!("{stem}.pb.gz"));
    let text = folded::folded(profile);
    let svg = drawn(&svg_name, flamegraph::flamegraph_svg(profile.kind, &text, caption), failures);
    let pprof = pprof::gzipped(&pprof::encode(profile, meta))
        .map_err(|source| WriteError::Render { what: profile.kind.info().stem, source })?;
    Ok(vec![(folded_name, text.into_bytes()), (svg_name, svg), (pprof_name, pprof)])
}

/// Renders every file and writes the bundle atomically under `out`; returns its path.
pub fn write_bundle(out: &std::path::Path, rec: Recording<'_>) -> Result<PathBuf, WriteError> {
    let s = &rec.summary;
    let start_secs = s.window.start;
    let window = format!("{}, {:.1} s", time::readable_utc(start_secs as u64), s.window.duration_s);
    let caption = Caption { comm: &s.comm, pid: s.pid, window: &window };
    let meta = PprofMeta {
        time_nanos: (start_secs * 1e9) as i64,
        duration_nanos: (s.window.duration_s * 1e9) as i64,
        frequency_hz: s.frequency_hz,
        fault_period: s.faults.period,
        heap_rate: s.go.as_ref().and_then(|g| g.heap.as_ref()).map_or(0, |h| h.rate),
        comment: format!("autodump {} pid {} ({})", s.agent_version, s.pid, s.comm),
    };
    // Profiles render on one thread per CPU: with 10,000 stacks one takes about half a second,
    // and a thread per profile would hold that many renderings in memory at once.
    let profiles: Vec<&Profile> = rec.profiles.iter().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(profiles.len()).max(1);
    let mut rendered: Vec<(usize, Result<_, WriteError>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                let (caption, meta, profiles, next) = (&caption, &meta, &profiles, &next);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(profile) = profiles.get(i) else { break done };
                        let mut failures = Vec::new();
                        let files = profile_files(profile, caption, meta, &mut failures);
                        done.push((i, files.map(|files| (files, failures))));
                    }
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().expect("the rendering threads do not panic")).collect()
    });
    rendered.sort_by_key(|(i, _)| *i);
    let rendered = rendered.into_iter().map(|(_, r)| r);
    let (mut files, mut failures) = (Vec::new(), Vec::new());
    for result in rendered {
        let (profile_files, profile_failures) = result?;
        files.extend(profile_files);
        failures.extend(profile_failures);
    }
    if let Some(g) = rec.profiles.get(ProfileKind::Goroutines) {
        files.push(("goroutines.txt".into(), goroutines::goroutines_txt(g).into_bytes()));
    }
    if let (Some(base), Some(now)) = (rec.profiles.get(ProfileKind::HeapBase), rec.profiles.get(ProfileKind::Heap)) {
        let title = format!("Go heap in use of {} (pid {}): now against before the window", s.comm, s.pid);
        let svg = drawn("heap-diff.svg", diff::diff_svg(base, now, &title, &diff::HEAP_DIFF), &mut failures);
        files.push(("heap-diff.svg".into(), svg));
    }
    if let Some(extras) = &rec.watch {
        let chart = chart::metrics_svg(&extras.charts, s.window.start, s.window.end, s.window.trigger);
        files.push(("metrics.svg".into(), chart.into_bytes()));
        if let Some((before, after)) = extras.diff {
            let title = format!("on-CPU {} (pid {}): after the trigger vs before", s.comm, s.pid);
            let svg = drawn("cpu-diff.svg", diff::diff_svg(before, after, &title, &diff::CPU_DIFF), &mut failures);
            files.push(("cpu-diff.svg".into(), svg));
        }
        let kinds: Vec<ProfileKind> = rec.profiles.iter().map(|p| p.kind).collect();
        files.push(("index.html".into(), index::index_html(s, &kinds, extras.diff.is_some()).into_bytes()));
    }
    let stamp = s.window.trigger.unwrap_or(start_secs) as u64;
    let name = bundle::bundle_name(&s.comm, s.pid, stamp, &s.reason.kind);
    let mut summary = rec.summary;
    summary.notes.extend(failures);
    files.push(("summary.json".into(), serde_json::to_vec_pretty(&summary)?));
    Ok(bundle::write_bundle(out, &name, &files)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_that_cannot_be_drawn_becomes_a_note() {
        let mut failures = Vec::new();
        let broken = Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "No stack counts <found>"));
        let svg = String::from_utf8(drawn("cpu-diff.svg", broken, &mut failures)).unwrap();
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("cpu-diff.svg could not be drawn: No stack counts &lt;found&gt;"), "{svg}");
        assert_eq!(failures, ["cpu-diff.svg could not be drawn: No stack counts <found>"]);
        assert_eq!(drawn("cpu.svg", Ok(b"<svg/>".to_vec()), &mut failures), b"<svg/>");
        assert_eq!(failures.len(), 1);
    }
}
