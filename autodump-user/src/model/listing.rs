//! The summary's account of the profiles: every profile listed the same way (files, totals by
//! value type), and the page faults split by the class of memory they touched.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{
    profile::{Profile, ProfileKind},
    Profiles,
};

/// One profile of the bundle.
#[derive(Debug, Serialize)]
pub struct ProfileListing {
    pub kind: ProfileKind,
    /// `<stem>.folded`, `<stem>.svg`, `<stem>.pb.gz`.
    pub files: [String; 3],
    /// The sum of each pprof sample type, by its name (`samples`, `cpu`, `faults`, ...).
    pub totals: BTreeMap<&'static str, u64>,
    pub distinct_stacks: usize,
}

pub fn listing(profiles: &Profiles) -> Vec<ProfileListing> {
    profiles
        .iter()
        .map(|p| {
            let info = p.kind.info();
            let total = p.total();
            ProfileListing {
                kind: p.kind,
                files: [".folded", ".svg", ".pb.gz"].map(|ext| format!("{}{ext}", info.stem)),
                totals: info.values.iter().map(|&(name, _, field)| (name, total.get(field))).collect(),
                distinct_stacks: p.samples.len(),
            }
        })
        .collect()
}

/// Page faults over the window.
#[derive(Debug, Default, Serialize)]
pub struct FaultTotals {
    /// One recorded fault stands for this many (`--fault-period`); 0: the probe was off.
    pub period: u64,
    /// Faults (recorded × period) and the resident memory they stand for at 4 KiB a page.
    pub faults: u64,
    pub approx_bytes: u64,
    /// By the kind of memory the faulting address was in (`heap`, `anon`, `file`, `stack`;
    /// `unmapped` for memory unmapped again before the agent read the target's map).
    pub by_class: BTreeMap<String, u64>,
    pub distinct_stacks: usize,
}

const PAGE: u64 = 4096;

impl FaultTotals {
    pub fn of(faults: Option<&Profile>, period: u64) -> Self {
        let Some(profile) = faults else { return Self::default() };
        let mut by_class = BTreeMap::new();
        for (key, value) in &profile.samples {
            let leaf = key.stack.first().map(|&i| &profile.locations[i as usize]);
            let class = leaf
                .filter(|l| l.address == 0)
                .and_then(|l| l.frames.first())
                .map(|f| f.function.trim_matches(['[', ']']).to_string())
                .filter(|c| ["heap", "anon", "file", "stack", "unmapped"].contains(&c.as_str()))
                .unwrap_or_else(|| "unknown".into());
            *by_class.entry(class).or_default() += value.count;
        }
        let faults = profile.total().count;
        Self { period, faults, approx_bytes: faults * PAGE, by_class, distinct_stacks: profile.samples.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::{tests::loc, SampleValue, StackPart};

    #[test]
    fn faults_split_by_class_and_unclassified() {
        let mut p = Profile::new(ProfileKind::FAULTS);
        let user = [loc(1, "leak_here", false)];
        p.add(
            "t".into(),
            &[StackPart::Pseudo("[heap]"), StackPart::User(&user)],
            SampleValue { count: 32, nanos: 0, ..Default::default() },
        );
        p.add(
            "t".into(),
            &[StackPart::Pseudo("[anon]"), StackPart::User(&user)],
            SampleValue { count: 16, nanos: 0, ..Default::default() },
        );
        p.add("t".into(), &[StackPart::User(&user)], SampleValue { count: 16, nanos: 0, ..Default::default() });
        let t = FaultTotals::of(Some(&p), 16);
        assert_eq!(t.faults, 64);
        assert_eq!(t.approx_bytes, 64 * 4096);
        let by: Vec<_> = t.by_class.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(by, [("anon", 16), ("heap", 32), ("unknown", 16)]);
    }

    #[test]
    fn every_profile_is_listed_alike() {
        let profiles = Profiles::new();
        let listed = listing(&profiles);
        let kinds: Vec<_> = listed.iter().map(|l| l.kind).collect();
        assert_eq!(kinds, ProfileKind::RECORDED);
        assert_eq!(listed[2].files, ["faults.folded", "faults.svg", "faults.pb.gz"]);
        assert_eq!(listed[0].totals.keys().copied().collect::<Vec<_>>(), ["cpu", "samples"]);
    }
}
