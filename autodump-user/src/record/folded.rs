//! Folded stacks (`thread;root;...;leaf count`), the input format of flamegraph tools.
//! Each kind weighs by its own number (`record::kind`): samples on-CPU, microseconds off-CPU,
//! faults for page faults.

use std::collections::HashMap;

use crate::record::profile::{Profile, SampleValue};

/// One line per unique stack of names, heaviest first; the root frame is the thread name.
/// Stacks that differ only in addresses within the same functions are merged.
pub fn folded(profile: &Profile) -> String {
    folded_lines(profile).into_iter().map(|line| line + "\n").collect()
}

/// The lines of [`folded`], without their newlines: `thread;root;...;leaf weight`.
pub fn folded_lines(profile: &Profile) -> Vec<String> {
    let mut lines: HashMap<String, SampleValue> = HashMap::new();
    for (key, value) in &profile.samples {
        let mut line = String::with_capacity(256);
        push_sanitized(&mut line, &key.thread);
        profile.for_each_name_root_first(key, |name, kernel| {
            line.push(';');
            push_sanitized(&mut line, name);
            if kernel {
                line.push_str("_[k]");
            }
        });
        lines.entry(line).or_default().add(value);
    }
    let mut weighted: Vec<(String, u64)> = lines
        .into_iter()
        .map(|(line, value)| (line, value.get(profile.kind.info().weight.0)))
        .filter(|(_, w)| *w > 0)
        .collect();
    weighted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    weighted
        .into_iter()
        .map(|(mut line, w)| {
            use std::fmt::Write;
            let _ = write!(line, " {w}");
            line.shrink_to_fit();
            line
        })
        .collect()
}

/// `;` separates frames and a newline ends a line: neither may appear inside a name.
fn push_sanitized(line: &mut String, name: &str) {
    if name.contains([';', '\n', '\r']) {
        line.push_str(&name.replace(';', ":").replace(['\n', '\r'], " "));
    } else {
        line.push_str(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::{tests::sample_profile, Profile, ProfileKind, SampleValue, StackPart};

    #[test]
    fn folds_root_first_heaviest_first() {
        assert_eq!(folded(&sample_profile()), "worker;main;work;spin 40\napp;main;idle;do_syscall_64_[k] 5\n");
    }

    #[test]
    fn merges_stacks_with_the_same_names() {
        let mut p = Profile::new(ProfileKind::CPU);
        let (a, b) =
            (crate::record::profile::tests::loc(1, "f", false), crate::record::profile::tests::loc(2, "f", false));
        p.add("t".into(), &[StackPart::User(&[a])], SampleValue { count: 2, nanos: 0, ..Default::default() });
        p.add("t".into(), &[StackPart::User(&[b])], SampleValue { count: 3, nanos: 0, ..Default::default() });
        assert_eq!(folded(&p), "t;f 5\n");
    }

    #[test]
    fn off_cpu_weights_are_microseconds() {
        let mut p = Profile::new(ProfileKind::OFF_CPU);
        let l = crate::record::profile::tests::loc(1, "block;ed", false);
        p.add(
            "t\n1".into(),
            &[StackPart::User(std::slice::from_ref(&l))],
            SampleValue { count: 2, nanos: 1_500_400, ..Default::default() },
        );
        p.add("t2".into(), &[StackPart::User(&[l])], SampleValue { count: 1, nanos: 400, ..Default::default() });
        assert_eq!(folded(&p), "t 1;block:ed 1500\n", "sub-microsecond stacks are left out");
    }
}
