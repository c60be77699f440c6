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

/// Names of one profile's folded stacks, flamegraph and pprof file.
type ProfileFileNames = [&'static str; 3];
const CPU_FILES: ProfileFileNames = ["cpu.folded", "cpu.svg", "cpu.pb.gz"];
const OFFCPU_FILES: ProfileFileNames = ["offcpu.folded", "offcpu.svg", "offcpu.pb.gz"];
const GOROUTINE_FILES: ProfileFileNames = ["goroutines.folded", "goroutines.svg", "goroutines.pb.gz"];

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
    [folded_name, svg_name, pprof_name]: ProfileFileNames,
    profile: &Profile,
    caption: &Caption<'_>,
    meta: &PprofMeta,
    failures: &mut Vec<String>,
) -> Result<Vec<(&'static str, Vec<u8>)>, WriteError> {
    let text = folded::folded(profile);
    let svg = drawn(svg_name, flamegraph::flamegraph_svg(profile.kind, &text, caption), failures);
    let pprof = pprof::gzipped(&pprof::encode(profile, meta))
        .map_err(|source| WriteError::Render { what: pprof_name, source })?;
    Ok(vec![(folded_name, text.into_bytes()), (svg_name, svg), (pprof_name, pprof)])
}

/// Renders every file and writes the bundle atomically under `out`; returns its path.
pub fn write_bundle(out: &std::path::Path, rec: Recording<'_>) -> Result<PathBuf, WriteError> {
    let s = &rec.summary;
    let (cpu, offcpu) = (&rec.profiles.cpu, &rec.profiles.offcpu);
    let start_secs = s.window.start;
    let window = format!("{}, {:.1} s", time::readable_utc(start_secs as u64), s.window.duration_s);
    let caption = Caption { comm: &s.comm, pid: s.pid, window: &window };
    let meta = PprofMeta {
        time_nanos: (start_secs * 1e9) as i64,
        duration_nanos: (s.window.duration_s * 1e9) as i64,
        frequency_hz: s.frequency_hz,
        comment: format!("autodump {} pid {} ({})", s.agent_version, s.pid, s.comm),
    };
    let mut failures = Vec::new();
    // On-CPU and off-CPU render on two threads: with 10,000 stacks each takes about half a second.
    let (cpu_files, offcpu_files) = std::thread::scope(|scope| {
        let cpu_files = scope.spawn(|| {
            let mut failures = Vec::new();
            profile_files(CPU_FILES, cpu, &caption, &meta, &mut failures).map(|files| (files, failures))
        });
        let offcpu_files = profile_files(OFFCPU_FILES, offcpu, &caption, &meta, &mut failures);
        (cpu_files.join().expect("the rendering thread does not panic"), offcpu_files)
    });
    let (mut files, cpu_failures) = cpu_files?;
    failures.extend(cpu_failures);
    files.extend(offcpu_files?);
    if let Some(g) = rec.goroutines {
        files.extend(profile_files(GOROUTINE_FILES, g, &caption, &meta, &mut failures)?);
        files.push(("goroutines.txt", goroutines::goroutines_txt(g).into_bytes()));
    }
    if let Some(extras) = &rec.watch {
        let chart = chart::metrics_svg(&extras.charts, s.window.start, s.window.end, s.window.trigger);
        files.push(("metrics.svg", chart.into_bytes()));
        if let Some((before, after)) = extras.diff {
            let title = format!("on-CPU {} (pid {}): after the trigger vs before", s.comm, s.pid);
            files.push(("cpu-diff.svg", drawn("cpu-diff.svg", diff::diff_svg(before, after, &title), &mut failures)));
        }
        files.push(("index.html", index::index_html(s, extras.diff.is_some()).into_bytes()));
    }
    let stamp = s.window.trigger.unwrap_or(start_secs) as u64;
    let name = bundle::bundle_name(&s.comm, s.pid, stamp, &s.reason.kind);
    let mut summary = rec.summary;
    summary.notes.extend(failures);
    files.push(("summary.json", serde_json::to_vec_pretty(&summary)?));
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
