//! A symbolized profile: unique (thread, stack) pairs with their counts. Every writer (folded,
//! flamegraph, pprof) reads from this one model.

use std::sync::Arc;

use autodump_common::runtimes::{frame_kind, kind};

use super::kind::Field;
pub use super::kind::ProfileKind;
use crate::symbolize::{Frame, Location};

/// Pseudo frames that stand where the kernel could not give a real one.
pub mod pseudo {
    pub const USER_STACK_LOST: &str = "[user stack lost]";
    pub const KERNEL_STACK_LOST: &str = "[kernel stack lost]";
    /// Off-CPU leaf: the thread was preempted or yielded, and waited for a CPU.
    pub const RUNNABLE: &str = "[runnable]";
    /// Wake-ups: between the blocked thread's stack and its waker's (as offwaketime writes it).
    pub const WOKEN_BY: &str = "--";
    /// Wake-ups: the lock a thread waited on (a label that follows it: `[futex 0x7f…]`).
    pub const FUTEX_PREFIX: &str = "[futex 0x";
    /// Wake-ups: the waker was an interrupt, not a thread (its stack is the kernel's).
    pub const TIMER: &str = "[timer]";
    pub const INTERRUPT: &str = "[interrupt]";
}

/// One stack of one thread. Locations are indices into [`Profile::locations`], innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey {
    pub thread: Arc<str>,
    pub stack: Vec<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleValue {
    /// On-CPU: samples. Off-CPU: blocks. Faults: faults (samples × period). Goroutines: goroutines.
    pub count: u64,
    /// On-CPU: samples × sampling period. Off-CPU: time off the CPU. Otherwise 0.
    pub nanos: u64,
    /// Heap: bytes in use (`count` is the objects in use).
    pub bytes: u64,
    /// Heap: objects and bytes allocated over the program's life.
    pub alloc_count: u64,
    pub alloc_bytes: u64,
}

impl SampleValue {
    /// Its number `field`.
    pub fn get(&self, field: Field) -> u64 {
        match field {
            Field::Count => self.count,
            Field::Nanos => self.nanos,
            Field::Micros => (self.nanos + 500) / 1000,
            Field::Bytes => self.bytes,
            Field::AllocCount => self.alloc_count,
            Field::AllocBytes => self.alloc_bytes,
        }
    }

