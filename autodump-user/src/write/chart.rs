//! `metrics.svg`: one small chart per metric over the bundle's window, with the rolling
//! baseline mean, the threshold, and a marker at the trigger. Plain SVG, no script.

use std::fmt::Write;

/// One metric's line and reference values, in the metric's own unit.
pub struct Series {
    pub name: String,
    pub unit: String,
    /// (Unix seconds, value)
    pub points: Vec<(f64, f64)>,
    pub baseline_mean: Option<f64>,
    pub threshold: Option<f64>,
}

const WIDTH: f64 = 720.0;
const PANEL: f64 = 130.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 28.0;
const PLOT: f64 = 80.0;
/// A threshold more than this many times the largest value is named, not drawn.
const OFF_SCALE: f64 = 5.0;

/// Renders the charts; `trigger` and the window are Unix seconds.
pub fn metrics_svg(series: &[Series], start: f64, end: f64, trigger: Option<f64>) -> String {
    let height = PANEL * series.len().max(1) as f64 + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    let span = (end - start).max(1e-9);
    let x = |t: f64| LEFT + (t - start).clamp(0.0, span) / span * (WIDTH - LEFT - RIGHT);
    for (i, s) in series.iter().enumerate() {
        let top = i as f64 * PANEL + TOP;
        let data_max = s.points.iter().map(|p| p.1).chain(s.baseline_mean).fold(0.0_f64, f64::max);
        // A threshold far above the data would flatten the line: name it instead of drawing it.
        let (threshold, off_scale) = match s.threshold {
            Some(t) if data_max > 0.0 && t > OFF_SCALE * data_max => (None, Some(t)),
            t => (t, None),
        };
        let max = threshold.map_or(data_max, |t| t.max(data_max));
        let max = if max > 0.0 { max * 1.1 } else { 1.0 };
        let y = |v: f64| top + PLOT - v / max * PLOT;
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{} ({})</text>"#,
            top - 8.0,
            escape(&s.name),
            escape(&s.unit)
        );
        if let Some(t) = off_scale {
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" fill="#d33" text-anchor="end">threshold {} (off scale)</text>"##,
                WIDTH - RIGHT,
                top - 8.0,
                human(t)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PLOT}" fill="#f7f7f7" stroke="#ccc"/>"##,
            WIDTH - LEFT - RIGHT
        );
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LEFT - 6.0, top + 10.0, human(max));
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">0</text>"#, LEFT - 6.0, top + PLOT);
        // The baseline is labelled on the left and the threshold on the right, so they never collide.
        let lines = [
            (s.baseline_mean, "#2a7", "baseline mean", LEFT + 4.0, "start"),
            (threshold, "#d33", "threshold", WIDTH - RIGHT - 4.0, "end"),
        ];
        for (value, color, label, label_x, anchor) in lines {
            if let Some(v) = value {
                let _ = writeln!(
                    svg,
                    r#"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="{color}" stroke-dasharray="5,4"/><text x="{label_x}" y="{}" fill="{color}" text-anchor="{anchor}">{label} {}</text>"#,
                    WIDTH - RIGHT,
                    y(v) - 4.0,
                    human(v),
                    y = y(v)
                );
            }
        }
        let points: Vec<String> = s.points.iter().map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v))).collect();
        if !points.is_empty() {
            let _ = writeln!(
                svg,
                r##"<polyline fill="none" stroke="#36c" stroke-width="2" points="{}"/>"##,
                points.join(" ")
            );
        }
        if let Some(t) = trigger {
            let _ = writeln!(
                svg,
                r#"<line x1="{x}" x2="{x}" y1="{top}" y2="{}" stroke="black" stroke-width="1.5"/><text x="{}" y="{}">trigger</text>"#,
                top + PLOT,
                x(t) + 3.0,
                top + 12.0,
                x = x(t)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1234567 -> "1.2M": short labels for axis and reference values.
fn human(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    format!("{}{suffix}", (scaled * 10.0).round() / 10.0)
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_panel_per_metric_with_reference_lines() {
        let series = vec![
            Series {
                name: "cpu".into(),
                unit: "% of a core".into(),
                points: vec![(0.0, 3.0), (5.0, 3.0), (6.0, 100.0)],
                baseline_mean: Some(3.0),
                threshold: Some(80.0),
            },
            Series {
                name: "rss <x>".into(),
                unit: "bytes".into(),
                points: vec![],
                baseline_mean: None,
                threshold: None,
            },
        ];
        let svg = metrics_svg(&series, 0.0, 10.0, Some(6.0));
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("baseline mean 3") && svg.contains("threshold 80"));
        assert_eq!(svg.matches(">trigger<").count(), 2);
        assert!(svg.contains("rss &lt;x&gt;"), "names are escaped");
    }

    #[test]
    fn far_thresholds_do_not_flatten_the_line() {
        let series = vec![Series {
            name: "rss".into(),
            unit: "bytes".into(),
            points: vec![(0.0, 1e6), (1.0, 2e6)],
            baseline_mean: Some(1.5e6),
            threshold: Some(2e10),
        }];
        let svg = metrics_svg(&series, 0.0, 1.0, None);
        assert!(svg.contains("threshold 20G (off scale)"));
        assert!(svg.contains(">2.2M<"), "the axis fits the data");
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(human(1_500_000.0), "1.5M");
        assert_eq!(human(80.0), "80");
        assert_eq!(human(2.5e9), "2.5G");
    }
}
