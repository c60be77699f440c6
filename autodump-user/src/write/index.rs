//! `index.html`: one page with the reason, the metrics chart and every flamegraph, opening from
//! disk with no network (all files are siblings; SVGs are embedded with <object>).

use std::fmt::Write;

use super::{chart::escape, time::readable_utc};
use crate::model::summary::Summary;
use crate::record::profile::ProfileKind;

/// The page for a bundle holding profiles of `kinds`, the differential graphs `diffs` (each
/// shown after the graph of the kind it follows: (kind, file, caption)) and the runtimes'
/// paragraphs `html` (after the graph of a kind, or at the top); memory profiles come first
/// when the bundle was written for memory.
pub fn index_html(
    summary: &Summary,
    kinds: &[ProfileKind],
    diffs: &[(ProfileKind, &str, &str)],
    html: &[(Option<ProfileKind>, String)],
) -> String {
    let r = &summary.reason;
    let mut why = format!("<b>{}</b>", escape(&r.kind));
    if let (Some(metric), Some(value)) = (&r.metric, r.value) {
        let _ = write!(why, ": {} = {value:.1}", escape(metric));
        if let Some(mean) = r.baseline_mean {
            let _ = write!(why, ", baseline mean {mean:.1}");
        }
        if let Some(t) = r.threshold {
            let _ = write!(why, ", threshold {t:.1}");
        }
        if let Some(rule) = &r.rule {
            let _ = write!(why, " <code>{}</code>", escape(rule));
        }
    }
    if let Some(alert) = &r.alert {
        let labels: Vec<String> = alert.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let _ = write!(why, ": <code>{}</code> since {}", escape(&labels.join(",")), escape(&alert.starts_at));
    }
    if let Some(exit) = &summary.exit {
        match (exit.signal, exit.code) {
            (Some(sig), _) => {
                let _ = write!(why, ": killed by signal {sig}");
            }
            (None, Some(code)) => {
                let _ = write!(why, ": exited with code {code}");
            }
            _ => {}
        }
    }
    let w = &summary.window;
    let trigger = w.trigger.map(|t| format!(", trigger {}", readable_utc(t as u64))).unwrap_or_default();
    let mut graphs = String::new();
    let memory_first = r.metric.as_deref() == Some("rss");
    if memory_first {
        graphs.push_str(&memory_section(summary));
    }
    let mut files = String::new();
    for kind in display_order(kinds, memory_first) {
        let info = kind.info();
        graph(&mut graphs, &format!("{}.svg", info.stem), info.heading);
        html.iter().filter(|(after, _)| *after == Some(kind)).for_each(|(_, p)| graphs.push_str(p));
        for (_, file, caption) in diffs.iter().filter(|(k, ..)| *k == kind) {
            graph(&mut graphs, file, caption);
        }
        for ext in ["pb.gz", "folded"] {
            let _ = write!(files, r#", <a href="{0}.{ext}">{0}.{ext}</a>"#, info.stem);
        }
    }
    if !memory_first {
        graphs.push_str(&memory_section(summary));
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>autodump: {comm} ({pid}) {kind}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1300px}} object{{border:1px solid #ddd}} code{{background:#f3f3f3}}</style>
</head><body>
<h1>{comm} (pid {pid})</h1>
<p style="font-size:1.3em"><b>{verdict}</b></p>
<p>{why}</p>
<p>Window: {start} to {end} ({dur:.1} s){trigger}. {samples} on-CPU samples, {offcpu:.1} s off-CPU.
Files: <a href="summary.json">summary.json</a>{files}.</p>{top}
<h2>Metrics</h2><img src="metrics.svg" alt="metrics over the window"/>
{graphs}
</body></html>
"#,
        comm = escape(&summary.comm),
        pid = summary.pid,
        kind = escape(&r.kind),
        verdict = escape(&summary.verdict),
        start = readable_utc(w.start as u64),
        end = readable_utc(w.end as u64),
        dur = w.duration_s,
        samples = summary.cpu.samples,
        offcpu = summary.offcpu.total_us as f64 / 1e6,
        top = html.iter().filter(|(after, _)| after.is_none()).map(|(_, p)| format!("\n{p}")).collect::<String>(),
    )
}

fn graph(graphs: &mut String, file: &str, caption: &str) {
    let _ = write!(
        graphs,
        r#"<h2>{caption}</h2><object type="image/svg+xml" data="{file}" width="100%">{file}</object><p><a href="{file}">{file}</a></p>"#
    );
}

/// Which memory grew: the resident split at the window's start and end, and the mappings that
/// grew most. Empty when the summary has no memory section.
fn memory_section(summary: &Summary) -> String {
    let Some(m) = &summary.memory else { return String::new() };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut html = String::from("<h2>Memory</h2>");
    if let (Some(a), Some(b)) = (m.rss_start, m.rss_end) {
        let _ = write!(
            html,
            "<p>Resident: anonymous {:.1} &rarr; {:.1} MiB, file {:.1} &rarr; {:.1} MiB, shared {:.1} &rarr; {:.1} MiB.</p>",
            mib(a.anon_bytes),
            mib(b.anon_bytes),
            mib(a.file_bytes),
            mib(b.file_bytes),
            mib(a.shmem_bytes),
            mib(b.shmem_bytes)
        );
    }
    if !m.grown_mappings.is_empty() {
        html.push_str("<table><tr><th>mapping</th><th>grew (MiB)</th><th>resident at the end (MiB)</th></tr>");
        for g in &m.grown_mappings {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{:.1}</td><td>{:.1}</td></tr>",
                escape(&g.mapping),
                g.grown_bytes as f64 / (1 << 20) as f64,
                mib(g.rss_end_bytes)
            );
        }
        html.push_str("</table>");
    }
    let f = &summary.faults;
    if f.period > 0 {
        let classes: Vec<String> = f.by_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = write!(
            html,
            "<p>Page faults: {} (about {:.1} MiB touched for the first time): {}.</p>",
            f.faults,
            mib(f.approx_bytes),
            escape(&classes.join(", "))
        );
    }
    html
}

/// Kinds in the order `index.html` shows them: memory kinds first in a bundle written for memory.
pub fn display_order(kinds: &[ProfileKind], memory_first: bool) -> Vec<ProfileKind> {
    let mut kinds = kinds.to_vec();
    if memory_first {
        kinds.sort_by_key(|k| (!k.info().memory, *k));
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_first_when_asked() {
        let kinds = ProfileKind::RECORDED.to_vec();
        assert_eq!(display_order(&kinds, true)[0], ProfileKind::FAULTS);
        assert_eq!(display_order(&kinds, false), kinds);
    }
}
