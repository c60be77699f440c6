//! The probes every watched process shares: loaded and attached once, recording the set of
//! processes in the kernel's `TARGETS` map, and drained once per interval into each process's
//! part. Sessions (one per process) come and go; the probes stay.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use crate::{
    cli::Cli,
    collect::{
        drain::{Drained, Drainer, ProbeStats, RawSample},
        maps::MemoryMap,
    },
    error::{internal, AgentError},
    model::reports::{BudgetReport, ProbeReport, UnwindReport},
    probes::{targets::ExitStatus, KernelStacks, ProbeConfig, Probes, UnwindMode},
    runtimes::seam::{Instance, Loader},
    symbolize::files::SymbolFiles,
    unwind::{runtime_tables::RuntimeTables, tables::UnwindTables},
};

pub struct ProbeHost {
    /// Every mapped file's names, shared by every watched process.
    pub files: Rc<RefCell<SymbolFiles>>,
    /// Every language runtime, for the whole agent: each reads a file once for every process
    /// that maps it, and attaches to the processes that run it.
    pub loaders: Vec<Box<dyn Loader>>,
    /// The memory budget and what keeping it took (see `budget`).
    pub budget: BudgetReport,
    probes: Probes,
    drainer: Drainer,
    /// The unwind tables, when user stacks are walked with CFI.
    unwind: Option<UnwindTables>,
    /// Processes that run a language runtime, and their threads, for the CFI walk.
    runtimes: Option<RuntimeTables>,
    pub frequency_hz: u64,
    /// 0: no page-fault probe (turned off, or the kernel would not take it).
    pub fault_period: u64,
    pub offcpu_kernel_stacks: KernelStacks,
    /// `Stat::NewCodeStops` when last checked (see `new_code`).
    new_code_stops: u64,
}

