//! Loads the embedded eBPF object, sets its globals and map sizes, and attaches the two probes:
//! a `cpu-clock` perf event on every online CPU and a `sched_switch` BTF tracepoint.

pub mod btf;
pub mod privilege;

use autodump_common::{globals, maps, Control, ExitInfo, OffCpuStart, OffCpuTotal, StackKey, OVERFLOW_SHARE};
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

const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/autodump"));
const ON_CPU: &str = "on_cpu_sample";
const SCHED_SWITCH: &str = "sched_switch";
const PROCESS_EXIT: &str = "process_exit";
const SCHED_SWITCH_EMPTY: &str = "sched_switch_empty";

/// What to load, from the command line.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub pid: u32,
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
}

/// The maps the collector drains, each generation in a pair indexed by `epoch % 2`.
pub struct ProbeMaps {
    pub stacks: [StackTraceMap<MapData>; 2],
    /// Stacks that collided in `stacks` (ids carry `OVERFLOW_STACK_ID`).
    pub overflow_stacks: [StackTraceMap<MapData>; 2],
    pub cpu_counts: [HashMap<MapData, StackKey, u64>; 2],
    pub offcpu_totals: [HashMap<MapData, StackKey, OffCpuTotal>; 2],
    pub kernel_stack_cache: [HashMap<MapData, u64, i32>; 2],
    pub offcpu_start: HashMap<MapData, u32, OffCpuStart>,
    pub control: Array<MapData, Control>,
    pub exit: Array<MapData, ExitInfo>,
    pub stats: PerCpuArray<MapData, u64>,
}

/// Loaded and attached probes. Dropping this detaches everything and frees the maps.
pub struct Probes {
    ebpf: Ebpf,
    /// The kernel's types, needed until the tracepoints are loaded (then dropped: it is large).
    btf: Option<Btf>,
    perf_links: Vec<PerfEventLinkId>,
    switch_link: Option<BtfTracePointLinkId>,
    exit_link: Option<BtfTracePointLinkId>,
    empty_switch_probe: bool,
}

impl Probes {
    /// Loads the object and takes its maps; nothing is attached yet.
    pub fn load(config: &ProbeConfig) -> Result<(Self, ProbeMaps), AgentError> {
        privilege::check()?;
        raise_memlock_limit();
        let unsupported = |e: btf::BtfError| AgentError::new(ExitCode::KernelUnsupported, e.to_string());
        let raw = btf::read(&config.btf).map_err(unsupported)?;
        let pid_offset = btf::field_offset(&raw, "task_struct", "pid").map_err(unsupported)?;
        let tgid_offset = btf::field_offset(&raw, "task_struct", "tgid").map_err(unsupported)?;
        let exit_code_offset = btf::field_offset(&raw, "task_struct", "exit_code").map_err(unsupported)?;
        let btf = Btf::parse(&raw, aya::Endianness::default()).map_err(|e| {
            AgentError::new(ExitCode::KernelUnsupported, format!("cannot parse BTF {}: {e}", config.btf.display()))
        })?;
        let every_switch = u32::from(config.kernel_stack_every_switch);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(globals::TARGET_TGID, &config.pid, true)
            .override_global(globals::TASK_PID_OFFSET, &pid_offset, true)
            .override_global(globals::TASK_TGID_OFFSET, &tgid_offset, true)
            .override_global(globals::TASK_EXIT_CODE_OFFSET, &exit_code_offset, true)
            .override_global(globals::KERNEL_STACK_EVERY_SWITCH, &every_switch, true)
            .map_max_entries(maps::OFFCPU_START, config.thread_slots);
        for gen in 0..2 {
            loader
                .map_max_entries(maps::STACKS[gen], config.stack_slots)
                .map_max_entries(maps::OVERFLOW_STACKS[gen], (config.stack_slots / OVERFLOW_SHARE).max(1))
                .map_max_entries(maps::CPU_COUNTS[gen], config.count_slots)
                .map_max_entries(maps::OFFCPU_TOTALS[gen], config.count_slots)
                .map_max_entries(maps::KERNEL_STACK_CACHE[gen], config.stack_slots);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| classify("load the eBPF object", &e))?;
        let maps = take_maps(&mut ebpf).map_err(|e| AgentError::new(ExitCode::Internal, e))?;
        let probes = Self {
            ebpf,
            btf: Some(btf),
            perf_links: Vec::new(),
            switch_link: None,
            exit_link: None,
            empty_switch_probe: config.empty_switch_probe,
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

    /// Attaches the on-CPU sampler to every online CPU and the sched_switch probe.
    pub fn attach(&mut self, frequency_hz: u64) -> Result<(), AgentError> {
        let cpus = aya::util::online_cpus().map_err(|(what, e)| {
            AgentError::new(ExitCode::KernelUnsupported, format!("cannot list CPUs ({what}): {e}"))
        })?;
        let program: &mut PerfEvent = program_mut(&mut self.ebpf, ON_CPU)?;
        program.load().map_err(|e| classify("load the on-CPU sampler", &e))?;
        for cpu in cpus {
            let link = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency_hz),
                    false,
                )
                .map_err(|e| classify(&format!("attach the cpu-clock sampler to CPU {cpu}"), &e))?;
            self.perf_links.push(link);
        }
        self.switch_link = Some(self.attach_tracepoint(SCHED_SWITCH, "sched_switch")?);
        self.exit_link = Some(self.attach_tracepoint(PROCESS_EXIT, "sched_process_exit")?);
        if self.empty_switch_probe {
            // Detached when the object is dropped, with the agent.
            self.attach_tracepoint(SCHED_SWITCH_EMPTY, "sched_switch")?;
        }
        self.btf = None;
        Ok(())
    }