    pub fn add(&mut self, other: &SampleValue) {
        self.count += other.count;
        self.nanos += other.nanos;
        self.bytes += other.bytes;
        self.alloc_count += other.alloc_count;
        self.alloc_bytes += other.alloc_bytes;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LocationKey {
    /// An address, and for code no file backs the hash of its name: JIT code is named once its
    /// runtime's map lists it, and its addresses are reused for other code.
    User(u64, u64),
    Kernel(u64),
    Pseudo(&'static str),
    /// A label made when recorded (a waker's name, a lock's address), by the hash of its text.
    Label(u64),
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub kind: ProfileKind,
    /// A runtime's own sampling period, for kinds whose pprof period it sets
    /// (`Period::OfProfile`: Go's `MemProfileRate`); 0 otherwise.
    pub period: u64,
    pub locations: Vec<Arc<Location>>,
    /// The key each location was interned under, by the same index.
    location_keys: Vec<LocationKey>,
    location_ids: foldhash::HashMap<LocationKey, u32>,
    pub samples: foldhash::HashMap<SampleKey, SampleValue>,
}

/// A stack to add, innermost first, already symbolized.
pub enum StackPart<'a> {
    User(&'a [Arc<Location>]),
    Kernel(&'a [Arc<Location>]),
    Pseudo(&'static str),
    /// A pseudo frame whose name is made when recorded.
    Label(&'a str),
}

/// A frame that names no code: address 0, no mapping.
fn pseudo_location(name: &str, unnamed: Option<Arc<str>>) -> Location {
    let frames = [Frame { function: Arc::from(name), file: None, line: None }].into();
    Location { address: 0, kernel: false, mapping: None, frames, unnamed }
}

/// A label's key: the same in every profile and every run (SipHash with fixed keys).
fn label_hash(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

impl Profile {
    /// The share of this profile's weight (samples, or time off-CPU) whose stacks have a
    /// location `pick` chooses; None for an empty profile.
    pub fn share_with(&self, pick: impl Fn(&Location) -> bool) -> Option<f64> {
        let weigh = |v: &SampleValue| v.get(self.kind.info().weight.0);
        let total: u64 = self.samples.values().map(weigh).sum();
        let picked: u64 = self
            .samples
            .iter()
            .filter(|(k, _)| k.stack.iter().any(|&i| pick(&self.locations[i as usize])))
            .map(|(_, v)| weigh(v))
            .sum();
        (total > 0).then(|| picked as f64 / total as f64)
    }

    /// Replaces the locations `rename` gives a new one for (JIT code named once its runtime's
    /// map listed it, just before a bundle is written).
    pub fn rename_locations(&mut self, mut rename: impl FnMut(&Location) -> Option<Location>) {
        for location in &mut self.locations {
            if let Some(named) = rename(location) {
                *location = Arc::new(named);
            }
        }
    }

    pub fn new(kind: ProfileKind) -> Self {
        Self {
            kind,
            period: 0,
            locations: Vec::new(),
            location_keys: Vec::new(),
            location_ids: Default::default(),
            samples: Default::default(),
        }
    }

    /// Adds `value` to the sample of `thread` whose stack is the concatenation of `parts`.
    pub fn add(&mut self, thread: Arc<str>, parts: &[StackPart<'_>], value: SampleValue) {
        let mut stack = Vec::new();
        for part in parts {
            match part {
                StackPart::User(locs) => stack.extend(locs.iter().map(|l| self.intern(user_key(l), l))),
                StackPart::Kernel(locs) => {
                    stack.extend(locs.iter().map(|l| self.intern(LocationKey::Kernel(l.address), l)))
                }
                StackPart::Pseudo(name) => {
                    let lost = [pseudo::USER_STACK_LOST, pseudo::KERNEL_STACK_LOST].contains(name);
                    let why = lost.then(|| "the kernel could not record this stack (see dropped)".into());
                    stack.push(self.intern(LocationKey::Pseudo(name), &Arc::new(pseudo_location(name, why))));
                }
                StackPart::Label(name) => {
                    let key = LocationKey::Label(label_hash(name));
                    if let Some(&id) = self.location_ids.get(&key) {
                        stack.push(id);
                    } else {
                        stack.push(self.intern(key, &Arc::new(pseudo_location(name, None))));
                    }
                }
            }
        }
        self.samples.entry(SampleKey { thread, stack }).or_default().add(&value);
    }

    /// Adds every sample of `other` (a later slice of the same process).
    pub fn merge(&mut self, other: &Profile) {
        for (key, value) in &other.samples {
            let stack = key
                .stack
                .iter()
                .map(|&i| self.intern(other.location_keys[i as usize], &other.locations[i as usize]))
                .collect();
            self.samples.entry(SampleKey { thread: key.thread.clone(), stack }).or_default().add(value);
        }
    }

    /// Makes the profile as small as it can be, to be kept (a flight-recorder slice): it can still
    /// be merged from, and added to (the index it drops is rebuilt then).
    pub fn freeze(&mut self) {
        self.location_ids = Default::default();
        self.locations.shrink_to_fit();
        self.location_keys.shrink_to_fit();
        self.samples.shrink_to_fit();
    }

    fn intern(&mut self, key: LocationKey, location: &Arc<Location>) -> u32 {
        if self.location_ids.len() < self.location_keys.len() {
            // Frozen: the index of locations is rebuilt.
            self.location_ids = self.location_keys.iter().enumerate().map(|(i, k)| (*k, i as u32)).collect();
        }
        *self.location_ids.entry(key).or_insert_with(|| {
            self.locations.push(location.clone());
            self.location_keys.push(key);
            (self.locations.len() - 1) as u32
        })
    }

    pub fn total(&self) -> SampleValue {
        self.samples.values().fold(SampleValue::default(), |mut acc, v| {
            acc.add(v);
            acc
        })
    }

    /// Function names of a stack, outermost first (the order of folded stacks). Kernel
    /// functions carry the `_[k]` suffix, as in Brendan Gregg's stackcollapse tools.
    pub fn names_root_first(&self, key: &SampleKey) -> Vec<String> {
        let mut names = Vec::new();
        self.for_each_name_root_first(key, |name, kernel| {
            names.push(if kernel { format!("{name}_[k]") } else { name.to_string() })
        });
        names
    }

    /// Calls `f(function, is_kernel)` for each frame of a stack, root first, without copying.
    /// A runtime's frames (interpreted code) read `function (file:line)`.
    pub fn for_each_name_root_first(&self, key: &SampleKey, mut f: impl FnMut(&str, bool)) {
        let mut buf = String::new();
        for &i in key.stack.iter().rev() {
            let loc = &self.locations[i as usize];
            for frame in loc.frames.iter().rev() {
                f(display_name(loc, frame, &mut buf), loc.kernel);
            }
        }
    }

    /// Samples in a stable order: heaviest first, then by key.
    pub fn sorted_samples(&self) -> Vec<(&SampleKey, &SampleValue)> {
        let mut v: Vec<_> = self.samples.iter().collect();
        v.sort_by(|a, b| b.1.nanos.cmp(&a.1.nanos).then(b.1.count.cmp(&a.1.count)).then(a.0.cmp(b.0)));
        v
    }
}

/// The name of `frame` of `location` in folded stacks: `function (file:line)` for a runtime's
/// frame, whose function names are not unique across files (`<module>`, `block in run`), and
/// for JIT code a runtime named with its line (a compiled Java method, as its interpreted frames
/// read); native code in files by its function alone, as `perf` folds it.
pub fn display_name<'a>(location: &Location, frame: &'a Frame, buf: &'a mut String) -> &'a str {
    let runtime = frame_kind(location.address) != kind::NATIVE;
    let jit_line = frame.line.is_some() && location.mapping.as_ref().is_some_and(|m| !m.is_file());
    if location.kernel || !(runtime || jit_line) {
        return &frame.function;
    }
    use std::fmt::Write;
    buf.clear();
    let _ = match (&frame.file, frame.line) {
        (Some(file), Some(line)) => write!(buf, "{} ({file}:{line})", frame.function),
        (Some(file), None) => write!(buf, "{} ({file})", frame.function),
        _ => write!(buf, "{}", frame.function),
    };
    buf
}

/// The key of a user location (see `LocationKey::User`).
fn user_key(location: &Location) -> LocationKey {
    if location.mapping.as_ref().is_some_and(|m| m.is_file()) {
        return LocationKey::User(location.address, 0);
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    location.frames.first().map(|f| &f.function).hash(&mut hasher);
    LocationKey::User(location.address, hasher.finish())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn loc(address: u64, name: &str, kernel: bool) -> Arc<Location> {
        Arc::new(Location {
            address,
            kernel,
            mapping: None,
            frames: [Frame { function: name.into(), file: None, line: None }].into(),
            unnamed: None,
        })
    }

    /// An on-CPU profile of one-frame stacks on thread "t": (function, samples) each.
    pub fn flat_profile(parts: &[(&str, u64)]) -> Profile {
        let mut p = Profile::new(ProfileKind::CPU);
        for (i, (name, n)) in parts.iter().enumerate() {
            let user = [loc(i as u64 + 1, name, false)];
            p.add("t".into(), &[StackPart::User(&user)], SampleValue { count: *n, nanos: 0, ..Default::default() });
        }
        p
    }

    /// main -> work -> spin on one thread, main -> idle on another, plus a kernel leaf.
    pub fn sample_profile() -> Profile {
        let mut p = Profile::new(ProfileKind::CPU);
        let (main, work, spin, idle) =
            (loc(1, "main", false), loc(2, "work", false), loc(3, "spin", false), loc(4, "idle", false));
        let k = loc(0xffff_0001, "do_syscall_64", true);
        p.add(
            "worker".into(),
            &[StackPart::User(&[spin.clone(), work.clone(), main.clone()])],
            SampleValue { count: 30, nanos: 300, ..Default::default() },
        );
        p.add(
            "worker".into(),
            &[StackPart::User(&[spin, work, main.clone()])],
            SampleValue { count: 10, nanos: 100, ..Default::default() },
        );
        p.add(
            "app".into(),
            &[StackPart::Kernel(&[k]), StackPart::User(&[idle, main])],
            SampleValue { count: 5, nanos: 50, ..Default::default() },
        );
        p
    }

    #[test]
    fn adds_up_identical_stacks() {
        let p = sample_profile();
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.total(), SampleValue { count: 45, nanos: 450, ..Default::default() });
        assert_eq!(p.locations.len(), 5, "locations are interned");
    }

    #[test]
    fn names_run_root_first_with_kernel_suffix() {
        let p = sample_profile();
        let sorted = p.sorted_samples();
        assert_eq!(p.names_root_first(sorted[0].0), ["main", "work", "spin"]);
        assert_eq!(p.names_root_first(sorted[1].0), ["main", "idle", "do_syscall_64_[k]"]);
    }

    #[test]
    fn a_frozen_profile_merges_and_grows_alike() {
        let mut frozen = sample_profile();
        frozen.freeze();
        let mut merged = Profile::new(ProfileKind::CPU);
        merged.merge(&frozen);
        assert_eq!(merged.total(), sample_profile().total());
        frozen.merge(&sample_profile());
        assert_eq!((frozen.samples.len(), frozen.locations.len()), (2, 5), "no location interned twice");
    }

    #[test]
    fn merge_equals_adding_twice() {
        let mut a = sample_profile();
        a.merge(&sample_profile());
        assert_eq!(a.total(), SampleValue { count: 90, nanos: 900, ..Default::default() });
        assert_eq!(a.samples.len(), 2);
        assert_eq!(a.locations.len(), 5);
    }

    #[test]
    fn inlined_frames_expand_outermost_first() {
        let mut p = Profile::new(ProfileKind::CPU);
        let inlined = Arc::new(Location {
            address: 9,
            kernel: false,
            mapping: None,
            frames: [
                Frame { function: "inner".into(), file: None, line: None },
                Frame { function: "outer".into(), file: None, line: None },
            ]
            .into(),
            unnamed: None,
        });
        p.add(
            "t".into(),
            &[StackPart::Pseudo(pseudo::RUNNABLE), StackPart::User(&[inlined])],
            SampleValue { count: 1, nanos: 1, ..Default::default() },
        );
        let key = p.samples.keys().next().unwrap().clone();
        assert_eq!(p.names_root_first(&key), ["outer", "inner", "[runnable]"]);
    }
}
