//! Writers: turn a finished recording into a bundle directory of flamegraphs, pprof files,
//! folded stacks and a summary.

pub mod bundle;
pub mod chart;
pub mod diff;
pub mod flamegraph;
pub mod index;
pub mod locks;
pub mod pprof;
pub mod pprof_proto;
pub mod retention;
pub mod time;

use std::{io::Write, path::PathBuf};

use bundle::{BundleError, FileError, StagedBundle};
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
    pub summary: crate::model::summary::Summary,
    /// Watch-mode bundles add a metrics chart and an index page.
    pub charts: Option<Vec<chart::Series>>,
    /// Differential flamegraphs (a rule bundle's on-CPU after the trigger against before, and
    /// the runtimes' own).
    pub diffs: Vec<diff::DiffGraph>,
    /// Files of the process's runtimes (a thread dump).
    pub files: Vec<BundleFile>,
    /// Paragraphs of the runtimes for `index.html`: after the graph of a kind, or at the top.
    pub html: Vec<(Option<ProfileKind>, String)>,
}

/// A file of a bundle beside its profiles, rendered as it is written.
pub struct BundleFile {
    pub name: &'static str,
    pub render: Render,
}

/// Writes a file's content.
pub type Render = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()>>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("cannot render {what}: {source}")]
    Render { what: &'static str, source: std::io::Error },
    #[error("cannot encode summary: {0}")]
    Summary(#[from] serde_json::Error),
}

/// A small SVG that says why a graph could not be drawn.
fn failed_svg(why: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"1200\" height=\"40\"><text x=\"10\" y=\"25\" font-family=\"Verdana\" \
         font-size=\"14\">{}</text></svg>\n",
        chart::escape(why)
    )
    .into_bytes()
}

/// Draws an SVG into the bundle, or when inferno cannot draw it, a small SVG that says why. One
/// graph that cannot be drawn must not cost an incident its other files; the reason is added to
/// the summary's notes.
fn draw(
    bundle: &StagedBundle,
    name: &str,
    render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    failures: &mut Vec<String>,
) -> Result<(), WriteError> {
    match bundle.file(name, render) {
        Ok(()) => Ok(()),
        Err(FileError::Bundle(e)) => Err(e.into()),
        Err(FileError::Render(e)) => {
            let why = format!("{name} could not be drawn: {e}");
            tracing::warn!("{why}");
            bundle.bytes(name, &failed_svg(&why))?;
            failures.push(why);
            Ok(())
        }
    }
}

/// One profile's folded stacks, flamegraph (drawn from the same folded lines) and pprof file,
/// each written as it is rendered.
fn profile_files(
    bundle: &StagedBundle,
    profile: &Profile,
    caption: &Caption<'_>,
    meta: &PprofMeta,
    failures: &mut Vec<String>,
) -> Result<(), WriteError> {
    let stem = profile.kind.info().stem;
    let render_err = |source| WriteError::Render { what: stem, source };
    let lines = crate::record::folded::folded_lines(profile);
    file(bundle, &format!("{stem}.folded"), |w| lines.iter().try_for_each(|l| writeln!(w, "{l}")), render_err)?;
    draw(bundle, &format!("{stem}.svg"), |w| flamegraph::flamegraph_svg(profile.kind, &lines, caption, w), failures)?;
    drop(lines);
    file(bundle, &format!("{stem}.pb.gz"), |w| pprof::write_gzipped(profile, meta, w), render_err)
}

/// Writes a file whose renderer cannot fail but for the file itself.
fn file(
    bundle: &StagedBundle,
    name: &str,
    render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    render_err: impl Fn(std::io::Error) -> WriteError,
) -> Result<(), WriteError> {
    bundle.file(name, render).map_err(|e| match e {
        FileError::Bundle(e) => e.into(),
        FileError::Render(e) => render_err(e),
    })
}

/// A bundle on disk, and what its summary says.
pub struct Written {
    pub path: PathBuf,
    pub summary: crate::model::summary::Summary,
}