    fn attach_tracepoint(&mut self, name: &str, tracepoint: &str) -> Result<BtfTracePointLinkId, AgentError> {
        let btf = self.btf.as_ref().ok_or_else(|| AgentError::new(ExitCode::Internal, "probes attached twice"))?;
        let program: &mut BtfTracePoint = program_mut(&mut self.ebpf, name)?;
        program.load(tracepoint, btf).map_err(|e| classify(&format!("load the {tracepoint} probe"), &e))?;
        program.attach().map_err(|e| classify(&format!("attach the {tracepoint} probe"), &e))
    }

    /// Detaches every probe; the maps stay readable.
    pub fn detach(&mut self) {
        if let Ok(program) = program_mut::<PerfEvent>(&mut self.ebpf, ON_CPU) {
            for link in std::mem::take(&mut self.perf_links) {
                let _ = program.detach(link);
            }
        }
        for (name, link) in [(SCHED_SWITCH, self.switch_link.take()), (PROCESS_EXIT, self.exit_link.take())] {
            if let (Some(link), Ok(program)) = (link, program_mut::<BtfTracePoint>(&mut self.ebpf, name)) {
                let _ = program.detach(link);
            }
        }
    }
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, AgentError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| AgentError::new(ExitCode::Internal, format!("program {name} missing from the eBPF object")))
}

fn take_maps(ebpf: &mut Ebpf) -> Result<ProbeMaps, String> {
    fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T, String> {
        let map = ebpf.take_map(name).ok_or_else(|| format!("map {name} missing from the eBPF object"))?;
        T::try_from(map).map_err(|_| format!("map {name} has an unexpected type"))
    }
    Ok(ProbeMaps {
        stacks: [take(ebpf, maps::STACKS[0])?, take(ebpf, maps::STACKS[1])?],
        overflow_stacks: [take(ebpf, maps::OVERFLOW_STACKS[0])?, take(ebpf, maps::OVERFLOW_STACKS[1])?],
        cpu_counts: [take(ebpf, maps::CPU_COUNTS[0])?, take(ebpf, maps::CPU_COUNTS[1])?],
        offcpu_totals: [take(ebpf, maps::OFFCPU_TOTALS[0])?, take(ebpf, maps::OFFCPU_TOTALS[1])?],
        kernel_stack_cache: [take(ebpf, maps::KERNEL_STACK_CACHE[0])?, take(ebpf, maps::KERNEL_STACK_CACHE[1])?],
        offcpu_start: take(ebpf, maps::OFFCPU_START)?,
        control: take(ebpf, maps::CONTROL)?,
        exit: take(ebpf, maps::EXIT)?,
        stats: take(ebpf, maps::STATS)?,
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// Turns a load or attach failure into an error with the right exit code: permission problems
/// are the operator's to fix, anything else means the kernel cannot run the probes.
fn classify(what: &str, error: &(dyn std::error::Error + 'static)) -> AgentError {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                return AgentError::new(
                    ExitCode::Permission,
                    format!("cannot {what}: permission denied; run as root or grant {}", privilege::NEEDED),
                );
            }
        }
        source = e.source();
    }
    let detail = error.to_string();
    let detail = detail.lines().next().unwrap_or_default();
    AgentError::new(ExitCode::KernelUnsupported, format!("cannot {what}: {detail}"))
}
