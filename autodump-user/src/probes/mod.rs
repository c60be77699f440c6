//! Loads the embedded eBPF object, sets its globals and map sizes, and attaches the probes: a
//! `cpu-clock` perf event and a `page-faults` perf event on every online CPU, a `sched_switch`
//! BTF tracepoint, and a `sched_process_exit` one.

mod attach;
pub mod btf;
mod errors;
pub mod features;
mod helpers;
pub mod privilege;
pub mod syscalls;
pub mod targets;
mod tasks;

use autodump_common::{
    globals, maps,
    unwind::{UnwoundStack, MAX_MAPPINGS},
    Control, FaultKey, OffCpuStart, OffCpuTotal, StackKey, WakeKey, OVERFLOW_SHARE,
};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, StackTraceMap},
    programs::{perf_event::PerfEventLinkId, tp_btf::BtfTracePointLinkId},
    Btf, Ebpf, EbpfLoader,
};

use crate::error::{AgentError, ExitCode};
use features::{GroupEnd, KernelFeatures, SwitchState};
pub use helpers::prime_period;
use helpers::{raise_memlock_limit, take_maps};

const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/autodump"));
const ON_CPU: &str = "on_cpu_sample";
const SCHED_SWITCH: &str = "sched_switch";
/// The same probes, walking user stacks with CFI rows.
const ON_CPU_UNWIND: &str = "on_cpu_unwind";
const SWITCH_UNWIND: &str = "switch_unwind";
const PROCESS_EXIT: &str = "process_exit";
const PAGE_FAULT: &str = "fault_sample";
const PAGE_FAULT_UNWIND: &str = "fault_unwind";
const SCHED_SWITCH_EMPTY: &str = "sched_switch_empty";
const SCHED_WAKING: &str = "sched_waking";
const WAKING_UNWIND: &str = "waking_unwind";

/// How often the off-CPU probe walks the kernel stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelStacks {
    /// Once per (user stack, runnable or blocked) per drain interval; later switches there reuse it.
    PerUserStack,
    /// At every switch-out: exact, at about three times the probe's cost.
    EverySwitch,
}

/// How user stacks are walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnwindMode {
    /// With the files' CFI (`.eh_frame`), by frame pointer where none covers the code; needs
    /// `bpf_loop` (Linux 5.17+), else frame pointers.
    #[default]
    Cfi,
    /// By frame pointer only, walked by the kernel.
    FramePointers,
}

/// Where the probes find each process's mappings.
pub struct MappingMaps {
    pub processes: aya::maps::HashMap<MapData, u32, autodump_common::unwind::ProcMappings>,
    pub entries: aya::maps::Array<MapData, autodump_common::unwind::MappingEntry>,
    /// The last table version written (see `ProcMappings::version`).
    pub version: u32,
}

/// What to load, from the command line.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub frequency_hz: u64,
    pub stack_slots: u32,
    pub count_slots: u32,
    pub thread_slots: u32,
    /// Walk the off-CPU kernel stack at every switch instead of once per user stack.
    pub kernel_stack_every_switch: bool,
    /// Also attach an empty sched_switch program (benchmarks: the accounting floor).
    pub empty_switch_probe: bool,
    /// The kernel's BTF file.
    pub btf: std::path::PathBuf,
    /// Probes not to attach, by program name (tests of the degraded paths).
    pub skip: Vec<String>,
    /// Walk user stacks with CFI rows, in an array of this many rows (if the kernel can).
    pub unwind_rows: Option<u32>,
    /// Processes whose mapping tables the probes hold at once (two slots each).
    pub unwind_processes: u32,
    /// Run the page-fault probe every this many faults on a CPU (a prime, see
    /// [`prime_period`]); None: no page-fault probe.
    pub fault_period: Option<u64>,
    /// Attach the wake-up probe.
    pub wakeups: bool,
    /// Threads whose last switch and wake-up walks are remembered (0: none).
    pub walk_memo_slots: u32,
}

/// How user stacks are walked on this kernel, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Unwinding {
    pub mode: UnwindMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The maps the collector drains, each generation in a pair indexed by `epoch % 2`.
