//! One profiling session of one process, shared by record and watch mode: open the target,
//! load and attach the probes, turn each drain into a flight-recorder slice, and stop cleanly.

use std::time::SystemTime;

use crate::{
    cli::Cli,
    collect::{
        drain::{Drainer, ExitStatus, ProbeStats},
        goruntime::GoSupport,
        memory::MemoryWatch,
        monotonic_ns,
        process::{ProcessError, Target},
        unix_now,
    },
    error::{AgentError, ExitCode},
    heap_watch::HeapWatch,
    probes::{ProbeConfig, Probes},
    record::{
        flight::Slice,
        profile::{Profile, ProfileKind},
        Profiles, Recorder,
    },
    unwind::{tables::UnwindTables, UnwindMode},
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
    frequency_hz: u64,
    /// 0: no page-fault probe (turned off, or the kernel would not take it).
    fault_period: u64,
    offcpu_kernel_stacks: crate::cli::KernelStacks,
    probes: Probes,
    /// The unwind tables, when user stacks are walked with CFI.
    unwind: Option<UnwindTables>,
    drainer: Drainer,
    /// Unix seconds when the current slice began.
    slice_start: f64,
    /// Resident memory by kind and by mapping, over the recent past.
    pub memory: MemoryWatch,
    /// Go programs: heap profiles over the recent past.
    heap: HeapWatch,
}

impl Session {
    /// Checks the target and the output directory, then loads and attaches the probes.
    pub fn start(cli: &Cli) -> Result<Self, AgentError> {
        let target = Target::open(cli.pid).map_err(|e| match e {
            ProcessError::NotFound(_) => AgentError::new(ExitCode::NoSuchProcess, e.to_string()),
            _ => internal(e),
        })?;
        bundle::prepare_out_dir(&cli.out).map_err(|e| AgentError::new(ExitCode::Output, e.to_string()))?;
        let mut config = ProbeConfig {
            pid: cli.pid,
            frequency_hz: cli.frequency,
            stack_slots: cli.stack_slots,
            count_slots: cli.count_slots,
            thread_slots: cli.thread_slots,
            kernel_stack_every_switch: cli.offcpu_kernel_stacks == crate::cli::KernelStacks::EverySwitch,
            empty_switch_probe: cli.bench_empty_probe,
            btf: cli.btf.clone(),
            skip: cli.skip_probe.clone(),
            unwind_rows: None,
            fault_period: (cli.fault_period > 0).then(|| crate::probes::prime_period(cli.fault_period)),
        };
        let mut tables = (cli.unwind == UnwindMode::Cfi).then(|| UnwindTables::new(cli.unwind_table_rows));
        if let Some(tables) = tables.as_mut() {
            config.unwind_rows = Some(tables.prepare(cli.pid));
        }
        let go = GoSupport::detect(cli.pid);
        match &go {
            GoSupport::Ready(_) => tracing::info!("Go program: goroutines are counted and dumped"),
            GoSupport::Unavailable(why) => tracing::warn!("Go program, but goroutines cannot be read: {why}"),
            GoSupport::NotGo => {}
        }
        let (mut probes, maps) = Probes::load(&config)?;
        spawn_probe_logger(&mut probes);
        let unwind = match (probes.take_unwind_maps(), tables) {
            (Some((rows, mappings)), Some(mut tables)) => {
                tables
                    .attach(rows, mappings, cli.pid)
                    .map_err(|e| internal(format!("cannot map the unwind table: {e}")))?;
                let s = tables.stats();
                tracing::info!(
                    files = s.files,
                    rows = s.rows,
                    kernel_kib = s.kernel_bytes / 1024,
                    build_ms = s.build_ms as u64,
                    "unwind tables loaded"
                );
                Some(tables)
            }
            _ => {
                let why = probes.unwinding().why.clone().unwrap_or_default();
                tracing::info!("user stacks by frame pointer: {why}");
                None
            }
        };
        // Watch mode forgets threads gone for longer than any bundle reaches back.
        let forget_after = cli.duration.is_none().then(|| cli.lookback + cli.after + 4 * cli.interval);
        let mut recorder =
            Recorder::new(target.clone(), cli.frequency, crate::probes::prime_period(cli.fault_period), forget_after);
        recorder.set_debug_dirs(cli.debug_dir.clone());
        recorder.observe_target();
        recorder.warm_up();
        probes.attach(cli.frequency)?;
        // The first snapshots once the probes record: growth and faults then cover one span.
        let keep = (cli.duration.unwrap_or_default() + cli.lookback + cli.after + 2 * cli.interval).as_secs_f64();
        let mut memory = MemoryWatch::new(cli.pid, cli.smaps_every, keep);
        memory.observe(unix_now(SystemTime::now()));
        let mut heap = HeapWatch::new(cli.heap_every, keep);
        if let GoSupport::Ready(rt) = &go {
            heap.observe(rt, unix_now(SystemTime::now()));
        }
        tracing::info!(pid = cli.pid, comm = %target.comm, frequency_hz = cli.frequency, "recording");
        Ok(Self {
            target,
            recorder,
            go,
            frequency_hz: cli.frequency,
            fault_period: if probes.faults_attached() { crate::probes::prime_period(cli.fault_period) } else { 0 },
            offcpu_kernel_stacks: cli.offcpu_kernel_stacks,
            probes,
            unwind,
            drainer: Drainer::new(maps),
            slice_start: unix_now(SystemTime::now()),
            memory,
            heap,
        })
    }

