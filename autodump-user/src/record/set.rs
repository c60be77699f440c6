//! A set of profiles, one per kind: what a slice, a window and a bundle hold.

use std::collections::BTreeMap;

use super::profile::{Profile, ProfileKind};

/// The profiles of one stretch of time, one per kind: every kind recorded per interval, plus the
/// snapshots (goroutines) a bundle adds. Each is merged, written and listed the same way. A kind
/// with nothing recorded takes no memory (an idle process's slices are a few bytes each).
#[derive(Clone, Debug)]
pub struct Profiles {
    /// Sorted by kind; only kinds with something in them (or inserted). A Vec, not a map: a
    /// slice usually holds one or two profiles, and a map's node would be ten times their size.
    by_kind: Vec<Profile>,
}

/// An empty profile of every recorded kind, for the kinds a set has nothing of.
fn empty(kind: ProfileKind) -> &'static Profile {
    static EMPTY: std::sync::OnceLock<BTreeMap<ProfileKind, Profile>> = std::sync::OnceLock::new();
    let all = EMPTY.get_or_init(|| ProfileKind::RECORDED.into_iter().map(|k| (k, Profile::new(k))).collect());
    &all[&kind]
}

impl Profiles {
    /// Empty profiles of every recorded kind.
    pub fn new() -> Self {
        Self { by_kind: Vec::new() }
    }

    /// The profile of `kind`, if this set has one (every recorded kind is always there).
    pub fn get(&self, kind: ProfileKind) -> Option<&Profile> {
        let found = self.by_kind.binary_search_by_key(&kind, |p| p.kind).ok().map(|i| &self.by_kind[i]);
        found.or_else(|| ProfileKind::RECORDED.contains(&kind).then(|| empty(kind)))
    }

    /// The profile of `kind`, created empty if absent.
    pub fn get_mut(&mut self, kind: ProfileKind) -> &mut Profile {
        let i = match self.by_kind.binary_search_by_key(&kind, |p| p.kind) {
            Ok(i) => i,
            Err(i) => {
                self.by_kind.insert(i, Profile::new(kind));
                i
            }
        };
        &mut self.by_kind[i]
    }

    pub fn cpu(&self) -> &Profile {
        self.get(ProfileKind::CPU).expect("every recorded kind is present")
    }

    pub fn offcpu(&self) -> &Profile {
        self.get(ProfileKind::OFF_CPU).expect("every recorded kind is present")
    }

    /// Adds a snapshot profile (goroutines), replacing one of its kind.
    pub fn insert(&mut self, profile: Profile) {
        let kind = profile.kind;
        *self.get_mut(kind) = profile;
    }

    /// Every profile, in the order bundles list them.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        let mut kinds: Vec<ProfileKind> =
            ProfileKind::RECORDED.into_iter().chain(self.by_kind.iter().map(|p| p.kind)).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds.into_iter().filter_map(|k| self.get(k))
    }

    /// Every profile this set holds, to change in place.
    pub fn each_mut(&mut self) -> impl Iterator<Item = &mut Profile> {
        self.by_kind.iter_mut()
    }

    /// Makes every profile as small as it can be, to be kept (see `Profile::freeze`).
    pub fn freeze(&mut self) {
        self.by_kind.retain(|p| !p.samples.is_empty());
        self.by_kind.iter_mut().for_each(Profile::freeze);
        self.by_kind.shrink_to_fit();
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.by_kind.iter().all(|p| p.samples.is_empty())
    }

    pub fn merge(&mut self, other: &Profiles) {
        for profile in other.by_kind.iter().filter(|p| !p.samples.is_empty()) {
            self.get_mut(profile.kind).merge(profile);
        }
    }
}

impl Default for Profiles {
    fn default() -> Self {
        Self::new()
    }
}