impl ProbeHost {
    /// Loads and attaches the probes, with unwind tables sized for the files `pids` map now
    /// (the first processes to watch; later ones add their files while room remains).
    /// `processes`: how many processes the host may watch at once with CFI unwinding.
    pub fn start(cli: &Cli, pids: &[u32], processes: u32) -> Result<Self, AgentError> {
        let mut config = ProbeConfig {
            frequency_hz: cli.frequency,
            stack_slots: cli.stack_slots,
            count_slots: cli.count_slots,
            thread_slots: cli.thread_slots,
            kernel_stack_every_switch: cli.offcpu_kernel_stacks == KernelStacks::EverySwitch,
            empty_switch_probe: cli.bench_empty_probe,
            btf: cli.btf.clone(),
            skip: cli.skip_probe.clone(),
            unwind_rows: None,
            unwind_processes: processes,
            fault_period: (cli.fault_period > 0).then(|| crate::probes::prime_period(cli.fault_period)),
            wakeups: cli.wakeups,
            walk_memo_slots: cli.walk_memo_slots,
        };
        let mut tables = (cli.unwind == UnwindMode::Cfi).then(|| UnwindTables::new(cli.unwind_table_rows, processes));
        if let Some(tables) = tables.as_mut() {
            config.unwind_rows = Some(tables.prepare(pids));
        }
        let (mut probes, maps) = Probes::load(&config)?;
        spawn_probe_logger(&mut probes);
        let unwind = match (probes.take_unwind_maps(), tables) {
            (Some((rows, mappings)), Some(mut tables)) => {
                tables.attach(rows, mappings).map_err(|e| internal(format!("cannot map the unwind table: {e}")))?;
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
        let runtimes = unwind.as_ref().and_then(|_| RuntimeTables::take(&mut probes));
        probes.attach(cli.frequency)?;
        Ok(Self {
            files: Rc::new(RefCell::new(SymbolFiles::new(cli.debug_dir.clone(), crate::runtimes::file_readers()))),
            budget: BudgetReport { budget_bytes: cli.memory_budget, ..Default::default() },
            frequency_hz: cli.frequency,
            fault_period: if probes.faults_attached() { crate::probes::prime_period(cli.fault_period) } else { 0 },
            offcpu_kernel_stacks: cli.offcpu_kernel_stacks,
            probes,
            drainer: Drainer::new(maps),
            unwind,
            runtimes,
            loaders: crate::runtimes::loaders(&cli.runtimes),
            new_code_stops: 0,
        })
    }

    /// Starts recording process `pid`.
    pub fn watch(&mut self, pid: u32) -> Result<(), AgentError> {
        if let (Some(tables), Ok(map)) = (self.unwind.as_mut(), MemoryMap::read(pid)) {
            tables.refresh(pid, &map);
        }
        self.drainer.targets().add(pid).map_err(|e| internal(format!("cannot watch {pid}: {e}")))
    }

    /// Threads of `pid` blocked since before the probes watched it never switch, so the probes
    /// never take their stacks: they are taken here, from outside (the registers they entered
    /// the kernel with, the CFI walk over their stack memory, their kernel stack), and their
    /// time is counted from now until they run. Call right after `watch`. How many were seeded.
    pub fn seed_blocked(&mut self, pid: u32) -> usize {
        let tasks = match self.probes.task_regs(pid) {
            Some(Ok(tasks)) => tasks,
            Some(Err(e)) => {
                tracing::debug!(pid, "cannot list the threads' registers: {e}");
                return 0;
            }
            None => return 0,
        };
        let memory = crate::collect::remote::ProcessMemory::new(pid);
        let now = crate::collect::monotonic_ns();
        let mut seeded = 0;
        // Sleeping (interruptible or not); a running or runnable thread will switch soon enough.
        for task in tasks.iter().filter(|t| t.state & 3 != 0) {
            let regs = crate::unwind::walk::Regs { pc: task.ip, sp: task.sp, bp: Some(task.bp) };
            let user = match self.unwind.as_ref().and_then(|u| u.walk_view(pid)) {
                Some((mappings, store)) => crate::unwind::walk::walk(mappings, store, regs, &memory),
                None => vec![task.ip],
            };
            let thread = crate::collect::drain::Preblocked {
                tgid: pid,
                tid: task.tid,
                user,
                kernel: task.kernel[..(task.kernel_len as usize).min(task.kernel.len())].to_vec(),
                futex: crate::probes::syscalls::futex_waited(task.syscall, task.arg0, task.arg1),
            };
            match self.drainer.preseed(thread, now) {
                Ok(true) => seeded += 1,
                Ok(false) => {}
                Err(e) => tracing::debug!(pid, "cannot seed a blocked thread: {e}"),
            }
        }
        seeded
    }

    /// Stops recording process `pid` and frees what it held in the kernel.
    pub fn forget(&mut self, pid: u32) {
        if let Some(tables) = self.unwind.as_mut() {
            tables.forget(pid);
        }
        if let Some(runtimes) = self.runtimes.as_mut() {
            runtimes.forget(pid);
        }
        if let Err(e) = self.drainer.forget(pid) {
            tracing::warn!(pid, "cannot forget the process: {e}");
        }
    }

    /// `pid`'s memory map changed: learn its new files.
    pub fn refresh(&mut self, pid: u32, map: &MemoryMap) {
        if let Some(tables) = self.unwind.as_mut() {
            tables.refresh(pid, map);
        }
    }

    /// `pid` runs `runtime`: its walks emit the runtime's frames when its probe module can (the
    /// runtime is told whether they do, or why not).
    pub fn watch_runtime(&mut self, pid: u32, runtime: &mut dyn Instance) {
        let result = match runtime.probe() {
            None => return,
            Some(Err(why)) => Err(why),
            Some(Ok(proc)) => match self.runtimes.as_mut() {
                None => {
                    Err("user stacks are walked by frame pointer (no CFI walk on this kernel, or --unwind fp)".into())
                }
                Some(tables) => tables.watch(pid, proc).map_err(|e| {
                    tracing::warn!(pid, "cannot tell the probes about the process's runtime: {e}");
                    format!("the probes' runtime table is full or unwritable: {e}")
                }),
            },
        };
        let ok = result.is_ok();
        runtime.probed(result);
        if ok {
            self.runtime_threads(pid, runtime);
        }
    }

    /// `pid`'s threads now, as its runtime lists them for its probe step.
    pub fn runtime_threads(&mut self, pid: u32, runtime: &dyn Instance) {
        let (Some(tables), Some(threads)) = (self.runtimes.as_mut(), runtime.threads()) else { return };
        let failed = tables.threads(pid, &threads);
        if failed > 0 {
            tracing::debug!(pid, failed, "threads not listed for the probes: the map is full");
        }
    }

    /// Whether the wake-up probe records (the `lock_wait` metric has a value).
    pub fn wakeups(&self) -> bool {
        self.probes.wakeups_attached()
    }

    /// Whether walks stopped in code a JIT compiled since its code was last read, since the last
    /// check: one counter read (a map lookup), cheap enough to do often.
    pub fn new_code(&mut self) -> bool {
        let Ok(stops) = self.drainer.stat(autodump_common::Stat::NewCodeStops) else { return false };
        let seen = stops > self.new_code_stops;
        self.new_code_stops = stops;
        seen
    }

    /// The rows `pid`'s runtime gives for code it generates, when they changed.
    pub fn runtime_code(&mut self, pid: u32, runtime: &mut dyn Instance) {
        let Some(tables) = self.unwind.as_mut() else { return };
        let Some(rows) = runtime.code_rows() else { return };
        if let Ok(map) = MemoryMap::read(pid) {
            tables.set_code_rows(pid, &rows, &map);
        }
    }

    /// Files the runtimes read so far, by their summary keys (`go_files_read`).
    pub fn files_read(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.loaders.iter().filter_map(|l| l.files_read()).collect()
    }

    /// Everything recorded since the last drain, by process.
    pub fn drain(&mut self) -> Result<HashMap<u32, Drained>, AgentError> {
        Ok(self.drainer.drain().map_err(internal)?.split())
    }

    /// Detaches the probes and returns what they recorded since the last drain, by process.
    pub fn stop(&mut self) -> Result<HashMap<u32, Drained>, AgentError> {
        self.probes.detach();
        // Two drains: the generation in use at detach, then the one the first flip switched to.
        let mut first = self.drainer.drain().map_err(internal)?;
        let second = self.drainer.drain().map_err(internal)?;
        first.cpu.extend(second.cpu);
        first.offcpu.extend(second.offcpu);
        first.faults.extend(second.faults);
        first.wakeups.extend(second.wakeups);
        Ok(first.split())
    }

    /// Threads of `pid` blocked at `now_ns`, counted from `floor_ns` (CLOCK_MONOTONIC) or their block.
    pub fn still_blocked(&self, pid: u32, now_ns: u64, floor_ns: u64) -> Result<Vec<RawSample>, AgentError> {
        self.drainer.still_blocked(pid, now_ns, floor_ns).map_err(internal)
    }

    /// How `pid` ended, once its last thread has exited.
    pub fn exit_status(&mut self, pid: u32) -> Option<ExitStatus> {
        self.drainer.targets().exit_status(pid)
    }

    /// The probes' counters since load, all processes together.
    pub fn stats(&self) -> Result<ProbeStats, AgentError> {
        let runtimes: Vec<(u8, &str)> = crate::runtimes::probed().collect();
        self.drainer.stats(&runtimes).map_err(internal)
    }

    /// Each program's run time (ns) and runs, where `kernel.bpf_stats_enabled` is on.
    pub fn probe_runs(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        self.probes.run_stats()
    }

    /// What summaries say about the probes.
    pub fn report(&self) -> ProbeReport {
        ProbeReport {
            kernel_features: Some(self.probes.features().clone()),
            degraded: self.probes.degradations().to_vec(),
            unwinding: Some(UnwindReport {
                unwinding: self.probes.unwinding().clone(),
                tables: self.unwind.as_ref().map(|t| t.stats().clone()),
            }),
        }
    }
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
