//! `goroutines.txt`: goroutines grouped by stack and state, like Go's `debug=1` goroutine
//! profile: `count @ pc pc ...`, the state, then one `#` line per frame.

use std::fmt::Write;

use crate::record::profile::Profile;

pub fn goroutines_txt(profile: &Profile) -> String {
    let mut out = format!("goroutine profile: total {}\n", profile.total().count);
    for (key, value) in profile.sorted_samples() {
        let locations: Vec<_> = key.stack.iter().map(|&i| &profile.locations[i as usize]).collect();
        let pcs: Vec<String> =
            locations.iter().filter(|l| l.address != 0).map(|l| format!("{:#x}", l.address)).collect();
        let _ = writeln!(out, "{} @ {}", value.count, pcs.join(" "));
        let _ = writeln!(out, "# state: {}", key.thread);
        for loc in locations {
            for frame in &loc.frames {
                let place = match (&frame.file, frame.line) {
                    (Some(file), Some(line)) => format!("{file}:{line}"),
                    (Some(file), None) => file.to_string(),
                    _ => String::new(),
                };
                let _ = writeln!(out, "#\t{:#x}\t{}\t{place}", loc.address, frame.function);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::{tests::loc, ProfileKind, SampleValue, StackPart};

    #[test]
    fn groups_by_stack_and_state_heaviest_first() {
        let mut p = Profile::new(ProfileKind::Goroutines);
        let (park, leak, main) =
            (loc(0x10, "runtime.gopark", false), loc(0x20, "main.notifier", false), loc(0x30, "main.main", false));
        for _ in 0..3 {
            p.add(
                "chan receive".into(),
                &[StackPart::User(&[park.clone(), leak.clone()])],
                SampleValue { count: 1, nanos: 0, ..Default::default() },
            );
        }
        p.add("running".into(), &[StackPart::User(&[main])], SampleValue { count: 1, nanos: 0, ..Default::default() });
        let text = goroutines_txt(&p);
        assert!(
            text.starts_with(
                "goroutine profile: total 4\n3 @ 0x10 0x20\n# state: chan receive\n#\t0x10\truntime.gopark\t\n"
            ),
            "{text}"
        );
        assert!(text.contains("1 @ 0x30\n# state: running\n"));
    }
}
