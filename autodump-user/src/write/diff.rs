//! Differential flamegraphs: `cpu-diff.svg`, the on-CPU profile after the trigger against the
//! one before it (normalized, so windows of different length compare), with the stacks whose
//! share grew most; and `heap-diff.svg`, the Go heap in use now against before the window (in
//! bytes, not normalized: growth is the point).

use std::collections::HashMap;

use inferno::{differential, flamegraph};

use super::{folded::folded, summary::Regression};
use crate::record::profile::Profile;

/// How many regressed stacks the summary lists.
pub const TOP_REGRESSIONS: usize = 10;

/// How a differential flamegraph compares and what it says.
pub struct DiffStyle {
    pub normalize: bool,
    pub subtitle: &'static str,
    pub count_name: &'static str,
    /// What an empty graph says.
    pub empty: &'static str,
}

pub const CPU_DIFF: DiffStyle = DiffStyle {
    normalize: true,
    subtitle: "red: more of the CPU after the trigger, blue: less (normalized)",
    count_name: "samples",
    empty: "[no on-CPU samples after the trigger] 1 1",
};

pub const HEAP_DIFF: DiffStyle = DiffStyle {
    normalize: false,
    subtitle: "red: more heap in use now than before the window, blue: less (bytes)",
    count_name: "bytes",
    empty: "[no heap in use] 1 1",
};

pub fn diff_svg(before: &Profile, after: &Profile, title: &str, style: &DiffStyle) -> std::io::Result<Vec<u8>> {
    // As many stacks as a flamegraph draws, from each side.
    let (before, after) = (folded(before), folded(after));
    let (before, after) =
        (super::flamegraph::drawn_lines(&before).0.join("\n"), super::flamegraph::drawn_lines(&after).0.join("\n"));
    let mut lines = Vec::new();
    let options = differential::Options { normalize: style.normalize, ..Default::default() };
    differential::from_readers(options, before.as_bytes(), after.as_bytes(), &mut lines)?;
    let lines = String::from_utf8_lossy(&lines).into_owned();
    let mut options = flamegraph::Options::default();
    options.title = title.to_string();
    options.subtitle = Some(style.subtitle.into());
    options.count_name = style.count_name.into();
    options.deterministic = true;
    let mut svg = Vec::new();
    // Widths are the after-trigger counts; inferno refuses a graph whose widths are all zero (an
    // idle process after the trigger), so that case is drawn as an explicit empty graph.
    let after_weight = |line: &str| line.rsplit_once(' ').and_then(|(_, w)| w.parse::<f64>().ok());
    if lines.lines().any(|l| after_weight(l).is_some_and(|w| w > 0.0)) {
        flamegraph::from_lines(&mut options, lines.lines(), &mut svg)?;
    } else {
        flamegraph::from_lines(&mut options, [style.empty], &mut svg)?;
    }
    Ok(svg)
}

/// Stacks whose share of samples grew most from `before` to `after`, largest growth first.
pub fn regressions(before: &Profile, after: &Profile, top: usize) -> Vec<Regression> {
    let shares = |p: &Profile| -> HashMap<String, f64> {
        let text = folded(p);
        let lines: Vec<(&str, f64)> = text
            .lines()
            .filter_map(|l| l.rsplit_once(' ').and_then(|(s, w)| Some((s, w.parse::<f64>().ok()?))))
            .collect();
        let total: f64 = lines.iter().map(|l| l.1).sum();
        lines.into_iter().map(|(s, w)| (s.to_string(), if total > 0.0 { w / total } else { 0.0 })).collect()
    };
    let (b, a) = (shares(before), shares(after));
    let mut grown: Vec<Regression> = a
        .iter()
        .map(|(stack, &after_share)| Regression {
            stack: stack.clone(),
            before_share: b.get(stack).copied().unwrap_or(0.0),
            after_share,
        })
        .filter(|r| r.after_share > r.before_share)
        .collect();
    grown.sort_by(|x, y| {
        (y.after_share - y.before_share)
            .total_cmp(&(x.after_share - x.before_share))
            .then_with(|| x.stack.cmp(&y.stack))
    });
    grown.truncate(top);
    grown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::{tests::loc, ProfileKind, SampleValue, StackPart};

    fn profile(parts: &[(&str, u64)]) -> Profile {
        let mut p = Profile::new(ProfileKind::Cpu);
        for (i, (name, n)) in parts.iter().enumerate() {
            let user = [loc(i as u64 + 1, name, false)];
            p.add("t".into(), &[StackPart::User(&user)], SampleValue { count: *n, nanos: 0, ..Default::default() });
        }
        p
    }

    #[test]
    fn finds_the_stack_that_grew() {
        let before = profile(&[("calm", 90), ("spike", 10)]);
        let after = profile(&[("calm", 20), ("spike", 80)]);
        let r = regressions(&before, &after, TOP_REGRESSIONS);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].stack, "t;spike");
        assert!((r[0].before_share - 0.1).abs() < 1e-9 && (r[0].after_share - 0.8).abs() < 1e-9);
    }

    #[test]
    fn draws_a_differential_svg() {
        let svg =
            diff_svg(&profile(&[("calm", 90)]), &profile(&[("calm", 10), ("spike", 90)]), "diff", &CPU_DIFF).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("spike") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn draws_an_empty_side_instead_of_failing() {
        let (empty, busy) = (Profile::new(ProfileKind::Cpu), profile(&[("calm", 10)]));
        let draw = |before: &Profile, after: &Profile| {
            String::from_utf8(diff_svg(before, after, "diff", &CPU_DIFF).unwrap()).unwrap()
        };
        // Nothing after the trigger (the process went idle), or nothing at all: an explicit empty graph.
        assert!(draw(&busy, &empty).contains("no on-CPU samples after the trigger"));
        assert!(draw(&empty, &empty).contains("no on-CPU samples after the trigger"));
        // Nothing before it: everything after is new.
        let svg = draw(&empty, &busy);
        assert!(svg.contains("calm") && svg.trim_end().ends_with("</svg>"));
    }
}
