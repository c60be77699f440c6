//! Recording: symbolize what each drain brings into on-CPU, off-CPU and page-fault profiles,
//! and keep them as slices in the flight recorder.

pub mod flight;
pub mod heap;
pub mod kind;
pub mod naming;
pub mod profile;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use profile::{pseudo, Profile, ProfileKind, SampleValue, StackPart};

use crate::{
    collect::{
        drain::{Drained, RawSample, RawStack},
        goruntime::Goroutine,
        process::Target,
    },
    symbolize::{lookup_addresses, Location, Symbolizer},
};

/// The profiles of one stretch of time, one per kind: every kind recorded per interval, plus the
/// snapshots (goroutines) a bundle adds. Each is merged, written and listed the same way.
#[derive(Clone, Debug)]
pub struct Profiles {
    by_kind: BTreeMap<ProfileKind, Profile>,
}

impl Profiles {
    /// Empty profiles of every recorded kind.
    pub fn new() -> Self {
        Self { by_kind: ProfileKind::RECORDED.into_iter().map(|k| (k, Profile::new(k))).collect() }
    }

    /// The profile of `kind`, if this set has one (every recorded kind is always there).
    pub fn get(&self, kind: ProfileKind) -> Option<&Profile> {
        self.by_kind.get(&kind)
    }

    /// The profile of `kind`, created empty if absent.
    pub fn get_mut(&mut self, kind: ProfileKind) -> &mut Profile {
        self.by_kind.entry(kind).or_insert_with(|| Profile::new(kind))
    }

    pub fn cpu(&self) -> &Profile {
        self.get(ProfileKind::Cpu).expect("every recorded kind is present")
    }

    pub fn offcpu(&self) -> &Profile {
        self.get(ProfileKind::OffCpu).expect("every recorded kind is present")
    }

    /// Adds a snapshot profile (goroutines), replacing one of its kind.
    pub fn insert(&mut self, profile: Profile) {
        self.by_kind.insert(profile.kind, profile);
    }

    /// Every profile, in the order bundles list them.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.by_kind.values()
    }

    pub fn merge(&mut self, other: &Profiles) {
        for profile in other.iter() {
            self.get_mut(profile.kind).merge(profile);
        }
    }
}

impl Default for Profiles {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Recorder {
    /// Every thread seen (within `forget_after`), by tid: its latest name.
    pub threads: BTreeMap<u32, Arc<str>>,
    /// When each thread was last seen alive.
    last_seen: HashMap<u32, Instant>,
    /// A thread gone this long is forgotten (watch mode: longer than any bundle reaches back),
    /// so that a target that creates threads all the time does not grow the agent for ever.
    forget_after: Option<Duration>,
    symbolizer: Symbolizer,
    target: Target,
    cpu_period_ns: u64,
    /// One recorded page fault stands for this many.
    fault_period: u64,
}

impl Recorder {
    pub fn new(target: Target, frequency_hz: u64, fault_period: u64, forget_after: Option<Duration>) -> Self {
        Self {
            threads: BTreeMap::new(),
            last_seen: HashMap::new(),
            forget_after,
            symbolizer: Symbolizer::new(target.pid),
            target,
            cpu_period_ns: 1_000_000_000 / frequency_hz,
            fault_period,
        }
    }
    /// Looks for separate debug files of stripped executables in `dirs` (`--debug-dir`).
    pub fn set_debug_dirs(&mut self, dirs: Vec<std::path::PathBuf>) {
        self.symbolizer = Symbolizer::with_debug_dirs(self.target.pid, dirs);
    }

    /// Loads kernel and executable symbols ahead of the first drain (see `Symbolizer::warm_up`).
    pub fn warm_up(&mut self) {
        self.symbolizer.warm_up(&self.target.exe);
    }

    /// Reads thread names and memory mappings while the target lives. Call before each drain,
    /// so that threads and libraries that appear and vanish within an interval are still named.
    /// Returns the target's memory map as read now.
    pub fn observe_target(&mut self) -> Option<crate::collect::maps::MemoryMap> {
        let now = Instant::now();
        for (tid, name) in self.target.thread_names() {
            if self.threads.get(&tid).map(|n| &**n) != Some(name.as_str()) {
                self.threads.insert(tid, name.into());
            }
            self.last_seen.insert(tid, now);
        }
        if let Some(horizon) = self.forget_after {
            let last_seen = &mut self.last_seen;
            // Threads named only from samples (`tid-N`) were never seen: their clock starts now.
            self.threads.retain(|tid, _| now.duration_since(*last_seen.entry(*tid).or_insert(now)) < horizon);
            last_seen.retain(|tid, _| self.threads.contains_key(tid));
        }
        self.symbolizer.refresh_maps()
    }