pub struct ProbeMaps {
    pub stacks: [StackTraceMap<MapData>; 2],
    /// Stacks that collided in `stacks` (ids carry `OVERFLOW_STACK_ID`).
    pub overflow_stacks: [StackTraceMap<MapData>; 2],
    pub cpu_counts: [HashMap<MapData, StackKey, u64>; 2],
    pub fault_counts: [HashMap<MapData, FaultKey, u64>; 2],
    pub offcpu_totals: [HashMap<MapData, StackKey, OffCpuTotal>; 2],
    pub wakeup_totals: [HashMap<MapData, WakeKey, OffCpuTotal>; 2],
    pub kernel_stack_cache: [HashMap<MapData, u64, i32>; 2],
    pub offcpu_start: HashMap<MapData, u32, OffCpuStart>,
    pub control: Array<MapData, Control>,
    /// The watched processes.
    pub targets: targets::TargetMaps,
    pub stats: PerCpuArray<MapData, u64>,
    /// User stacks the probes walked with CFI rows (ids carry `UNWOUND_STACK_ID`).
    pub unwound: [HashMap<MapData, u32, UnwoundStack>; 2],
}

/// Loaded and attached probes. Dropping this detaches everything and frees the maps.
pub struct Probes {
    ebpf: Ebpf,
    /// The kernel's types, needed until the tracepoints are loaded (then dropped: it is large).
    /// The kernel's BTF file, and its parse while the tracepoints are attached.
    btf_path: std::path::PathBuf,
    btf: Option<Btf>,
    perf_links: Vec<PerfEventLinkId>,
    fault_links: Vec<PerfEventLinkId>,
    fault_period: Option<u64>,
    switch_link: Option<BtfTracePointLinkId>,
    exit_link: Option<BtfTracePointLinkId>,
    waking_link: Option<BtfTracePointLinkId>,
    wakeups: bool,
    /// The task iterator is loaded (see `tasks`).
    task_iter: bool,
    empty_switch_probe: bool,
    skip: Vec<String>,
    features: KernelFeatures,
    degraded: Vec<Degradation>,
    unwinding: Unwinding,
}

/// A probe the kernel would not take, and what the bundles lack because of it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Degradation {
    pub probe: &'static str,
    pub lost: &'static str,
    pub why: String,
}

