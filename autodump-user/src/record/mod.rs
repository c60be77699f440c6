//! Recording: symbolize what each drain brings and add it to the on-CPU and off-CPU profiles.

pub mod profile;

use std::{collections::BTreeMap, sync::Arc};

use profile::{pseudo, Profile, ProfileKind, SampleValue, StackPart};

use crate::{
    collect::{
        drain::{Drained, RawSample, RawStack},
        process::Target,
    },
    symbolize::{lookup_addresses, Location, Symbolizer},
};

pub struct Recorder {
    pub cpu: Profile,
    pub offcpu: Profile,
    /// Every thread seen, by tid: its latest name.
    pub threads: BTreeMap<u32, Arc<str>>,
    symbolizer: Symbolizer,
    target: Target,
    cpu_period_ns: u64,
}

impl Recorder {
    pub fn new(target: Target, frequency_hz: u64) -> Self {
        Self {
            cpu: Profile::new(ProfileKind::Cpu),
            offcpu: Profile::new(ProfileKind::OffCpu),
            threads: BTreeMap::new(),
            symbolizer: Symbolizer::new(target.pid),
            target,
            cpu_period_ns: 1_000_000_000 / frequency_hz,
        }
    }

    /// Reads thread names and memory mappings while the target lives. Call before each drain,
    /// so that threads and libraries that appear and vanish within an interval are still named.
    pub fn observe_target(&mut self) {
        for (tid, name) in self.target.thread_names() {
            if self.threads.get(&tid).map(|n| &**n) != Some(name.as_str()) {
                self.threads.insert(tid, name.into());
            }
        }
        self.symbolizer.refresh_maps();
    }

    pub fn add(&mut self, drained: &Drained) {
        for sample in &drained.cpu {
            let value = SampleValue { count: sample.count, nanos: sample.count * self.cpu_period_ns };
            self.add_sample(ProfileKind::Cpu, sample, value);
        }
        self.add_off_cpu(&drained.offcpu);
    }

    pub fn add_off_cpu(&mut self, samples: &[RawSample]) {
        for sample in samples {
            let value = SampleValue { count: sample.count, nanos: sample.off_cpu_ns };
            self.add_sample(ProfileKind::OffCpu, sample, value);
        }
    }

    fn add_sample(&mut self, kind: ProfileKind, sample: &RawSample, value: SampleValue) {
        let thread = self.thread_name(sample.tid);
        let user = match &sample.user {
            RawStack::Frames(ips) => Some(self.symbolizer.user(&lookup_addresses(ips))),
            RawStack::Lost => None,
        };
        let kernel = match &sample.kernel {
            RawStack::Frames(ips) => Some(without_probe_frames(self.symbolizer.kernel(&lookup_addresses(ips)))),
            RawStack::Lost => None,
        };
        let mut parts = Vec::with_capacity(3);
        if sample.runnable {
            parts.push(StackPart::Pseudo(pseudo::RUNNABLE));
        }
        parts.push(kernel.as_deref().map_or(StackPart::Pseudo(pseudo::KERNEL_STACK_LOST), StackPart::Kernel));
        parts.push(user.as_deref().map_or(StackPart::Pseudo(pseudo::USER_STACK_LOST), StackPart::User));
        let profile = match kind {
            ProfileKind::Cpu => &mut self.cpu,
            ProfileKind::OffCpu => &mut self.offcpu,
        };
        profile.add(thread, &parts, value);
    }

    /// The thread's name; a thread that lived and died between two reads of /proc is named
    /// by its tid.
    fn thread_name(&mut self, tid: u32) -> Arc<str> {
        self.threads.entry(tid).or_insert_with(|| format!("tid-{tid}").into()).clone()
    }

    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// Drops the innermost kernel frames that belong to the probe itself (the BPF program and the
/// tracepoint trampoline that ran it): they are autodump's, not the workload's.
fn without_probe_frames(mut locations: Vec<Arc<Location>>) -> Vec<Arc<Location>> {
    let is_probe = |l: &Arc<Location>| {
        l.frames
            .iter()
            .any(|f| ["bpf_prog_", "bpf_trace_run", "__bpf_trace_"].iter().any(|p| f.function.starts_with(p)))
    };
    let probe_frames = locations.iter().take_while(|l| is_probe(l)).count();
    locations.drain(..probe_frames);
    locations
}
