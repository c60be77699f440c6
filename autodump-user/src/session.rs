//! One profiling session of one process, shared by record and watch mode: open the target,
//! have the shared probes record it, and turn its part of each drain into a flight-recorder
//! slice. The language runtimes it runs (see `runtimes`) are asked through their seam.

use std::time::{Duration, Instant, SystemTime};

use crate::{
    cli::Cli,
    collect::{
        drain::{Drained, RawSample},
        maps::MemoryMap,
        memory::MemoryWatch,
        metrics::RuntimeMetric,
        monotonic_ns,
        process::{ProcessError, Stat, Target},
        unix_now, waits,
    },
    error::{internal, AgentError, ExitCode},
    host::ProbeHost,
    model::{
        hangs::{deadlocks, Deadlock, WaitingThread},
        locks::program_function_of,
        reports::{Reason, RuntimeReport},
        summary::Facts,
    },
    record::{
        flight::Slice,
        profile::{Profile, ProfileKind},
        Profiles, Recorder,
    },
    runtimes::seam::{Instance, Process, RuntimeBundle, Window},
    write::bundle,
};

pub struct Session {
    pub target: Target,
    pub recorder: Recorder,
    /// The language runtimes the process runs.
    runtimes: Vec<Box<dyn Instance>>,
    /// Unix seconds when the current slice began.
    slice_start: f64,
    /// Resident memory by kind and by mapping, over the recent past.
    pub memory: MemoryWatch,
    /// The process's /proc stat as read this interval (by the liveness check), and when, for the
    /// metrics and to tell whether its map or threads may have changed.
    pub stat: Option<(Stat, SystemTime)>,
    /// Deadlocks among the threads blocked when a window last closed.
    deadlocks: Vec<Deadlock>,
    /// (vsize, threads) when the map and thread names were last read, and when.
    observed: Option<((u64, u64), Instant)>,
}