    /// Symbolizes one drain into fresh profiles.
    pub fn profiles(&mut self, drained: &Drained) -> Profiles {
        let mut profiles = Profiles::new();
        for sample in &drained.cpu {
            let value =
                SampleValue { count: sample.count, nanos: sample.count * self.cpu_period_ns, ..Default::default() };
            self.add_sample(profiles.get_mut(ProfileKind::Cpu), sample, value);
        }
        self.add_off_cpu(profiles.get_mut(ProfileKind::OffCpu), &drained.offcpu);
        for sample in &drained.faults {
            let value = SampleValue { count: sample.count * self.fault_period, nanos: 0, ..Default::default() };
            self.add_sample(profiles.get_mut(ProfileKind::Faults), sample, value);
        }
        profiles
    }

    /// Adds off-CPU samples (e.g. threads still blocked when a window closes) to `profile`.
    pub fn add_off_cpu(&mut self, profile: &mut Profile, samples: &[RawSample]) {
        for sample in samples {
            let value = SampleValue { count: sample.count, nanos: sample.off_cpu_ns, ..Default::default() };
            self.add_sample(profile, sample, value);
        }
    }

    /// A profile of goroutines: one per stack and state, symbolized like the rest.
    pub fn goroutine_profile(&mut self, goroutines: &[Goroutine]) -> Profile {
        let mut profile = Profile::new(ProfileKind::Goroutines);
        for g in goroutines {
            // Every saved pc of a parked goroutine is a return address: look up the call.
            let addrs: Vec<u64> = g.frames.iter().map(|a| a.saturating_sub(1)).collect();
            let locations = self.symbolizer.user(&addrs);
            let part =
                if locations.is_empty() { StackPart::Pseudo(pseudo::NO_STACK) } else { StackPart::User(&locations) };
            profile.add(g.state.as_str().into(), &[part], SampleValue { count: 1, nanos: 0, ..Default::default() });
        }
        profile
    }

    fn add_sample(&mut self, profile: &mut Profile, sample: &RawSample, value: SampleValue) {
        let thread = self.thread_name(sample.tid);
        let user = match &sample.user {
            RawStack::Frames(ips) => Some(without_frames_past_root(self.symbolizer.user(&lookup_addresses(ips)))),
            RawStack::Lost => None,
        };
        let kernel = match &sample.kernel {
            RawStack::Frames(ips) => Some(without_probe_frames(self.symbolizer.kernel(&lookup_addresses(ips)))),
            RawStack::Lost => None,
        };
        let mut parts = Vec::with_capacity(3);
        if sample.runnable {
            parts.push(StackPart::Pseudo(pseudo::RUNNABLE));
        }
        if profile.kind == ProfileKind::Faults {
            let region = self.symbolizer.region_of(sample.fault_address);
            parts.push(StackPart::Pseudo(crate::collect::maps::Region::frame(region)));
        }
        parts.push(kernel.as_deref().map_or(StackPart::Pseudo(pseudo::KERNEL_STACK_LOST), StackPart::Kernel));
        parts.push(user.as_deref().map_or(StackPart::Pseudo(pseudo::USER_STACK_LOST), StackPart::User));
        profile.add(thread, &parts, value);
    }