/// Renders every file straight into the bundle's staging directory, one at a time, so that
/// writing a bundle holds one file's rendering in memory, not the whole bundle; then renames
/// the bundle into place (never partial).
pub fn write_bundle(out: &std::path::Path, rec: Recording<'_>) -> Result<Written, WriteError> {
    let s = &rec.summary;
    let start_secs = s.window.start;
    let window = format!("{}, {:.1} s", time::readable_utc(start_secs as u64), s.window.duration_s);
    let caption = Caption { comm: &s.comm, pid: s.pid, window: &window };
    let meta = PprofMeta {
        time_nanos: (start_secs * 1e9) as i64,
        duration_nanos: (s.window.duration_s * 1e9) as i64,
        frequency_hz: s.frequency_hz,
        fault_period: s.faults.period,
        comment: format!("autodump {} pid {} ({})", s.agent_version, s.pid, s.comm),
    };
    let stamp = s.window.trigger.unwrap_or(start_secs) as u64;
    let bundle = StagedBundle::create(out, &bundle::bundle_name(&s.comm, s.pid, stamp, &s.reason.kind))?;
    let mut failures = Vec::new();
    for profile in rec.profiles.iter() {
        profile_files(&bundle, profile, &caption, &meta, &mut failures)?;
    }
    if !s.locks.is_empty() {
        let render_err = |source| WriteError::Render { what: "locks.txt", source };
        file(&bundle, "locks.txt", |w| locks::locks_txt(&s.locks, s.window.duration_s, w), render_err)?;
    }
    for extra in rec.files {
        let err = |source| WriteError::Render { what: extra.name, source };
        file(&bundle, extra.name, extra.render, err)?;
    }
    let mut diffs = Vec::new();
    for d in &rec.diffs {
        let (Some(before), Some(after)) = (d.before.profile(rec.profiles), d.after.profile(rec.profiles)) else {
            continue;
        };
        let title = format!("{} {} (pid {}): {}", d.title.0, s.comm, s.pid, d.title.1);
        draw(&bundle, d.file, |w| diff::diff_svg(before, after, &title, d.style, w), &mut failures)?;
        diffs.push((d.follows, d.file, d.caption));
    }
    if let Some(charts) = &rec.charts {
        let chart = chart::metrics_svg(charts, s.window.start, s.window.end, s.window.trigger);
        bundle.bytes("metrics.svg", chart.as_bytes())?;
        let kinds: Vec<ProfileKind> = rec.profiles.iter().map(|p| p.kind).collect();
        bundle.bytes("index.html", index::index_html(s, &kinds, &diffs, &rec.html).as_bytes())?;
    }
    // Last: a reader that sees the summary knows every other file is there.
    let mut summary = rec.summary;
    summary.notes.extend(failures);
    bundle.bytes("summary.json", &serde_json::to_vec_pretty(&summary)?)?;
    Ok(Written { path: bundle.commit()?, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_that_cannot_be_drawn_becomes_a_note() {
        let out = std::env::temp_dir().join(format!("autodump-draw-test-{}", std::process::id()));
        let bundle = StagedBundle::create(&out, "b").unwrap();
        let mut failures = Vec::new();
        let broken = |w: &mut dyn Write| {
            w.write_all(b"<svg partial")?;
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "No stack counts <found>"))
        };
        draw(&bundle, "cpu-diff.svg", broken, &mut failures).unwrap();
        draw(&bundle, "cpu.svg", |w| w.write_all(b"<svg/>"), &mut failures).unwrap();
        let path = bundle.commit().unwrap();
        let svg = std::fs::read_to_string(path.join("cpu-diff.svg")).unwrap();
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("cpu-diff.svg could not be drawn: No stack counts &lt;found&gt;"), "{svg}");
        assert_eq!(failures, ["cpu-diff.svg could not be drawn: No stack counts <found>"]);
        assert_eq!(std::fs::read(path.join("cpu.svg")).unwrap(), b"<svg/>");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
