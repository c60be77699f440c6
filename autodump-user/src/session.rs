//! One profiling session of one process, shared by record and watch mode: open the target,
//! have the shared probes record it, and turn its part of each drain into a flight-recorder
//! slice.

mod jit;
mod python;

use std::time::{Duration, Instant, SystemTime};

use crate::{
    cli::Cli,
    collect::{
        drain::Drained,
        goruntime::GoSupport,
        maps::MemoryMap,
        memory::MemoryWatch,
        monotonic_ns,
        process::{ProcessError, Stat, Target},
        python::{CodeCache, PySupport},
        unix_now,
    },
    error::{internal, AgentError, ExitCode},
    go_bundle::{go_bundle, GoBundle, GoroutineFacts},
    goroutine_watch::GoroutineWatch,
    heap_watch::HeapWatch,
    host::ProbeHost,
    model::{
        reports::{GoStatus, Reason},
        summary::Facts,
    },
    record::{
        flight::Slice,
        profile::{Profile, ProfileKind},
        Profiles, Recorder,
    },
    write::bundle,
};

pub struct Session {
    pub target: Target,
    pub recorder: Recorder,
    /// Whether this is a Go program whose goroutines can be read.
    pub go: GoSupport,
    /// Whether this is a CPython program whose threads can be read.
    pub python: PySupport,
    /// Whether the probes emit its Python frames (CFI walks, the eval loop found), or why not.
    python_frames: Result<(), String>,
    /// Its code objects' names and line tables, read once.
    python_codes: CodeCache,
    /// (threads, threads with Python frames) in the last Python dump.
    python_threads: Option<(usize, usize)>,
    /// Unix seconds when the current slice began.
    slice_start: f64,
    /// Resident memory by kind and by mapping, over the recent past.
    pub memory: MemoryWatch,
    /// Go programs: heap profiles over the recent past.
    heap: HeapWatch,
    /// Go programs: goroutine snapshots over the recent past, and what the last bundle said of them.
    goroutines: GoroutineWatch,
    goroutine_facts: GoroutineFacts,
    /// The process's /proc stat as read this interval (by the liveness check), and when, for the
    /// metrics and to tell whether its map or threads may have changed.
    pub stat: Option<(Stat, SystemTime)>,
    /// (vsize, threads) when the map and thread names were last read, and when.
    observed: Option<((u64, u64), Instant)>,
}

/// A process whose size and thread count have not changed has its map and thread names read
/// this often (an address outside the map, or an unknown thread, is read at once).
const OBSERVE_EVERY: Duration = Duration::from_secs(10);

impl Session {
    /// Process `pid`, or exit code 3 when there is none.
    pub fn target(pid: u32) -> Result<Target, AgentError> {
        Target::open(pid).map_err(|e| match e {
            ProcessError::NotFound(_) => AgentError::new(ExitCode::NoSuchProcess, e.to_string()),
            _ => internal(e),
        })
    }

    /// Checks the target and the output directory: before the probes load, so that a wrong pid
    /// or directory is told as such.
    pub fn check(cli: &Cli, pid: u32) -> Result<Target, AgentError> {
        let target = Self::target(pid)?;
        bundle::prepare_out_dir(&cli.out).map_err(|e| AgentError::new(ExitCode::Output, e.to_string()))?;
        Ok(target)
    }

