//! How well a profile is named: the share of its weight whose frames all have function names,
//! and for the rest, which modules left addresses unnamed and why (stripped with no debug file,
//! JIT code, a stack the kernel could not record). Written into summary.json per profile.

use std::collections::BTreeMap;

use serde::Serialize;

use super::profile::Profile;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Naming {
    /// Share (0 to 1) of the profile's weight (samples, or time off the CPU) whose every frame
    /// is named.
    pub fully_named_share: f64,
    /// Modules with unnamed frames, largest share first.
    pub unnamed_modules: Vec<UnnamedModule>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnnamedModule {
    pub module: String,
    /// Share of the profile's weight with at least one unnamed frame in this module.
    pub share: f64,
    pub why: String,
}

/// None for an empty profile.
pub fn naming(profile: &Profile) -> Option<Naming> {
    let mut total = 0u128;
    let mut named = 0u128;
    let mut modules: BTreeMap<String, (u128, String)> = BTreeMap::new();
    for (key, value) in &profile.samples {
        let weight = u128::from(value.nanos.max(value.count));
        total += weight;
        let mut seen: Vec<&str> = Vec::new();
        for loc in key.stack.iter().filter_map(|&i| profile.locations.get(i as usize)) {
            let Some(why) = &loc.unnamed else { continue };
            let module = match (&loc.mapping, loc.kernel) {
                (_, true) => "[kernel]",
                (Some(m), false) => m.module(),
                // Outside every mapping, or a stack the kernel lost: its pseudo frame's name.
                (None, false) => loc.frames[0].function.split('+').next().unwrap_or_default(),
            };
            if !seen.contains(&module) {
                seen.push(module);
                modules.entry(module.to_string()).or_insert_with(|| (0, why.to_string())).0 += weight;
            }
        }
        if seen.is_empty() {
            named += weight;
        }
    }
    if total == 0 {
        return None;
    }
    let share = |w: u128| w as f64 / total as f64;
    let mut unnamed_modules: Vec<UnnamedModule> =
        modules.into_iter().map(|(module, (w, why))| UnnamedModule { module, share: share(w), why }).collect();
    unnamed_modules.sort_by(|a, b| b.share.total_cmp(&a.share));
    Some(Naming { fully_named_share: share(named), unnamed_modules })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        record::profile::{ProfileKind, SampleValue, StackPart},
        symbolize::{Frame, Location},
    };

    fn loc(name: &str, unnamed: Option<&str>) -> Arc<Location> {
        let frames = [Frame { function: name.into(), file: None, line: None }].into();
        Arc::new(Location {
            address: name.len() as u64,
            kernel: false,
            mapping: None,
            frames,
            unnamed: unnamed.map(Arc::from),
        })
    }

    #[test]
    fn shares_of_named_and_unnamed_weight() {
        let mut p = Profile::new(ProfileKind::CPU);
        let one = |n| SampleValue { count: n, nanos: n * 10, ..Default::default() };
        p.add("t".into(), &[StackPart::User(&[loc("work", None), loc("main", None)])], one(3));
        p.add("t".into(), &[StackPart::User(&[loc("[unknown]+0x1", Some("JIT")), loc("main", None)])], one(1));
        let naming = naming(&p).unwrap();
        assert_eq!(naming.fully_named_share, 0.75);
        assert_eq!(
            naming.unnamed_modules,
            [UnnamedModule { module: "[unknown]".into(), share: 0.25, why: "JIT".into() }]
        );
        assert!(super::naming(&Profile::new(ProfileKind::CPU)).is_none());
    }
}
