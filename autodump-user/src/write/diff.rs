//! Differential flamegraphs: `cpu-diff.svg`, the on-CPU profile after the trigger against the
//! one before it (normalized, so windows of different length compare), with the stacks whose
//! share grew most; and the runtimes' own (the Go heap now against before the window, in bytes,
//! not normalized: growth is the point).

use inferno::{differential, flamegraph};

use crate::record::{
    folded::folded_lines,
    profile::{Profile, ProfileKind},
};

/// A differential flamegraph of a bundle: `after` against `before`, shown after the graph of
/// the profile kind it `follows`.
pub struct DiffGraph {
    pub file: &'static str,
    pub follows: ProfileKind,
    /// Its caption on the page.
    pub caption: &'static str,
    /// Its title, around the process: "on-CPU app (pid 1): after the trigger vs before".
    pub title: (&'static str, &'static str),
    pub style: &'static DiffStyle,
    pub before: DiffSide,
    pub after: DiffSide,
}

/// One side of a differential flamegraph: a profile of its own, or the bundle's of this kind.
pub enum DiffSide {
    Own(Profile),
    Kind(ProfileKind),
}

impl DiffSide {
    /// The profile it stands for in a bundle of `profiles`.
    pub fn profile<'p>(&'p self, profiles: &'p crate::record::Profiles) -> Option<&'p Profile> {
        match self {
            DiffSide::Own(profile) => Some(profile),
            DiffSide::Kind(kind) => profiles.get(*kind),
        }
    }
}

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

/// Draws the differential flamegraph of `after` against `before` into `out`.
pub fn diff_svg(
    before: &Profile,
    after: &Profile,
    title: &str,
    style: &DiffStyle,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    // As many stacks as a flamegraph draws, from each side; one side's lines at a time.
    let drawn = |p: &Profile| {
        let mut lines = folded_lines(p);
        lines.truncate(super::flamegraph::MAX_DRAWN_STACKS);
        lines.join("\n")
    };
    let (before, after) = (drawn(before), drawn(after));
    let mut lines = Vec::new();
    let options = differential::Options { normalize: style.normalize, ..Default::default() };
    differential::from_readers(options, before.as_bytes(), after.as_bytes(), &mut lines)?;
    drop((before, after));
    let lines = String::from_utf8_lossy(&lines).into_owned();
    let mut options = flamegraph::Options::default();
    options.title = title.to_string();
    options.subtitle = Some(style.subtitle.into());
    options.count_name = style.count_name.into();
    options.deterministic = true;
    // Widths are the after-trigger counts; inferno refuses a graph whose widths are all zero (an
    // idle process after the trigger), so that case is drawn as an explicit empty graph.
    let after_weight = |line: &str| line.rsplit_once(' ').and_then(|(_, w)| w.parse::<f64>().ok());
    if lines.lines().any(|l| after_weight(l).is_some_and(|w| w > 0.0)) {
        flamegraph::from_lines(&mut options, lines.lines(), out)
    } else {
        flamegraph::from_lines(&mut options, [style.empty], out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::{tests::flat_profile as profile, ProfileKind};

    #[test]
    fn draws_a_differential_svg() {
        let mut svg = Vec::new();
        diff_svg(&profile(&[("calm", 90)]), &profile(&[("calm", 10), ("spike", 90)]), "diff", &CPU_DIFF, &mut svg)
            .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("spike") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn draws_an_empty_side_instead_of_failing() {
        let (empty, busy) = (Profile::new(ProfileKind::CPU), profile(&[("calm", 10)]));
        let draw = |before: &Profile, after: &Profile| {
            let mut svg = Vec::new();
            diff_svg(before, after, "diff", &CPU_DIFF, &mut svg).unwrap();
            String::from_utf8(svg).unwrap()
        };
        // Nothing after the trigger (the process went idle), or nothing at all: an explicit empty graph.
        assert!(draw(&busy, &empty).contains("no on-CPU samples after the trigger"));
        assert!(draw(&empty, &empty).contains("no on-CPU samples after the trigger"));
        // Nothing before it: everything after is new.
        let svg = draw(&empty, &busy);
        assert!(svg.contains("calm") && svg.trim_end().ends_with("</svg>"));
    }
}
