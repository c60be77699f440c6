//! Loads the embedded eBPF object, sets its globals and map sizes, and attaches the probes: a
//! `cpu-clock` perf event and a `page-faults` perf event on every online CPU, a `sched_switch`
//! BTF tracepoint, and a `sched_process_exit` one.

pub mod btf;
mod errors;
pub mod features;
mod helpers;
pub mod privilege;
pub mod targets;

use autodump_common::{
    globals, maps, unwind::UnwoundStack, Control, FaultKey, OffCpuStart, OffCpuTotal, StackKey, OVERFLOW_SHARE,
};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, StackTraceMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent},
        tp_btf::BtfTracePointLinkId,
        BtfTracePoint, PerfEvent,
    },
    Btf, Ebpf, EbpfLoader,
};

use crate::error::{AgentError, ExitCode};
use features::{GroupEnd, KernelFeatures, SwitchState};
pub use helpers::prime_period;
use helpers::{log_verified, program_mut, raise_memlock_limit, take_maps};

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
    /// Run the page-fault probe every this many faults on a CPU (a prime, see
    /// [`prime_period`]); None: no page-fault probe.
    pub fault_period: Option<u64>,
}

/// How user stacks are walked on this kernel, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Unwinding {
    pub mode: crate::unwind::UnwindMode,
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
    btf: Option<Btf>,
    perf_links: Vec<PerfEventLinkId>,
    fault_links: Vec<PerfEventLinkId>,
    fault_period: Option<u64>,
    switch_link: Option<BtfTracePointLinkId>,
    exit_link: Option<BtfTracePointLinkId>,
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
        let raw = btf::read(&config.btf).map_err(unsupported)?;
        let features = KernelFeatures::decide(&btf::Btf::parse(&raw).map_err(unsupported)?).map_err(unsupported)?;
        tracing::info!("kernel: {}", features.describe());
        let offsets = features.offsets;
        let from_task = u32::from(features.switch_state == SwitchState::TaskField);
        let from_signal = u32::from(features.group_end == GroupEnd::SignalLive);
        let btf = Btf::parse(&raw, aya::Endianness::default()).map_err(|e| {
            AgentError::new(ExitCode::KernelUnsupported, format!("cannot parse BTF {}: {e}", config.btf.display()))
        })?;
        let every_switch = u32::from(config.kernel_stack_every_switch);
        let unwinding = match (config.unwind_rows, features.bpf_loop) {
            (Some(_), true) => Unwinding { mode: crate::unwind::UnwindMode::Cfi, why: None },
            (Some(_), false) => Unwinding {
                mode: crate::unwind::UnwindMode::FramePointers,
                why: Some("this kernel has no bpf_loop (Linux 5.17+): user stacks by frame pointer".into()),
            },
            (None, _) => Unwinding {
                mode: crate::unwind::UnwindMode::FramePointers,
                why: Some("--unwind frame-pointers".into()),
            },
        };
        let (rows, unwound_slots) = match unwinding.mode {
            crate::unwind::UnwindMode::Cfi => (config.unwind_rows.unwrap_or(1), config.stack_slots),
            crate::unwind::UnwindMode::FramePointers => (1, 1),
        };
        let mut loader = EbpfLoader::new();
        loader
            .override_global(globals::TASK_PID_OFFSET, &offsets.pid, true)
            .override_global(globals::TASK_TGID_OFFSET, &offsets.tgid, true)
            .override_global(globals::TASK_EXIT_CODE_OFFSET, &offsets.exit_code, true)
            .override_global(globals::TASK_STATE_OFFSET, &offsets.state, true)
            .override_global(globals::TASK_SIGNAL_OFFSET, &offsets.signal, true)
            .override_global(globals::SIGNAL_LIVE_OFFSET, &offsets.signal_live, true)
            .override_global(globals::SWITCH_STATE_FROM_TASK, &from_task, true)
            .override_global(globals::GROUP_END_FROM_SIGNAL, &from_signal, true)
            .override_global(globals::KERNEL_STACK_EVERY_SWITCH, &every_switch, true)
            .map_max_entries(maps::OFFCPU_START, config.thread_slots)
            .map_max_entries(maps::UNWIND_ROWS, rows);
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
                .map_max_entries(maps::KERNEL_STACK_CACHE[gen], config.stack_slots)
                .map_max_entries(maps::UNWOUND_STACKS[gen], unwound_slots);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| errors::classify("load the eBPF object", &e))?;
        let maps = take_maps(&mut ebpf).map_err(|e| AgentError::new(ExitCode::Internal, e))?;
        let probes = Self {
            ebpf,
            btf: Some(btf),
            perf_links: Vec::new(),
            fault_links: Vec::new(),
            fault_period: config.fault_period,
            switch_link: None,
            exit_link: None,
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
        let results = [
            (ON_CPU, "the on-CPU profile (cpu.*)", self.attach_sampler(frequency_hz)),
            (PAGE_FAULT, "the page-fault profile (faults.*)", self.attach_faults()),
            (SCHED_SWITCH, "the off-CPU profile (offcpu.*)", self.attach_switch()),
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
        if self.empty_switch_probe {
            // Detached when the object is dropped, with the agent.
            self.attach_tracepoint(SCHED_SWITCH_EMPTY, "sched_switch")?;
        }
        self.btf = None;
        Ok(())
    }

    /// What was decided from the kernel's BTF.
    pub fn features(&self) -> &KernelFeatures {
        &self.features
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
    pub fn take_unwind_maps(&mut self) -> Option<(MapData, crate::unwind::tables::MappingMaps)> {
        if self.unwinding.mode != crate::unwind::UnwindMode::Cfi {
            return None;
        }
        let rows = match self.ebpf.take_map(maps::UNWIND_ROWS)? {
            aya::maps::Map::Array(data) => data,
            _ => return None,
        };
        let processes = HashMap::try_from(self.ebpf.take_map(maps::PROC_MAPPINGS)?).ok()?;
        let entries = Array::try_from(self.ebpf.take_map(maps::MAPPING_ENTRIES)?).ok()?;
        Some((rows, crate::unwind::tables::MappingMaps { processes, entries }))
    }

    fn cfi(&self) -> bool {
        self.unwinding.mode == crate::unwind::UnwindMode::Cfi
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

    fn attach_sampler(&mut self, frequency_hz: u64) -> Result<(), AgentError> {
        self.skipped(ON_CPU)?;
        let name = if self.cfi() { ON_CPU_UNWIND } else { ON_CPU };
        self.perf_links = self.attach_per_cpu(
            name,
            SoftwareEvent::CpuClock,
            SamplePolicy::Frequency(frequency_hz),
            "the cpu-clock sampler",
        )?;
        Ok(())
    }

    /// The page-fault sampler: one software perf event per CPU, every `fault_period` faults.
    fn attach_faults(&mut self) -> Result<(), AgentError> {
        let Some(period) = self.fault_period else { return Ok(()) };
        self.skipped(PAGE_FAULT)?;
        let name = self.fault_program();
        self.fault_links = self.attach_per_cpu(
            name,
            SoftwareEvent::PageFaults,
            SamplePolicy::Period(period),
            "the page-fault sampler",
        )?;
        Ok(())
    }

    /// The page-fault program this kernel and these flags call for.
    fn fault_program(&self) -> &'static str {
        if self.cfi() {
            PAGE_FAULT_UNWIND
        } else {
            PAGE_FAULT
        }
    }

    /// Loads a perf event program and attaches it to `event` on every online CPU.
    fn attach_per_cpu(
        &mut self,
        name: &str,
        event: SoftwareEvent,
        policy: SamplePolicy,
        what: &str,
    ) -> Result<Vec<PerfEventLinkId>, AgentError> {
        let cpus = aya::util::online_cpus().map_err(|(what, e)| {
            AgentError::new(ExitCode::KernelUnsupported, format!("cannot list CPUs ({what}): {e}"))
        })?;
        let program: &mut PerfEvent = program_mut(&mut self.ebpf, name)?;
        program.load().map_err(|e| errors::classify(&format!("load {what}"), &e))?;
        log_verified(name, program.info());
        let mut links = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let link = program
                .attach(PerfEventConfig::Software(event), PerfEventScope::AllProcessesOneCpu { cpu }, policy, false)
                .map_err(|e| errors::classify(&format!("attach {what} to CPU {cpu}"), &e))?;
            links.push(link);
        }
        Ok(links)
    }

    fn attach_switch(&mut self) -> Result<(), AgentError> {
        self.skipped(SCHED_SWITCH)?;
        let name = if self.cfi() { SWITCH_UNWIND } else { SCHED_SWITCH };
        self.switch_link = Some(self.attach_tracepoint(name, "sched_switch")?);
        Ok(())
    }

    fn attach_exit(&mut self) -> Result<(), AgentError> {
        self.skipped(PROCESS_EXIT)?;
        self.exit_link = Some(self.attach_tracepoint(PROCESS_EXIT, "sched_process_exit")?);
        Ok(())
    }

    fn attach_tracepoint(&mut self, name: &str, tracepoint: &str) -> Result<BtfTracePointLinkId, AgentError> {
        let btf = self.btf.as_ref().ok_or_else(|| AgentError::new(ExitCode::Internal, "probes attached twice"))?;
        let program: &mut BtfTracePoint = program_mut(&mut self.ebpf, name)?;
        program.load(tracepoint, btf).map_err(|e| errors::classify(&format!("load the {tracepoint} probe"), &e))?;
        log_verified(name, program.info());
        program.attach().map_err(|e| errors::classify(&format!("attach the {tracepoint} probe"), &e))
    }

    /// Detaches every probe; the maps stay readable.
    pub fn detach(&mut self) {
        let (on_cpu, switch) = if self.cfi() { (ON_CPU_UNWIND, SWITCH_UNWIND) } else { (ON_CPU, SCHED_SWITCH) };
        let fault = self.fault_program();
        for (name, links) in
            [(on_cpu, std::mem::take(&mut self.perf_links)), (fault, std::mem::take(&mut self.fault_links))]
        {
            if let Ok(program) = program_mut::<PerfEvent>(&mut self.ebpf, name) {
                for link in links {
                    let _ = program.detach(link);
                }
            }
        }
        for (name, link) in [(switch, self.switch_link.take()), (PROCESS_EXIT, self.exit_link.take())] {
            if let (Some(link), Ok(program)) = (link, program_mut::<BtfTracePoint>(&mut self.ebpf, name)) {
                let _ = program.detach(link);
            }
        }
    }
}