impl Probes {
    /// Loads the object and takes its maps; nothing is attached yet.
    pub fn load(config: &ProbeConfig) -> Result<(Self, ProbeMaps), AgentError> {
        privilege::check()?;
        raise_memlock_limit();
        let unsupported = |e: btf::BtfError| AgentError::new(ExitCode::KernelUnsupported, e.to_string());
        // The kernel's BTF is parsed three times, one after the other (each copy is freed before the
        // next): here, for the offsets and features; by aya's loader; and for attaching the
        // tracepoints. Holding two at once put the agent's start-up peak at 44 MiB, against 28.
        let features = {
            let raw = btf::read(&config.btf).map_err(unsupported)?;
            KernelFeatures::decide(&btf::Btf::parse(&raw).map_err(unsupported)?).map_err(unsupported)?
        };
        tracing::info!("kernel: {}", features.describe());
        let offsets = features.offsets;
        let from_task = u32::from(features.switch_state == SwitchState::TaskField);
        let from_signal = u32::from(features.group_end == GroupEnd::SignalLive);
        let every_switch = u32::from(config.kernel_stack_every_switch);
        let unwinding = match (config.unwind_rows, features.bpf_loop) {
            (Some(_), true) => Unwinding { mode: UnwindMode::Cfi, why: None },
            (Some(_), false) => Unwinding {
                mode: UnwindMode::FramePointers,
                why: Some("this kernel has no bpf_loop (Linux 5.17+): user stacks by frame pointer".into()),
            },
            (None, _) => Unwinding { mode: UnwindMode::FramePointers, why: Some("--unwind frame-pointers".into()) },
        };
        let (rows, unwound_slots, processes) = match unwinding.mode {
            UnwindMode::Cfi => (config.unwind_rows.unwrap_or(1), config.stack_slots, config.unwind_processes),
            UnwindMode::FramePointers => (1, 1, 1),
        };
        let memo_slots = if unwinding.mode == UnwindMode::Cfi { config.walk_memo_slots } else { 0 };
        let memo_on = u32::from(memo_slots > 0);
        // The loader reads the running kernel's BTF itself; another file replaces it.
        let custom = match config.btf.as_path() == std::path::Path::new(btf::VMLINUX_BTF) {
            true => None,
            false => Some(parse_btf(&config.btf)?),
        };
        let mut loader = EbpfLoader::new();
        if custom.is_some() {
            loader.btf(custom.as_ref());
        }
        loader
            .override_global(globals::TASK_PID_OFFSET, &offsets.pid, true)
            .override_global(globals::TASK_TGID_OFFSET, &offsets.tgid, true)
            .override_global(globals::TASK_EXIT_CODE_OFFSET, &offsets.exit_code, true)
            .override_global(globals::TASK_STATE_OFFSET, &offsets.state, true)
            .override_global(globals::TASK_SIGNAL_OFFSET, &offsets.signal, true)
            .override_global(globals::SIGNAL_LIVE_OFFSET, &offsets.signal_live, true)
            .override_global(globals::TASK_TLS_BASE_OFFSET, &offsets.tls_base, true)
            .override_global(globals::SWITCH_STATE_FROM_TASK, &from_task, true)
            .override_global(globals::GROUP_END_FROM_SIGNAL, &from_signal, true)
            .override_global(globals::KERNEL_STACK_EVERY_SWITCH, &every_switch, true)
            .override_global(globals::TASK_STACK_OFFSET, &offsets.stack, true)
            .override_global(globals::FUTEX_SYSCALL, &syscalls::FUTEX, true)
            .override_global(globals::PT_REGS_SYSCALL_OFFSET, &syscalls::PT_REGS_NR, true)
            .override_global(globals::PT_REGS_ARG0_OFFSET, &syscalls::PT_REGS_ARG0, true)
            .override_global(globals::PT_REGS_ARG1_OFFSET, &syscalls::PT_REGS_ARG1, true)
            .override_global(globals::WALK_MEMO, &memo_on, true)
            .map_max_entries(maps::WALK_MEMOS, memo_slots.max(1))
            .map_max_entries(maps::OFFCPU_START, config.thread_slots)
            .map_max_entries(maps::UNWIND_ROWS, rows)
            .map_max_entries(maps::PROC_MAPPINGS, processes)
            .map_max_entries(maps::MAPPING_ENTRIES, 2 * processes * MAX_MAPPINGS as u32);
        for gen in 0..2 {
            loader
                .map_max_entries(maps::STACKS[gen], config.stack_slots)
                .map_max_entries(maps::OVERFLOW_STACKS[gen], (config.stack_slots / OVERFLOW_SHARE).max(1))
                .map_max_entries(maps::CPU_COUNTS[gen], config.count_slots)
                .map_max_entries(
                    maps::FAULT_COUNTS[gen],
                    if config.fault_period.is_some() { config.count_slots } else { 1 },
                )
                .map_max_entries(maps::OFFCPU_TOTALS[gen], config.count_slots)
                .map_max_entries(maps::WAKEUP_TOTALS[gen], if config.wakeups { config.count_slots } else { 1 })
                .map_max_entries(maps::KERNEL_STACK_CACHE[gen], config.stack_slots)
                .map_max_entries(maps::UNWOUND_STACKS[gen], unwound_slots);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| errors::classify("load the eBPF object", &e))?;
        drop(loader);
        drop(custom);
        let maps = take_maps(&mut ebpf).map_err(|e| AgentError::new(ExitCode::Internal, e))?;
        let probes = Self {
            ebpf,
            btf_path: config.btf.clone(),
            btf: None,
            perf_links: Vec::new(),
            fault_links: Vec::new(),
            fault_period: config.fault_period,
            switch_link: None,
            exit_link: None,
            waking_link: None,
            wakeups: config.wakeups,
            task_iter: false,
            empty_switch_probe: config.empty_switch_probe,
            skip: config.skip.clone(),
            features,
            degraded: Vec::new(),
            unwinding,
        };
        Ok((probes, maps))
    }

