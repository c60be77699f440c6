//! Attaching the loaded programs to their events, and detaching them: a sampler on every
//! CPU, the page-fault event, and the switch and exit tracepoints.

use aya::programs::{
    perf_event::{PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent},
    tp_btf::BtfTracePointLinkId,
    BtfTracePoint, PerfEvent,
};

use super::{
    errors,
    helpers::{log_verified, program_mut},
    Probes, ON_CPU, ON_CPU_UNWIND, PAGE_FAULT, PAGE_FAULT_UNWIND, PROCESS_EXIT, SCHED_SWITCH, SCHED_WAKING,
    SWITCH_UNWIND, WAKING_UNWIND,
};
use crate::error::{AgentError, ExitCode};

impl Probes {
    pub(super) fn attach_sampler(&mut self, frequency_hz: u64) -> Result<(), AgentError> {
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
    pub(super) fn attach_faults(&mut self) -> Result<(), AgentError> {
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
    pub(super) fn fault_program(&self) -> &'static str {
        if self.cfi() {
            PAGE_FAULT_UNWIND
        } else {
            PAGE_FAULT
        }
    }

    /// Loads a perf event program and attaches it to `event` on every online CPU.
    pub(super) fn attach_per_cpu(
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

    pub(super) fn attach_switch(&mut self) -> Result<(), AgentError> {
        self.skipped(SCHED_SWITCH)?;
        let name = if self.cfi() { SWITCH_UNWIND } else { SCHED_SWITCH };
        self.switch_link = Some(self.attach_tracepoint(name, "sched_switch")?);
        Ok(())
    }

    /// The wake-up probe, if asked for (`--wakeups`).
    pub(super) fn attach_waking(&mut self) -> Result<(), AgentError> {
        if !self.wakeups {
            return Ok(());
        }
        self.skipped(SCHED_WAKING)?;
        let name = if self.cfi() { WAKING_UNWIND } else { SCHED_WAKING };
        self.waking_link = Some(self.attach_tracepoint(name, "sched_waking")?);
        Ok(())
    }

    pub(super) fn attach_exit(&mut self) -> Result<(), AgentError> {
        self.skipped(PROCESS_EXIT)?;
        self.exit_link = Some(self.attach_tracepoint(PROCESS_EXIT, "sched_process_exit")?);
        Ok(())
    }

    pub(super) fn attach_tracepoint(
        &mut self,
        name: &str,
        tracepoint: &str,
    ) -> Result<BtfTracePointLinkId, AgentError> {
        let btf = self.btf.as_ref().ok_or_else(|| AgentError::new(ExitCode::Internal, "probes attached twice"))?;
        let program: &mut BtfTracePoint = program_mut(&mut self.ebpf, name)?;
        program.load(tracepoint, btf).map_err(|e| errors::classify(&format!("load the {tracepoint} probe"), &e))?;
        log_verified(name, program.info());
        program.attach().map_err(|e| errors::classify(&format!("attach the {tracepoint} probe"), &e))
    }

    /// Detaches every probe; the maps stay readable.
    pub fn detach(&mut self) {
        let (on_cpu, switch, waking) = match self.cfi() {
            true => (ON_CPU_UNWIND, SWITCH_UNWIND, WAKING_UNWIND),
            false => (ON_CPU, SCHED_SWITCH, SCHED_WAKING),
        };
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
        let links = [
            (switch, self.switch_link.take()),
            (waking, self.waking_link.take()),
            (PROCESS_EXIT, self.exit_link.take()),
        ];
        for (name, link) in links {
            if let (Some(link), Ok(program)) = (link, program_mut::<BtfTracePoint>(&mut self.ebpf, name)) {
                let _ = program.detach(link);
            }
        }
    }
}
