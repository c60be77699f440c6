//! Recording: symbolize what each drain brings into on-CPU, off-CPU and page-fault profiles,
//! and keep them as slices in the flight recorder.

pub mod flight;
pub mod folded;
pub mod kind;
pub mod naming;
pub mod profile;
mod set;
pub mod wakeups;

pub use set::Profiles;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use profile::{pseudo, Profile, ProfileKind, SampleValue, StackPart};

use crate::{
    collect::{
        drain::{Drained, RawSample, RawStack},
        process::Target,
    },
    symbolize::{files::FileReader, lookup_addresses, Location, RuntimeNames, Symbolizer, Update},
};

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
    /// A recorder of `target` with its own symbol files (tests); see [`Recorder::shared`].
    pub fn new(target: Target, frequency_hz: u64, fault_period: u64, forget_after: Option<Duration>) -> Self {
        let symbolizer = Symbolizer::new(target.pid, Vec::<FileReader>::new());
        Self::with_symbolizer(target, symbolizer, frequency_hz, fault_period, forget_after)
    }

    /// A recorder of `target` whose files are named through `files`, shared by every process.
    pub fn shared(
        target: Target,
        files: std::rc::Rc<std::cell::RefCell<crate::symbolize::files::SymbolFiles>>,
        frequency_hz: u64,
        fault_period: u64,
        forget_after: Option<Duration>,
    ) -> Self {
        let symbolizer = Symbolizer::shared(target.pid, files);
        Self::with_symbolizer(target, symbolizer, frequency_hz, fault_period, forget_after)
    }

    fn with_symbolizer(
        target: Target,
        symbolizer: Symbolizer,
        frequency_hz: u64,
        fault_period: u64,
        forget_after: Option<Duration>,
    ) -> Self {
        Self {
            threads: BTreeMap::new(),
            last_seen: HashMap::new(),
            forget_after,
            symbolizer,
            target,
            cpu_period_ns: 1_000_000_000 / frequency_hz,
            fault_period,
        }
    }

    /// The target runs a runtime that names some of its frames or code (see `runtimes`).
    pub fn add_runtime(&mut self, names: Box<dyn RuntimeNames>) {
        self.symbolizer.add_runtime(names);
    }

    /// Once an interval: the runtimes read what they published since (a JIT's perf map).
    pub fn poll_runtimes(&mut self) {
        self.symbolizer.update_runtimes(Update::Tick);
    }

    /// Names, as the runtimes name it now, the code outside files that `profiles` left unnamed
    /// when it was recorded: just before a bundle is written (`alive`: the process can be asked).
    pub fn name_late_frames(&mut self, profiles: &mut Profiles, alive: bool) {
        self.symbolizer.update_runtimes(Update::Bundle { alive });
        for profile in profiles.each_mut() {
            profile.rename_locations(|l| self.symbolizer.rename_anonymous(l));
        }
    }

    /// User addresses named, as they are (no runtime tidies them): the runtimes' own stacks.
    pub fn user_locations(&mut self, addrs: &[u64]) -> Vec<Arc<Location>> {
        self.symbolizer.user(addrs)
    }

    /// Forgets the names of addresses seen so far (the memory budget); true if there were any.
    pub fn clear_names(&mut self) -> bool {
        let had = self.symbolizer.cached() > 0;
        self.symbolizer.clear_cache();
        had
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
            self.add_sample(profiles.get_mut(ProfileKind::CPU), sample, value);
        }
        if !drained.offcpu.is_empty() {
            self.add_off_cpu(profiles.get_mut(ProfileKind::OFF_CPU), &drained.offcpu);
        }
        for sample in &drained.faults {
            let value = SampleValue { count: sample.count * self.fault_period, nanos: 0, ..Default::default() };
            self.add_sample(profiles.get_mut(ProfileKind::FAULTS), sample, value);
        }
        if !drained.wakeups.is_empty() {
            self.add_wakeups(profiles.get_mut(ProfileKind::WAKEUPS), &drained.wakeups);
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

    fn add_sample(&mut self, profile: &mut Profile, sample: &RawSample, value: SampleValue) {
        let thread = self.thread_name(sample.tid);
        let user = self.user_stack(&sample.user);
        let kernel = self.kernel_stack(&sample.kernel);
        let mut parts = Vec::with_capacity(3);
        if sample.runnable {
            parts.push(StackPart::Pseudo(pseudo::RUNNABLE));
        }
        if profile.kind == ProfileKind::FAULTS {
            let region = self.symbolizer.region_of(sample.fault_address);
            parts.push(StackPart::Pseudo(crate::collect::maps::Region::frame(region)));
        }
        parts.push(kernel.as_deref().map_or(StackPart::Pseudo(pseudo::KERNEL_STACK_LOST), StackPart::Kernel));
        parts.push(user.as_deref().map_or(StackPart::Pseudo(pseudo::USER_STACK_LOST), StackPart::User));
        // A thread its runtime parked with nothing to run is set apart: it waits for no one.
        if profile.kind == ProfileKind::OFF_CPU {
            if let Some(root) = user.as_deref().and_then(|u| self.symbolizer.idle_root(u)) {
                parts.push(StackPart::Pseudo(root));
            }
        }
        profile.add(thread, &parts, value);
    }

    /// A user stack symbolized and tidied by the runtimes; None if the kernel lost it.
    pub fn user_stack(&mut self, stack: &RawStack) -> Option<Vec<Arc<Location>>> {
        match stack {
            RawStack::Frames(ips) => {
                let stack = self.symbolizer.user(&lookup_addresses(ips));
                Some(self.symbolizer.tidy(stack))
            }
            RawStack::Lost => None,
        }
    }

    /// A kernel stack symbolized, without the probe's own frames; None if the kernel lost it.
    fn kernel_stack(&mut self, stack: &RawStack) -> Option<Vec<Arc<Location>>> {
        match stack {
            RawStack::Frames(ips) => Some(without_probe_frames(self.symbolizer.kernel(&lookup_addresses(ips)))),
            RawStack::Lost => None,
        }
    }

    /// The thread's name; a thread that lived and died between two reads of /proc is named
    /// by its tid.
    /// The thread's name: as last read, or read now for a thread not seen yet (names are read
    /// for all threads only when their number changes, see `Session::observe`); a thread that
    /// lived and died between two reads is named by its tid.
    pub fn thread_name(&mut self, tid: u32) -> Arc<str> {
        let pid = self.target.pid;
        self.threads
            .entry(tid)
            .or_insert_with(|| match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) {
                Ok(comm) => comm.trim_end_matches('\n').into(),
                Err(_) => format!("tid-{tid}").into(),
            })
            .clone()
    }
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
                    frames: [frame].into(),
                    unnamed: None,
                })
            })
            .collect()
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
        // A horizon long enough that the reads right after the thread's end fall within it.
        let mut recorder = Recorder::new(me, 99, 1, Some(Duration::from_secs(1)));
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
        std::thread::sleep(Duration::from_millis(1200));
        recorder.observe_target();
        assert!(!recorder.threads.contains_key(&worker_tid), "gone past the horizon");
        assert!(recorder.threads.contains_key(&tid()), "a live thread stays");
    }
}