    /// The thread's name; a thread that lived and died between two reads of /proc is named
    /// by its tid.
    fn thread_name(&mut self, tid: u32) -> Arc<str> {
        self.threads.entry(tid).or_insert_with(|| format!("tid-{tid}").into()).clone()
    }
}

/// The functions a Go stack starts in: a goroutine's, a thread's system stack, the main thread's,
/// and `runtime.mcall`, which switches to the system stack (the frame pointer above it is not
/// a frame of this stack).
const GO_STACK_ROOTS: &[&str] = &["runtime.goexit", "runtime.mstart", "runtime.rt0_go", "runtime.mcall"];

/// Drops what a frame-pointer walk read past the start of a Go stack: the words above
/// `runtime.mstart` on a system stack are not frames, and name nothing (`[unknown]+0x48bf...`).
fn without_frames_past_root(mut locations: Vec<Arc<Location>>) -> Vec<Arc<Location>> {
    let is_root = |l: &Arc<Location>| l.frames.last().is_some_and(|f| GO_STACK_ROOTS.contains(&&*f.function));
    if let Some(root) = locations.iter().position(is_root) {
        locations.truncate(root + 1);
    }
    locations
}

/// How deep into a kernel stack the probe's own frames can sit.
const PROBE_FRAME_DEPTH: usize = 8;

/// Drops the innermost kernel frames that belong to the probe itself: the BPF program (JIT'd
/// code, which kallsyms names after whatever symbol precedes it, e.g.
/// `__stop_runtime_ptr_USER_PTR_MAX`) and the tracepoint trampoline that ran it
/// (`bpf_trace_run4`). Everything up to the outermost such frame near the leaf goes: the
/// workload's stack starts below it (`__schedule` at a context switch).
fn without_probe_frames(mut locations: Vec<Arc<Location>>) -> Vec<Arc<Location>> {
    let is_probe = |l: &Arc<Location>| {
        l.frames.iter().any(|f| {
            ["bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_"].iter().any(|p| f.function.starts_with(p))
        })
    };
    let probe_frames = locations.iter().take(PROBE_FRAME_DEPTH).rposition(is_probe).map_or(0, |i| i + 1);
    locations.drain(..probe_frames);
    locations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Recorder;
    use crate::collect::process::Target;

    fn tid() -> u32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    }

    fn kernel(names: &[&str]) -> Vec<std::sync::Arc<crate::symbolize::Location>> {
        names
            .iter()
            .map(|n| {
                let frame = crate::symbolize::Frame { function: (*n).into(), file: None, line: None };
                std::sync::Arc::new(crate::symbolize::Location {
                    address: 0,
                    kernel: true,
                    mapping: None,
                    frames: vec![frame],
                    unnamed: None,
                })
            })
            .collect()
    }

    #[test]
    fn go_stacks_end_at_their_root() {
        let stack = kernel(&[
            "runtime.usleep",
            "runtime.sysmon",
            "runtime.mstart",
            "[unknown]+0x7ffe54f1b9ff",
            "[unknown]+0x48bf",
        ]);
        let kept: Vec<String> =
            super::without_frames_past_root(stack).iter().map(|l| l.frames[0].function.to_string()).collect();
        assert_eq!(kept, ["runtime.usleep", "runtime.sysmon", "runtime.mstart"]);
        assert_eq!(super::without_frames_past_root(kernel(&["main", "__libc_start_main"])).len(), 2);
    }

    #[test]
    fn the_probes_own_frames_leave_kernel_stacks() {
        // What sched_switch stacks looked like on 6.18: the JIT'd program, mis-named by
        // kallsyms, under the trampoline.
        let stack =
            kernel(&["__stop_runtime_ptr_USER_PTR_MAX", "bpf_trace_run4", "__schedule", "schedule", "do_nanosleep"]);
        let kept: Vec<String> =
            super::without_probe_frames(stack).iter().map(|l| l.frames[0].function.to_string()).collect();
        assert_eq!(kept, ["__schedule", "schedule", "do_nanosleep"]);
        let plain = kernel(&["__schedule", "schedule"]);
        assert_eq!(super::without_probe_frames(plain).len(), 2, "nothing to drop");
    }

    #[test]
    fn threads_gone_past_the_horizon_are_forgotten() {
        let me = Target::open(std::process::id()).unwrap();
        let mut recorder = Recorder::new(me, 99, 1, Some(Duration::from_millis(200)));
        let (seen, done) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let worker = std::thread::spawn(move || {
            seen.0.send(tid()).unwrap();
            done.1.recv().unwrap();
        });
        let worker_tid = seen.1.recv().unwrap();
        recorder.observe_target();
        assert!(recorder.threads.contains_key(&worker_tid));
        done.0.send(()).unwrap();
        worker.join().unwrap();
        recorder.observe_target();
        assert!(recorder.threads.contains_key(&worker_tid), "still within the horizon");
        std::thread::sleep(Duration::from_millis(300));
        recorder.observe_target();
        assert!(!recorder.threads.contains_key(&worker_tid), "gone past the horizon");
        assert!(recorder.threads.contains_key(&tid()), "a live thread stays");
    }
}