    /// Starts recording `target` with the host's probes.
    pub fn open(host: &mut ProbeHost, cli: &Cli, target: Target) -> Result<Self, AgentError> {
        let pid = target.pid;
        let go = GoSupport::detect(pid, &mut host.go_files);
        match &go {
            GoSupport::Ready(_) => tracing::info!(pid, "Go program: goroutines are counted and dumped"),
            GoSupport::Unavailable(why) => tracing::warn!(pid, "Go program, but goroutines cannot be read: {why}"),
            GoSupport::NotGo => {}
        }
        let maps = MemoryMap::read(pid).ok();
        let python =
            maps.as_ref().map_or(PySupport::NotPython, |maps| PySupport::detect(pid, maps, &mut host.python_files));
        let python_frames = match &python {
            PySupport::Ready(rt) => python::python_frames(host, pid, rt),
            _ => Err("not a supported CPython".into()),
        };
        match &python {
            PySupport::Ready(rt) => tracing::info!(pid, version = %rt.version, "CPython: its threads are dumped"),
            PySupport::Unsupported { version, why } => {
                tracing::warn!(pid, version = %version, "CPython, but its threads cannot be read: {why}")
            }
            PySupport::NotPython => {}
        }
        // Watch mode forgets threads gone for longer than any bundle reaches back.
        let forget_after = cli.duration.is_none().then(|| cli.lookback + cli.after + 4 * cli.interval);
        let period = crate::probes::prime_period(cli.fault_period);
        let mut recorder = Recorder::shared(target.clone(), host.files.clone(), cli.frequency, period, forget_after);
        recorder.observe_target();
        recorder.warm_up();
        if let PySupport::Ready(rt) = &python {
            recorder.set_python(rt.clone(), cli.python_eval_frames);
        }
        jit::name_jit_code(&mut recorder, &target, maps.as_ref(), cli);
        host.watch(pid)?;
        // The first snapshots once the probes record: growth and faults then cover one span.
        let keep = (cli.duration.unwrap_or_default() + cli.lookback + cli.after + 2 * cli.interval).as_secs_f64();
        let mut memory = MemoryWatch::new(pid, cli.smaps_every, keep);
        memory.observe(unix_now(SystemTime::now()));
        let mut heap = HeapWatch::new(cli.heap_every, keep);
        let mut goroutines = GoroutineWatch::new(cli.goroutine_every, cli.goroutine_max as usize, keep);
        if let GoSupport::Ready(rt) = &go {
            heap.observe(rt, unix_now(SystemTime::now()));
            goroutines.observe(rt, unix_now(SystemTime::now()));
        }
        tracing::info!(pid, comm = %target.comm, frequency_hz = cli.frequency, "recording");
        let slice_start = unix_now(SystemTime::now());
        let goroutine_facts = GoroutineFacts::default();
        Ok(Self {
            target,
            recorder,
            go,
            python,
            python_frames,
            python_codes: CodeCache::default(),
            python_threads: None,
            slice_start,
            memory,
            heap,
            goroutines,
            goroutine_facts,
            stat: None,
            observed: None,
        })
    }

    /// Before a drain: learns new threads and mappings (so that the drained stacks can be named).
    /// Only while the process lives (callers check): a new process may have its pid, and its
    /// threads' names and mappings would be taken for the old one's. With this interval's stat,
    /// they are read only when the process's size or thread count changed, or every
    /// `OBSERVE_EVERY`: a calm process costs a few /proc reads an interval.
    pub fn observe(&mut self, host: &mut ProbeHost) {
        let shape = self.stat.as_ref().map(|(s, _)| (s.vsize, s.threads));
        let fresh = match (shape, self.observed) {
            (Some(now), Some((then, at))) => now == then && at.elapsed() < OBSERVE_EVERY,
            _ => false,
        };
        if fresh {
            return;
        }
        if let Some(map) = self.recorder.observe_target() {
            host.refresh(self.target.pid, &map);
        }
        if let (PySupport::Ready(rt), Ok(())) = (&self.python, &self.python_frames) {
            host.python_threads(self.target.pid, &rt.thread_states().unwrap_or_default());
        }
        self.observed = shape.map(|s| (s, Instant::now()));
    }

    /// Whether the process still runs; keeps its stat for this interval.
    pub fn check_alive(&mut self) -> bool {
        self.stat = self.target.stat_if_alive().map(|s| (s, SystemTime::now()));
        self.stat.is_some()
    }

    /// Ends the current slice with this process's part of a drain.
    pub fn tick(&mut self, drained: &Drained) -> Slice {
        let started = std::time::Instant::now();
        self.recorder.poll_jit();
        let profiles = self.recorder.profiles(drained);
        let now = unix_now(SystemTime::now());
        self.memory.observe(now);
        if let GoSupport::Ready(rt) = &self.go {
            self.heap.observe(rt, now);
            self.goroutines.observe(rt, now);
        }
        tracing::debug!(
            pid = self.target.pid,
            stacks = drained.cpu.len() + drained.offcpu.len() + drained.faults.len(),
            symbolize_us = started.elapsed().as_micros() as u64,
            "tick"
        );
        self.next_slice(profiles)
    }

    /// The last slice, from the final drain, with every thread still blocked counted up to now
    /// (but not before `not_before`, Unix seconds).
    pub fn finish(&mut self, host: &ProbeHost, drained: &Drained, not_before: f64) -> Result<Slice, AgentError> {
        let now = (unix_now(SystemTime::now()), monotonic_ns());
        if self.check_alive() {
            self.recorder.observe_target();
        }
        let mut profiles = self.recorder.profiles(drained);
        profiles.get_mut(ProfileKind::OffCpu).merge(&self.blocked(host, now, not_before)?);
        Ok(self.next_slice(profiles))
    }

