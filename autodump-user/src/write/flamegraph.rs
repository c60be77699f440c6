//! Flamegraph SVGs drawn by inferno from the folded stacks.

use inferno::flamegraph::{
    color::{BasicPalette, Palette},
    from_lines, Options,
};

use crate::record::profile::ProfileKind;

/// What the title says about the recording.
pub struct Caption<'a> {
    pub comm: &'a str,
    pub pid: u32,
    /// e.g. "2026-11-22 07:30:00 UTC, 10.0 s"
    pub window: &'a str,
}

/// The flamegraph of a profile of `kind`, drawn from its folded stacks (`folded::folded`).
pub fn flamegraph_svg(kind: ProfileKind, text: &str, caption: &Caption<'_>) -> std::io::Result<Vec<u8>> {
    let mut options = Options::default();
    let info = kind.info();
    options.colors = info.palette.parse().unwrap_or(Palette::Basic(BasicPalette::Hot));
    options.count_name = info.weight.1.into();
    if info.palette == "blue" {
        options.bgcolors = Some(inferno::flamegraph::color::BackgroundColor::Blue);
    }
    options.title = format!("{} {} (pid {})", info.title, caption.comm, caption.pid);
    options.subtitle = Some(caption.window.to_string());
    options.hash = true;
    options.deterministic = true;
    let mut svg = Vec::new();
    if text.is_empty() {
        // inferno refuses empty input; draw an explicit empty graph instead of failing.
        from_lines(&mut options, ["[no samples] 1"], &mut svg)?;
    } else {
        from_lines(&mut options, text.lines(), &mut svg)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{record::profile::tests::sample_profile, write::folded::folded};

    #[test]
    fn draws_titled_svg() {
        let caption = Caption { comm: "app", pid: 7, window: "10 s" };
        let svg =
            String::from_utf8(flamegraph_svg(ProfileKind::Cpu, &folded(&sample_profile()), &caption).unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("on-CPU app (pid 7)"));
        assert!(svg.contains("spin"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn empty_profile_still_draws() {
        let caption = Caption { comm: "app", pid: 7, window: "1 s" };
        let svg = flamegraph_svg(ProfileKind::OffCpu, "", &caption).unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("no samples"));
    }
}