    /// Routes the probes' aya-log messages into the agent's log.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                tracing::debug!("probe logging unavailable: {e}");
                None
            }
        }
    }

    /// Attaches the on-CPU sampler to every online CPU, the sched_switch probe and the exit
    /// probe. A probe the kernel rejects is left out and recorded in `degradations`; the
    /// agent fails (exit 5) only when neither profile can be recorded.
    pub fn attach(&mut self, frequency_hz: u64) -> Result<(), AgentError> {
        self.btf = Some(parse_btf(&self.btf_path)?);
        let results = [
            (ON_CPU, "the on-CPU profile (cpu.*)", self.attach_sampler(frequency_hz)),
            (PAGE_FAULT, "the page-fault profile (faults.*)", self.attach_faults()),
            (SCHED_SWITCH, "the off-CPU profile (offcpu.*)", self.attach_switch()),
            (SCHED_WAKING, "who woke blocked threads (wakeups.*, locks.txt)", self.attach_waking()),
            (
                PROCESS_EXIT,
                "the target's exit code and signal, and the guard against a pid reused before the next tick",
                self.attach_exit(),
            ),
        ];
        let mut first_error = None;
        for (probe, lost, result) in results {
            if let Err(e) = result {
                tracing::warn!("{probe} not attached, so bundles lack {lost}: {}", e.message);
                self.degraded.push(Degradation { probe, lost, why: e.message.clone() });
                first_error.get_or_insert(e);
            }
        }
        if self.perf_links.is_empty() && self.switch_link.is_none() {
            return Err(first_error.unwrap_or_else(|| AgentError::new(ExitCode::Internal, "no probe attached")));
        }
        if let Err(e) = self.load_task_iter() {
            // Threads blocked before attach are then seen only once they run.
            tracing::warn!("task iterator not loaded, so threads blocked before attach have no stacks: {}", e.message);
        }
        if self.empty_switch_probe {
            // Detached when the object is dropped, with the agent.
            self.attach_tracepoint(SCHED_SWITCH_EMPTY, "sched_switch")?;
        }
        self.btf = None;
        Ok(())
    }

    /// Each loaded program's run time (ns) and runs, as the kernel accounts them while
    /// `kernel.bpf_stats_enabled` is on (zero otherwise).
    pub fn run_stats(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some((name.to_string(), (info.run_time().as_nanos() as u64, info.run_count())))
            })
            .filter(|(_, (_, runs))| *runs > 0)
            .collect()
    }

    /// What was decided from the kernel's BTF.
    pub fn features(&self) -> &KernelFeatures {
        &self.features
    }

    /// Whether the wake-up probe is recording.
    pub fn wakeups_attached(&self) -> bool {
        self.waking_link.is_some()
    }

    /// Whether the page-fault sampler is recording.
    pub fn faults_attached(&self) -> bool {
        !self.fault_links.is_empty()
    }

    /// How user stacks are walked.
    pub fn unwinding(&self) -> &Unwinding {
        &self.unwinding
    }

    /// The unwind table's maps, for the agent to fill; None when stacks are walked by frame
    /// pointer.
    pub fn take_unwind_maps(&mut self) -> Option<(MapData, MappingMaps)> {
        if self.unwinding.mode != UnwindMode::Cfi {
            return None;
        }
        let rows = match self.ebpf.take_map(maps::UNWIND_ROWS)? {
            aya::maps::Map::Array(data) => data,
            _ => return None,
        };
        let processes = HashMap::try_from(self.ebpf.take_map(maps::PROC_MAPPINGS)?).ok()?;
        let entries = Array::try_from(self.ebpf.take_map(maps::MAPPING_ENTRIES)?).ok()?;
        Some((rows, MappingMaps { processes, entries, version: 0 }))
    }

    /// A map the CFI walk reads, for the module that fills it; None without CFI unwinding.
    pub fn take_cfi_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        if self.cfi() {
            self.ebpf.take_map(name)
        } else {
            None
        }
    }

    fn cfi(&self) -> bool {
        self.unwinding.mode == UnwindMode::Cfi
    }

    /// Probes the kernel did not take.
    pub fn degradations(&self) -> &[Degradation] {
        &self.degraded
    }

    fn skipped(&self, probe: &str) -> Result<(), AgentError> {
        match self.skip.iter().any(|s| s == probe) {
            true => Err(AgentError::new(ExitCode::KernelUnsupported, format!("{probe} skipped (--skip-probe)"))),
            false => Ok(()),
        }
    }
}

/// The kernel's BTF in aya's form (for the loader and for attaching BTF tracepoints).
fn parse_btf(path: &std::path::Path) -> Result<Btf, AgentError> {
    Btf::parse_file(path, aya::Endianness::default())
        .map_err(|e| AgentError::new(ExitCode::KernelUnsupported, format!("cannot parse BTF {}: {e}", path.display())))
}