    /// Ends the current slice: learns new threads and mappings, drains, symbolizes.
    pub fn tick(&mut self) -> Result<Slice, AgentError> {
        let started = std::time::Instant::now();
        let map = self.recorder.observe_target();
        if let (Some(tables), Some(map)) = (self.unwind.as_mut(), map) {
            tables.refresh(self.target.pid, &map);
        }
        let observed = started.elapsed();
        let drained = self.drainer.drain().map_err(internal)?;
        let drained_at = started.elapsed();
        let profiles = self.recorder.profiles(&drained);
        let now = unix_now(SystemTime::now());
        self.memory.observe(now);
        if let GoSupport::Ready(rt) = &self.go {
            self.heap.observe(rt, now);
        }
        tracing::debug!(
            stacks = drained.cpu.len() + drained.offcpu.len() + drained.faults.len(),
            observe_us = observed.as_micros() as u64,
            drain_us = (drained_at - observed).as_micros() as u64,
            symbolize_us = (started.elapsed() - drained_at).as_micros() as u64,
            "tick"
        );
        Ok(self.next_slice(profiles))
    }

    /// Detaches the probes and returns the last slice, with every thread still blocked counted
    /// up to now (but not before `not_before`, Unix seconds).
    pub fn stop(&mut self, not_before: f64) -> Result<Slice, AgentError> {
        let (now_unix, now_ns) = (unix_now(SystemTime::now()), monotonic_ns());
        self.probes.detach();
        if self.target.is_alive() {
            self.recorder.observe_target();
        }
        // Two drains: the generation in use at detach, then the one the first flip switched to.
        let mut profiles = self.recorder.profiles(&self.drainer.drain().map_err(internal)?);
        profiles.merge(&self.recorder.profiles(&self.drainer.drain().map_err(internal)?));
        profiles.get_mut(ProfileKind::OffCpu).merge(&self.blocked((now_unix, now_ns), not_before)?);
        Ok(self.next_slice(profiles))
    }

    /// Threads blocked right now, counted from `not_before` (Unix seconds) or their block.
    pub fn blocked_now(&mut self, not_before: f64) -> Result<Profile, AgentError> {
        self.blocked((unix_now(SystemTime::now()), monotonic_ns()), not_before)
    }

    /// Threads blocked at `now` (Unix seconds, CLOCK_MONOTONIC ns), counted from `not_before`.
    fn blocked(&mut self, (now_unix, now_ns): (f64, u64), not_before: f64) -> Result<Profile, AgentError> {
        let floor_ns = now_ns.saturating_sub(((now_unix - not_before).max(0.0) * 1e9) as u64);
        let blocked = self.drainer.still_blocked(now_ns, floor_ns).map_err(internal)?;
        let mut profile = Profile::new(ProfileKind::OffCpu);
        self.recorder.add_off_cpu(&mut profile, &blocked);
        Ok(profile)
    }

    /// A summary's facts about the target and the probes; callers add the window and reason.
    pub fn facts<'a>(&'a self, reason: Reason, profiles: &'a Profiles) -> Result<Facts<'a>, AgentError> {
        Ok(Facts {
            reason,
            pid: self.target.pid,
            comm: &self.target.comm,
            exe: self.target.exe.display().to_string(),
            frequency_hz: self.frequency_hz,
            fault_period: self.fault_period,
            offcpu_kernel_stacks: self.offcpu_kernel_stacks,
            start: 0.0,
            trigger: None,
            end: 0.0,
            profiles,
            threads: &self.recorder.threads,
            dropped: self.stats()?,
            exited: false,
            exit: None,
            metrics: Vec::new(),
            regressed: Vec::new(),
            memory: None,
            go: self.go_status(),
            probes: crate::write::summary::ProbeReport {
                kernel_features: Some(self.probes.features().clone()),
                degraded: self.probes.degradations().to_vec(),
                unwinding: Some(crate::write::summary::UnwindReport {
                    unwinding: self.probes.unwinding().clone(),
                    tables: self.unwind.as_ref().map(|t| t.stats().clone()),
                }),
            },
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

    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.drainer.exit_status()
    }

    pub fn stats(&self) -> Result<ProbeStats, AgentError> {
        self.drainer.stats().map_err(internal)
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

/// Forwards the probes' aya-log messages into the agent's log while the runtime lives.
fn spawn_probe_logger(probes: &mut Probes) {
    let Some(logger) = probes.take_logger() else { return };
    // SAFETY: the logger owns its ring-buffer fd and keeps it open for as long as it lives,
    // and the AsyncFd owns the logger.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let Ok(mut fd) = registered else { return };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