    /// Threads blocked right now, counted from `not_before` (Unix seconds) or their block.
    pub fn blocked_now(&mut self, host: &ProbeHost, not_before: f64) -> Result<Profile, AgentError> {
        self.blocked(host, (unix_now(SystemTime::now()), monotonic_ns()), not_before)
    }

    /// Threads blocked at `now` (Unix seconds, CLOCK_MONOTONIC ns), counted from `not_before`.
    fn blocked(
        &mut self,
        host: &ProbeHost,
        (now_unix, now_ns): (f64, u64),
        not_before: f64,
    ) -> Result<Profile, AgentError> {
        let floor_ns = now_ns.saturating_sub(((now_unix - not_before).max(0.0) * 1e9) as u64);
        let blocked = host.still_blocked(self.target.pid, now_ns, floor_ns)?;
        let mut profile = Profile::new(ProfileKind::OffCpu);
        self.recorder.add_off_cpu(&mut profile, &blocked);
        Ok(profile)
    }

    /// A summary's facts about the target and the probes; callers add the window and reason.
    pub fn facts<'a>(
        &'a self,
        host: &ProbeHost,
        reason: Reason,
        profiles: &'a Profiles,
    ) -> Result<Facts<'a>, AgentError> {
        Ok(Facts {
            reason,
            pid: self.target.pid,
            comm: &self.target.comm,
            exe: self.target.exe.display().to_string(),
            frequency_hz: host.frequency_hz,
            fault_period: host.fault_period,
            offcpu_kernel_stacks: host.offcpu_kernel_stacks,
            start: 0.0,
            trigger: None,
            end: 0.0,
            profiles,
            threads: &self.recorder.threads,
            dropped: host.stats()?,
            exited: false,
            exit: None,
            metrics: Vec::new(),
            regressed: Vec::new(),
            memory: None,
            cpu_capacity: None,
            target_info: None,
            go: self.go_status(),
            python: self.python_status(profiles),
            jit: self.jit_status(profiles),
            probes: host.report(),
            budget: host.budget.clone(),
            shed_before: None,
        })
    }

    /// Live goroutines now, for a Go program whose runtime can be read.
    pub fn goroutine_count(&self) -> Option<u64> {
        match &self.go {
            GoSupport::Ready(rt) => {
                let started = std::time::Instant::now();
                let count = rt.count().map_err(|e| tracing::debug!("goroutine count: {e}")).ok();
                tracing::debug!(?count, took_us = started.elapsed().as_micros() as u64, "goroutines counted");
                count
            }
            _ => None,
        }
    }

    /// A Go program's goroutine files over [from, to] (Unix seconds), the goroutines read now
    /// when `alive`; the summary's go facts are then about them.
    pub fn go_bundle(&mut self, from: f64, to: f64, alive: bool) -> GoBundle {
        let rt = match &self.go {
            GoSupport::Ready(rt) => rt,
            _ => return GoBundle::default(),
        };
        let now = unix_now(SystemTime::now());
        let (bundle, facts) = go_bundle(&mut self.goroutines, alive.then_some(rt), &mut self.recorder, (from, to), now);
        self.goroutine_facts = facts;
        bundle
    }

    /// A Go program's heap profile now and from before `start` (Unix seconds), when its runtime
    /// records one; the summary says why not otherwise.
    pub fn heap_profiles(&mut self, start: f64) -> Vec<Profile> {
        let GoSupport::Ready(rt) = &self.go else { return Vec::new() };
        self.heap.profiles(rt, &mut self.recorder, start, unix_now(SystemTime::now()))
    }

    /// What summaries say about Go: absent for other programs.
    pub fn go_status(&self) -> Option<GoStatus> {
        match &self.go {
            GoSupport::NotGo => None,
            GoSupport::Ready(_) => Some(GoStatus {
                goroutines_available: true,
                reason: None,
                heap: self.heap.report.clone(),
                goroutine_snapshots: self.goroutine_facts.snapshots.clone(),
                goroutines_grew: self.goroutine_facts.grew.clone(),
                top_waits: self.goroutine_facts.top_waits.clone(),
            }),
            GoSupport::Unavailable(why) => Some(GoStatus {
                goroutines_available: false,
                reason: Some(why.clone()),
                heap: None,
                goroutine_snapshots: None,
                goroutines_grew: Vec::new(),
                top_waits: Vec::new(),
            }),
        }
    }

    fn next_slice(&mut self, profiles: crate::record::Profiles) -> Slice {
        let end = unix_now(SystemTime::now());
        let slice = Slice { start: self.slice_start, end, profiles };
        self.slice_start = end;
        slice
    }
}
