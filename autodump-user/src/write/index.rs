//! `index.html`: one page with the reason, the metrics chart and every flamegraph, opening from
//! disk with no network (all files are siblings; SVGs are embedded with <object>).

use std::fmt::Write;

use super::{chart::escape, time::readable_utc};
use crate::model::summary::Summary;
use crate::record::profile::ProfileKind;

/// Differential graphs, each shown after the graph of its kind.
const DIFFS: [(ProfileKind, &str, &str); 3] = [
    (ProfileKind::Cpu, "cpu-diff.svg", "On-CPU: after the trigger against before"),
    (ProfileKind::GoWait, "goroutines-diff.svg", "Goroutines: at the window's end against its start (what grew)"),
    (ProfileKind::Heap, "heap-diff.svg", "Go heap: in use now against before the window (what grew)"),
];

/// The page for a bundle holding profiles of `kinds` and the differential graphs `diffs`;
/// memory profiles come first when the bundle was written for memory.
pub fn index_html(summary: &Summary, kinds: &[ProfileKind], diffs: &[&str]) -> String {
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
        if kind == ProfileKind::GoWait {
            graphs.push_str(&go_section(summary));
        }
        for (_, file, caption) in DIFFS.iter().filter(|(k, file, _)| *k == kind && diffs.contains(file)) {
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
Files: <a href="summary.json">summary.json</a>{files}.</p>{python}
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
        python = python_line(summary),
    )
}

/// Python programs: which CPython, and where its threads' Python stacks are.
fn python_line(summary: &Summary) -> String {
    let Some(py) = &summary.python else { return String::new() };
    match (&py.reason, py.threads) {
        (Some(why), _) => {
            format!("\n<p>CPython {}: Python stacks not read ({}).</p>", escape(&py.version), escape(why))
        }
        (None, Some(threads)) => {
            let frames = match (&py.frames_not_in_stacks, py.cpu_share_with_python) {
                (Some(why), _) => format!(" Stacks have native frames only: {}.", escape(why)),
                (None, Some(share)) => format!(" {:.0}% of on-CPU samples have Python frames.", share * 100.0),
                (None, None) => String::new(),
            };
            format!(
                "\n<p>CPython {}: {threads} Python threads, each with its Python stack in \
                 <a href=\"python-threads.txt\">python-threads.txt</a>.{frames}</p>",
                escape(&py.version)
            )
        }
        (None, None) => format!("\n<p>CPython {}.</p>", escape(&py.version)),
    }
}

fn graph(graphs: &mut String, file: &str, caption: &str) {
    let _ = write!(
        graphs,
        r#"<h2>{caption}</h2><object type="image/svg+xml" data="{file}" width="100%">{file}</object><p><a href="{file}">{file}</a></p>"#
    );
}

/// Go programs: the goroutines that waited longest and the stacks whose count grew most.
fn go_section(summary: &Summary) -> String {
    let Some(go) = &summary.go else { return String::new() };
    let mut html = String::new();
    if !go.top_waits.is_empty() {
        html.push_str("<table><tr><th>goroutine</th><th>waiting</th><th>for (s)</th><th>in</th></tr>");
        for w in &go.top_waits {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td><code>{}</code></td></tr>",
                w.goid,
                escape(&w.state),
                w.waiting_s,
                escape(&w.function)
            );
        }
        html.push_str("</table>");
    }
    if !go.goroutines_grew.is_empty() {
        html.push_str(
            "<h3>Goroutines that grew</h3><table><tr><th>before</th><th>after</th><th>state</th><th>stack</th></tr>",
        );
        for g in &go.goroutines_grew {
            let leaf = g.stack.rsplit(';').take(3).map(escape).collect::<Vec<_>>().join(" &larr; ");
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code title=\"{}\">{}</code></td></tr>",
                g.before,
                g.after,
                escape(&g.state),
                escape(&g.stack),
                leaf
            );
        }
        html.push_str("</table>");
    }
    html
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
        assert_eq!(display_order(&kinds, true)[0], ProfileKind::Faults);
        assert_eq!(display_order(&kinds, false), kinds);
    }
}
