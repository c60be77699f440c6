//! One profiling session of one process, shared by record and watch mode: open the target,
//! have the shared probes record it, and turn its part of each drain into a flight-recorder
//! slice.

use std::time::SystemTime;

use crate::{
    cli::Cli,
    collect::{
        drain::Drained,
        goruntime::GoSupport,
        memory::MemoryWatch,
        monotonic_ns,
        process::{ProcessError, Target},
        unix_now,
    },
    error::{AgentError, ExitCode},
    heap_watch::HeapWatch,
    host::ProbeHost,
    record::{
        flight::Slice,
        profile::{Profile, ProfileKind},
        Profiles, Recorder,
    },
    write::{
        bundle,
        summary::{Facts, Reason},
    },
};

pub struct Session {
    pub target: Target,
    pub recorder: Recorder,
    /// Whether this is a Go program whose goroutines can be read.
    pub go: GoSupport,
    /// Unix seconds when the current slice began.
    slice_start: f64,
    /// Resident memory by kind and by mapping, over the recent past.
    pub memory: MemoryWatch,
    /// Go programs: heap profiles over the recent past.
    heap: HeapWatch,
}

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
        let go = GoSupport::detect(pid);
        match &go {
            GoSupport::Ready(_) => tracing::info!(pid, "Go program: goroutines are counted and dumped"),
            GoSupport::Unavailable(why) => tracing::warn!(pid, "Go program, but goroutines cannot be read: {why}"),
            GoSupport::NotGo => {}
        }
        // Watch mode forgets threads gone for longer than any bundle reaches back.
        let forget_after = cli.duration.is_none().then(|| cli.lookback + cli.after + 4 * cli.interval);
        let mut recorder =
            Recorder::new(target.clone(), cli.frequency, crate::probes::prime_period(cli.fault_period), forget_after);
        recorder.set_debug_dirs(cli.debug_dir.clone());
        recorder.observe_target();
        recorder.warm_up();
        host.watch(pid)?;
        // The first snapshots once the probes record: growth and faults then cover one span.
        let keep = (cli.duration.unwrap_or_default() + cli.lookback + cli.after + 2 * cli.interval).as_secs_f64();
        let mut memory = MemoryWatch::new(pid, cli.smaps_every, keep);
        memory.observe(unix_now(SystemTime::now()));
        let mut heap = HeapWatch::new(cli.heap_every, keep);
        if let GoSupport::Ready(rt) = &go {
            heap.observe(rt, unix_now(SystemTime::now()));
        }
        tracing::info!(pid, comm = %target.comm, frequency_hz = cli.frequency, "recording");
        Ok(Self { target, recorder, go, slice_start: unix_now(SystemTime::now()), memory, heap })
    }

    /// Before a drain: learns new threads and mappings (so that the drained stacks can be named).
    /// Only while the process lives (callers check): a new process may have its pid, and its
    /// threads' names and mappings would be taken for the old one's.
    pub fn observe(&mut self, host: &mut ProbeHost) {
        if let Some(map) = self.recorder.observe_target() {
            host.refresh(self.target.pid, &map);
        }
    }

    /// Ends the current slice with this process's part of a drain.
    pub fn tick(&mut self, drained: &Drained) -> Slice {
        let started = std::time::Instant::now();
        let profiles = self.recorder.profiles(drained);
        let now = unix_now(SystemTime::now());
        self.memory.observe(now);
        if let GoSupport::Ready(rt) = &self.go {
            self.heap.observe(rt, now);
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
        if self.target.is_alive() {
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
            probes: host.report(),
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

    /// A snapshot of every goroutine's stack, for a Go program whose runtime can be read.
    pub fn goroutine_profile(&mut self) -> Option<Profile> {
        let GoSupport::Ready(rt) = &self.go else { return None };
        let started = std::time::Instant::now();
        match rt.goroutines() {
            Ok(goroutines) => {
                let read = started.elapsed();
                let profile = self.recorder.goroutine_profile(&goroutines);
                tracing::debug!(
                    goroutines = goroutines.len(),
                    read_ms = read.as_secs_f64() * 1e3,
                    total_ms = started.elapsed().as_secs_f64() * 1e3,
                    "goroutines dumped"
                );
                Some(profile)
            }
            Err(e) => {
                tracing::warn!("cannot dump goroutines: {e}");
                None
            }
        }
    }

    /// A Go program's heap profile now and from before `start` (Unix seconds), when its runtime
    /// records one; the summary says why not otherwise.
    pub fn heap_profiles(&mut self, start: f64) -> Vec<Profile> {
        let GoSupport::Ready(rt) = &self.go else { return Vec::new() };
        self.heap.profiles(rt, &mut self.recorder, start, unix_now(SystemTime::now()))
    }

    /// What summaries say about Go: absent for other programs.
    pub fn go_status(&self) -> Option<crate::write::summary::GoStatus> {
        match &self.go {
            GoSupport::NotGo => None,
            GoSupport::Ready(_) => Some(crate::write::summary::GoStatus {
                goroutines_available: true,
                reason: None,
                heap: self.heap.report.clone(),
            }),
            GoSupport::Unavailable(why) => Some(crate::write::summary::GoStatus {
                goroutines_available: false,
                reason: Some(why.clone()),
                heap: None,
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

pub fn internal(e: impl std::fmt::Display) -> AgentError {
    AgentError::new(ExitCode::Internal, e.to_string())
}
