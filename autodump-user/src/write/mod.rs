//! Writers: turn a finished recording into a bundle directory of flamegraphs, pprof files,
//! folded stacks and a summary.

pub mod bundle;
pub mod flamegraph;
pub mod folded;
pub mod pprof;
pub mod pprof_proto;
pub mod summary;
pub mod time;

use std::{path::PathBuf, time::SystemTime};

use bundle::BundleError;
use flamegraph::Caption;
use pprof::PprofMeta;

use crate::record::profile::Profile;

/// Everything a bundle is made of.
pub struct Recording<'a> {
    pub cpu: &'a Profile,
    pub offcpu: &'a Profile,
    pub start: SystemTime,
    pub end: SystemTime,
    pub summary: summary::Summary,
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
    let start_secs = time::unix_secs_f64(rec.start);
    let window = format!("{}, {:.1} s", time::readable_utc(start_secs as u64), s.window.duration_s);
    let caption = Caption { comm: &s.comm, pid: s.pid, window: &window };
    let render = |what, r: std::io::Result<Vec<u8>>| r.map_err(|source| WriteError::Render { what, source });
    let meta = PprofMeta {
        time_nanos: (start_secs * 1e9) as i64,
        duration_nanos: (s.window.duration_s * 1e9) as i64,
        frequency_hz: s.frequency_hz,
        comment: format!("autodump {} pid {} ({})", s.agent_version, s.pid, s.comm),
    };
    let files = vec![
        ("cpu.folded", folded::folded(rec.cpu).into_bytes()),
        ("offcpu.folded", folded::folded(rec.offcpu).into_bytes()),
        ("cpu.svg", render("cpu.svg", flamegraph::flamegraph_svg(rec.cpu, &caption))?),
        ("offcpu.svg", render("offcpu.svg", flamegraph::flamegraph_svg(rec.offcpu, &caption))?),
        ("cpu.pb.gz", render("cpu.pb.gz", pprof::gzipped(&pprof::encode(rec.cpu, &meta)))?),
        ("offcpu.pb.gz", render("offcpu.pb.gz", pprof::gzipped(&pprof::encode(rec.offcpu, &meta)))?),
        ("summary.json", serde_json::to_vec_pretty(s)?),
    ];
    let name = bundle::bundle_name(&s.comm, s.pid, start_secs as u64, &s.reason.kind);
    Ok(bundle::write_bundle(out, &name, &files)?)
}
