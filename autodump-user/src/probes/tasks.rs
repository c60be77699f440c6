//! The `task_regs` iterator: each thread of one process with its state, user registers, system
//! call and kernel stack, read when the agent starts watching it (threads blocked since before
//! the probes were attached never switch, so the probes never take their stacks).

use std::io::Read;

use autodump_common::{maps, TaskRegs};
use aya::programs::Iter;

use super::{errors, helpers::program_mut, Probes};
use crate::error::AgentError;

const TASK_REGS: &str = "task_regs";

/// Largest output read from one run: a process with this many threads is read in part.
const MAX_THREADS: usize = 16384;

impl Probes {
    /// Loads the iterator (while the kernel's BTF is parsed): only where user stacks are walked
    /// with CFI, whose kernels have `bpf_task_pt_regs`.
    pub(super) fn load_task_iter(&mut self) -> Result<(), AgentError> {
        if !self.cfi() {
            return Ok(());
        }
        let btf = self.btf.as_ref().ok_or_else(|| AgentError::new(crate::error::ExitCode::Internal, "no BTF"))?;
        let program: &mut Iter = program_mut(&mut self.ebpf, TASK_REGS)?;
        program.load("task", btf).map_err(|e| errors::classify("load the task iterator", &e))?;
        self.task_iter = true;
        Ok(())
    }

    /// Each thread of `pid` as the kernel has it now; None where the iterator is not loaded.
    pub fn task_regs(&mut self, pid: u32) -> Option<Result<Vec<TaskRegs>, String>> {
        self.task_iter.then(|| self.run_task_iter(pid))
    }

    fn run_task_iter(&mut self, pid: u32) -> Result<Vec<TaskRegs>, String> {
        let set = |ebpf: &mut aya::Ebpf, value: u32| -> Result<(), String> {
            let map = ebpf.map_mut(maps::TASK_ITER_TARGET).ok_or("no task iterator map")?;
            let mut target: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map).map_err(|e| e.to_string())?;
            target.set(0, value, 0).map_err(|e| e.to_string())
        };
        set(&mut self.ebpf, pid)?;
        let program: &mut Iter = program_mut(&mut self.ebpf, TASK_REGS).map_err(|e| e.message)?;
        let link = program.attach().map_err(|e| e.to_string())?;
        let link = program.take_link(link).map_err(|e| e.to_string())?;
        let mut file = link.into_file().map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        let limit = (MAX_THREADS * size_of::<TaskRegs>()) as u64;
        let read = Read::by_ref(&mut file).take(limit).read_to_end(&mut bytes).map_err(|e| e.to_string());
        set(&mut self.ebpf, 0)?;
        read?;
        Ok(bytes
            .chunks_exact(size_of::<TaskRegs>())
            // SAFETY: TaskRegs is plain data, read unaligned from the iterator's output.
            .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<TaskRegs>()) })
            .collect())
    }
}