/// A process whose size and thread count have not changed has its map and thread names read
/// this often (an address outside the map, or an unknown thread, is read at once). On a host
/// of 500 calm processes, reading them every 10 s was a fifth of the agent's time.
const OBSERVE_EVERY: Duration = Duration::from_secs(30);

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
        let maps = MemoryMap::read(pid).ok();
        // What runtimes keep over time reaches back as far as a bundle does.
        let keep = (cli.duration.unwrap_or_default() + cli.lookback + cli.after + 2 * cli.interval).as_secs_f64();
        let mut process = Process { pid, exe: &target.exe, maps: maps.as_ref(), keep_s: keep, code_named: false };
        let mut runtimes: Vec<Box<dyn Instance>> = Vec::new();
        for loader in &mut host.loaders {
            if let Some(runtime) = loader.attach(&process) {
                process.code_named |= runtime.names_code();
                runtimes.push(runtime);
            }
        }
        // Watch mode forgets threads gone for longer than any bundle reaches back.
        let forget_after = cli.duration.is_none().then(|| cli.lookback + cli.after + 4 * cli.interval);
        let period = crate::probes::prime_period(cli.fault_period);
        let mut recorder = Recorder::shared(target.clone(), host.files.clone(), cli.frequency, period, forget_after);
        recorder.observe_target();
        recorder.warm_up();
        for runtime in &mut runtimes {
            if let Some(names) = runtime.names() {
                recorder.add_runtime(names);
            }
            host.watch_runtime(pid, runtime.as_mut());
        }
        // A JVM is asked for its perf map at once: the map is there by the first drain.
        recorder.poll_runtimes();
        // The rows for a runtime's code are in before the probes record: the first stacks are
        // walked whole.
        for runtime in &mut runtimes {
            host.runtime_code(pid, runtime.as_mut());
        }
        host.watch(pid)?;
        let seeded = host.seed_blocked(pid);
        // The first snapshots once the probes record: growth and faults then cover one span.
        let mut memory = MemoryWatch::new(pid, cli.smaps_every, keep);
        let now = unix_now(SystemTime::now());
        memory.observe(now, None);
        for runtime in &mut runtimes {
            runtime.tick(&mut recorder, now);
        }
        tracing::info!(pid, comm = %target.comm, frequency_hz = cli.frequency, blocked_before = seeded, "recording");
        let slice_start = unix_now(SystemTime::now());
        Ok(Self { target, recorder, runtimes, slice_start, memory, stat: None, observed: None, deadlocks: Vec::new() })
    }

    /// Before a drain: learns new threads and mappings (so that the drained stacks can be named).
    /// Only while the process lives (callers check): a new process may have its pid, and its
    /// threads' names and mappings would be taken for the old one's. With this interval's stat,
    /// they are read only when the process's size or thread count changed, or every
    /// `OBSERVE_EVERY`: a calm process costs a few /proc reads an interval.
    pub fn observe(&mut self, host: &mut ProbeHost) {
        // Code a runtime generates changes without the process's shape changing.
        self.read_code(host);
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
        for runtime in &self.runtimes {
            host.runtime_threads(self.target.pid, runtime.as_ref());
        }
        self.observed = shape.map(|s| (s, Instant::now()));
    }

    /// The rows for the code its runtimes generate, where it changed.
    pub fn read_code(&mut self, host: &mut ProbeHost) {
        for runtime in &mut self.runtimes {
            host.runtime_code(self.target.pid, runtime.as_mut());
        }
    }

    /// Whether the process still runs; keeps its stat for this interval.
    pub fn check_alive(&mut self) -> bool {
        self.stat = self.target.stat_if_alive().map(|s| (s, SystemTime::now()));
        self.stat.is_some()
    }

    /// Ends the current slice with this process's part of a drain.
    pub fn tick(&mut self, drained: &Drained) -> Slice {
        let started = std::time::Instant::now();
        self.recorder.poll_runtimes();
        let profiles = self.recorder.profiles(drained);
        let now = unix_now(SystemTime::now());
        self.memory.observe(now, self.stat.as_ref().map(|(s, _)| (s.vsize, s.rss_pages)));
        for runtime in &mut self.runtimes {
            runtime.tick(&mut self.recorder, now);
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
        profiles.get_mut(ProfileKind::OFF_CPU).merge(&self.blocked(host, now, not_before)?);
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
        let mut profile = Profile::new(ProfileKind::OFF_CPU);
        self.recorder.add_off_cpu(&mut profile, &blocked);
        self.deadlocks = self.deadlocks_among(&blocked);
        Ok(profile)
    }

    /// Deadlocks among `blocked`: threads waiting on glibc mutexes whose holders wait too.
    fn deadlocks_among(&mut self, blocked: &[RawSample]) -> Vec<Deadlock> {
        let pid = self.target.pid;
        let memory = crate::collect::remote::ProcessMemory::new(pid);
        let mut waiting = Vec::new();
        for sample in blocked.iter().filter(|s| s.futex != 0) {
            let Some(user) = self.recorder.user_stack(&sample.user) else { continue };
            if !waits::in_mutex_lock(user.iter().flat_map(|l| l.frames.iter().map(|f| &*f.function))) {
                continue;
            }
            let Some(owner) = waits::mutex_owner(pid, sample.tid, sample.futex, &memory) else { continue };
            let leaf_first: Vec<&crate::symbolize::Location> = user.iter().map(|l| &**l).collect();
            waiting.push(WaitingThread {
                tid: sample.tid,
                thread: self.recorder.thread_name(sample.tid).to_string(),
                lock: format!("{:x}", sample.futex),
                waits_in: program_function_of(&leaf_first).unwrap_or_else(|| "?".into()),
                held_by: owner,
            });
        }
        deadlocks(&waiting)
    }

    /// A summary's facts about the target, the probes and the runtimes over `profiles` (after
    /// `runtime_bundles`); callers add the window and reason.
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
            runtimes: self.runtime_reports(profiles),
            probes: host.report(),
            budget: host.budget.clone(),
            shed_before: None,
            deadlocks: self.deadlocks.clone(),
            named_locks: self.runtimes.iter().flat_map(|r| r.locks()).collect(),
        })
    }

    /// The runtimes' metrics now (goroutines, Python threads).
    pub fn runtime_metrics(&self) -> Vec<(&'static RuntimeMetric, u64)> {
        self.runtimes.iter().filter_map(|r| r.metric()).collect()
    }

    /// Names, as the runtimes name it now, the code they ran outside files that `profiles` left
    /// unnamed when it was recorded (`alive`: the process can still be asked).
    pub fn name_late_frames(&mut self, profiles: &mut Profiles, alive: bool) {
        self.recorder.name_late_frames(profiles, alive);
    }

    /// What the process's runtimes add to a bundle of [from, to] (Unix seconds), read as the
    /// window closes (`alive`: the process can still be read).
    pub fn runtime_bundles(&mut self, (from, to): (f64, f64), alive: bool) -> RuntimeBundle {
        let window = Window { from, to, alive };
        let mut all = RuntimeBundle::default();
        for runtime in &mut self.runtimes {
            let bundle = runtime.bundle(&mut self.recorder, &window);
            all.profiles.extend(bundle.profiles);
            all.diffs.extend(bundle.diffs);
            all.files.extend(bundle.files);
        }
        all
    }

    /// What the runtimes say in a summary over `profiles`.
    fn runtime_reports(&self, profiles: &Profiles) -> Vec<RuntimeReport> {
        self.runtimes.iter().filter_map(|r| r.report(profiles)).collect()
    }

    fn next_slice(&mut self, profiles: crate::record::Profiles) -> Slice {
        let end = unix_now(SystemTime::now());
        let slice = Slice { start: self.slice_start, end, profiles };
        self.slice_start = end;
        slice
    }
}
